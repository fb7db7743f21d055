# least_conn prefers an idle peer over a busy one, over all workers: while one request holds
# peer a for two seconds, every other request goes to b (round_robin keeps sending to a). And
# a retry never goes back to the peer the request tried, even the least loaded one.
# Scripted: the Test::Nginx block format cannot keep one request open while sending others.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Time::HiRes qw(sleep);
use Test::LB::Server;

my $s = Test::LB::Server->new(name => 'least_conn', workers => 2);
open my $fh, '>', $s->dir . '/html/big.txt' or die $!;
print $fh 's' x 3000;
close $fh;

$s->start(<<'CONF');
    upstream lc { lb_upstream least_conn; server 127.0.0.1:__PORT2__; server 127.0.0.1:__PORT3__; }
    upstream rr { lb_upstream; server 127.0.0.1:__PORT2__; server 127.0.0.1:__PORT3__; }
    # Nothing listens on port 4: it refuses, and max_fails=0 keeps it in the rotation.
    upstream lcr {
        lb_upstream least_conn;
        server 127.0.0.1:__PORT4__ max_fails=0;
        server 127.0.0.1:__PORT2__;
    }
    server {
        listen 127.0.0.1:__PORT2__;
        root __DIR__/html;
        location /slow { limit_rate 1000; try_files /big.txt =404; }
        location / { return 200 "a"; }
    }
    server { listen 127.0.0.1:__PORT3__; location / { return 200 "b"; } }
    server {
        listen 127.0.0.1:__PORT1__;
        location /lc/ { proxy_pass http://lc/; }
        location /rr/ { proxy_pass http://rr/; }
        location /lcr/ { proxy_pass http://lcr/; }
        location /status { lb_status; }
    }
CONF

# Holds peer a busy (about two seconds) from a child process.
sub busy {
    my ($prefix) = @_;
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        $s->get("/$prefix/slow");
        POSIX::_exit(0);
    }
    $s->wait_for(sub {
        my ($u) = grep { $_->{name} eq $prefix } @{ $s->status->{upstreams} };
        grep { $_->{active} == 1 } @{ $u->{peers} };
    }, 3, 'the slow request to be in flight');
    return $pid;
}

# Peer a is chosen first by both methods on a fresh upstream (ties go to the first peer).
my $pid = busy('lc');
my %lc;
$lc{ ($s->get('/lc/x'))[1] }++ for 1 .. 6;
is_deeply(\%lc, { b => 6 }, 'least_conn: every request goes to the idle peer while a is busy');
my $st = $s->peers('lc');
is($st->{'127.0.0.1:' . $s->port(2)}{active}, 1, 'status shows the busy connection');
waitpid $pid, 0;

$pid = busy('rr');
my %rr;
$rr{ ($s->get('/rr/x'))[1] }++ for 1 .. 6;
ok($rr{a} && $rr{b}, "round_robin keeps sending to the busy peer (a: $rr{a}, b: $rr{b})");
waitpid $pid, 0;

# Once a is idle again, least_conn uses both.
my %after;
$after{ ($s->get('/lc/x'))[1] }++ for 1 .. 6;
ok($after{a} && $after{b}, "least_conn spreads again when both are idle (a: $after{a}, b: $after{b})");

# Port 4 refuses with no connection in progress, a is busy: every request tries port 4 first
# (the least loaded) and its retry must go to a, the one peer it has not tried.
$pid = busy('lcr');
my %lcr;
for (1 .. 6) {
    my ($code, $body) = $s->get('/lcr/x');
    $lcr{"$code $body"}++;
}
is_deeply(\%lcr, { '200 a' => 6 },
          'least_conn: a retry goes to the peer not tried yet, not back to the least loaded');
waitpid $pid, 0;

$s->cleanup;
done_testing;
