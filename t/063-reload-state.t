# What running workers see changes only when a configuration is committed, and per-worker
# connection counts survive reloads: scripted, because the block format cannot reload nginx in
# the middle of a block or hold a backend connection open across reloads.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use IO::Socket::INET;
use Time::HiRes qw(sleep time);
use Test::LB::Server;

my $s = Test::LB::Server->new(name => 'reloadstate', workers => 1);
my ($a, $b) = map { '127.0.0.1:' . $s->port($_) } 2, 3;

my $backends = <<'CONF';
    server { listen 127.0.0.1:__PORT2__; location / { return 200 "a"; } }
    server {
        listen 127.0.0.1:__PORT3__;
        location /health { if (-f __DIR__/html/b_down) { return 500; } return 200; }
        location / { return 200 "b"; }
    }
    server { listen 127.0.0.1:__PORT5__; location / { return 200 "backup"; } }
CONF

sub front {
    my (%o) = @_;
    my $check = $o{check} // 'lb_check type=http uri=/health interval=1s rise=1 fall=1;';
    my $b_line = exists $o{b} ? $o{b} : 'server 127.0.0.1:__PORT3__;';
    my $extra = $o{extra} // '';
    return <<"CONF" . $backends;
    upstream backend {
        lb_upstream;
        $check
        server 127.0.0.1:__PORT2__;
        $b_line
    }
    upstream held {
        lb_upstream;
        server 127.0.0.1:__PORT4__ max_conns=1;
        server 127.0.0.1:__PORT5__ backup;
    }
    server {
        listen 127.0.0.1:__PORT1__;
        location / { proxy_pass http://backend; }
        location /held { proxy_pass http://held; proxy_read_timeout 2s; proxy_next_upstream off; }
        location /status { lb_status; }
    }
$extra
CONF
}


# A reload that writes the configuration, signals, and returns once a new worker runs,
# without waiting for old ones (they may be finishing a held request).
sub reload_keep_old {
    my ($conf) = @_;
    my %old = map { $_ => 1 } $s->worker_pids;
    $s->_write_conf($conf);
    kill 'HUP', $s->master_pid;
    $s->wait_for(sub { grep { !$old{$_} } $s->worker_pids }, 10, 'a new worker after reload');
    sleep 0.2;
}

my $flag = $s->dir . '/html/b_down';
sub b_down { open my $fh, '>', $flag or die $!; close $fh; }
sub b_up   { unlink $flag; }

$s->start(front());
ok($s->wait_state('backend', $b, 'up', 3), 'b up');

# 1. A reload that fails after nginx mapped the zone (its new listen port is busy) changes
# nothing: b stays unhealthy although the new configuration has no checks, which would have
# brought it up.
b_down();
ok($s->wait_state('backend', $b, 'unhealthy', 3), 'b unhealthy after a failed check');
my $busy = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $s->port(6),
                                  Proto => 'tcp', ReuseAddr => 1, Listen => 1)
    or die "cannot hold port: $!";
my $log_before = length $s->error_log;
$s->_write_conf(front(check => '', extra => "    server { listen 127.0.0.1:__PORT6__; }"));
kill 'HUP', $s->master_pid;
# nginx retries a busy port for a few seconds: requests flow all that time.
my %during;
my $until = time + 10;
while (time < $until) {
    my ($code, $body) = $s->get('/');
    $during{$code == 200 ? $body : "status $code"}++;
    last if substr($s->error_log, $log_before) =~ /bind\(\) to 127\.0\.0\.1:\d+ failed/
         && substr($s->error_log, $log_before) =~ /\[emerg\]/;
    sleep 0.01;
}
like(substr($s->error_log, $log_before), qr/bind\(\) to 127\.0\.0\.1:\d+ failed/,
     'the reload failed on the busy port');
ok(!$during{b} && $during{a}, 'while and after the reload failed, no request reaches the unhealthy peer')
    or diag(explain \%during);
is($s->peers('backend')->{$b}{state}, 'unhealthy', 'status still shows b unhealthy');
close $busy;

# 2. A peer that was not probed in the previous configuration starts in default= state, not
# in the health it had before: taken out with `down` (its checks stop, and it fails now),
# then brought back with default=down, it must get nothing until a check passes.
my $check_slow = 'lb_check type=http uri=/health interval=1s rise=1 fall=3 default=down;';
reload_keep_old(front(check => $check_slow));
b_up();
ok($s->wait_state('backend', $b, 'up', 4), 'b up again');
reload_keep_old(front(check => $check_slow, b => 'server 127.0.0.1:__PORT3__ down;'));
b_down();
reload_keep_old(front(check => $check_slow));
my $seen = $s->bodies(10);
ok(!$seen->{b}, 'b, back from `down` with failing checks, gets no request at once')
    or diag(explain $seen);
b_up();
ok($s->wait_state('backend', $b, 'up', 4), 'b up after a passed check');
# The same for a peer removed by one reload and added again by the next.
reload_keep_old(front(check => $check_slow, b => ''));
b_down();
reload_keep_old(front(check => $check_slow));
$seen = $s->bodies(10);
ok(!$seen->{b}, 'b, removed and added again with failing checks, gets no request at once')
    or diag(explain $seen);
b_up();

# 3. A connection held open across two reloads still counts for max_conns: the new workers
# must not reset the counter row of the old worker that carries it.
my $hold = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $s->port(4),
                                 Proto => 'tcp', ReuseAddr => 1, Listen => 16)
    or die "cannot listen: $!";
my $client = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $s->port(1),
                                   Proto => 'tcp') or die $!;
print $client "GET /held/long HTTP/1.0\r\nHost: localhost\r\n\r\n";
my $peer = $hold->accept or die "nginx did not connect to the held backend\n";
my ($code, $body) = $s->get('/held/x');
is("$code $body", '200 backup', 'the held peer is at max_conns: the backup answers');
reload_keep_old(front());
reload_keep_old(front());
($code, $body) = $s->get('/held/x');
is("$code $body", '200 backup', 'after two reloads the held connection still counts');
my ($held) = grep { $_->{address} eq '127.0.0.1:' . $s->port(4) }
             @{ (grep { $_->{name} eq 'held' } @{ $s->status->{upstreams} })[0]{peers} };
is($held->{active}, 1, 'status counts the held connection');
close $peer; close $client; close $hold;

$s->stop unless $ENV{KEEP}; $s->cleanup unless $ENV{KEEP};
done_testing;
