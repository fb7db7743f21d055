# Reload, killed workers and health state over time: scripted, because the Test::Nginx block
# format cannot reload nginx or change a backend in the middle of a block.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Time::HiRes qw(sleep time);
use Test::LB::Server;

my $s = Test::LB::Server->new(name => 'reload', workers => 2);
my ($a, $b, $c) = map { '127.0.0.1:' . $s->port($_) } 2, 3, 4;

# Backends: a and b answer "a"/"b"; b's health check fails while html/b_down exists; c is a
# peer added by a reload.
my $backends = <<'CONF';
    server {
        listen 127.0.0.1:__PORT2__;
        location / { return 200 "a"; }
    }
    server {
        listen 127.0.0.1:__PORT3__;
        location /health { if (-f __DIR__/html/b_down) { return 500; } return 200; }
        location / { return 200 "b"; }
    }
    server {
        listen 127.0.0.1:__PORT4__;
        access_log logs/c.log;
        location / { return 200 "c"; }
    }
CONF

sub front {
    my (%o) = @_;
    my $extra = $o{extra} // '';
    my $wb = $o{weight_b} // 1;
    return <<"CONF" . $backends;
    upstream backend {
        lb_upstream;
        lb_check type=http interval=200ms timeout=200ms rise=2 fall=2 uri=/health;
        server 127.0.0.1:__PORT2__;
        server 127.0.0.1:__PORT3__ weight=$wb;
$extra
    }
    server {
        listen 127.0.0.1:__PORT1__;
        location / { proxy_pass http://backend; }
        location /status { lb_status; }
    }
CONF
}


$s->start(front());
ok($s->wait_state('backend', $a, 'up', 3) && $s->wait_state('backend', $b, 'up', 3), 'both peers up after their first checks');

# Traffic, then counters across a reload that changes b's weight.
my $seen = $s->bodies(20);
is($seen->{a} + $seen->{b}, 20, '20 requests answered');
my $before = $s->peers('backend');
is($before->{$a}{requests} + $before->{$b}{requests}, 20, 'status counts 20 requests');

$s->reload(front(weight_b => 3));
my $after = $s->peers('backend');
is($after->{$a}{requests}, $before->{$a}{requests}, 'a keeps its request counter across reload');
is($after->{$b}{requests}, $before->{$b}{requests}, 'b keeps its request counter across reload');
is($after->{$b}{weight}, 3, 'the new weight is in effect');
$s->bodies(8);
$after = $s->peers('backend');
is($after->{$a}{requests} + $after->{$b}{requests}, 28, 'counters keep counting after reload');
sleep 0.6;    # three intervals
cmp_ok($s->peers('backend')->{$a}{health_checks}{checks}, '>=',
       $before->{$a}{health_checks}{checks} + 2, 'health checks go on after reload');

# b unhealthy, with its reason.
open my $fh, '>', $s->dir . '/html/b_down' or die $!;
close $fh;
ok($s->wait_state('backend', $b, 'unhealthy', 3), 'b unhealthy after fall failed checks');
is($s->peers('backend')->{$b}{health_checks}{last_reason}, 'HTTP 500', 'reason HTTP 500');
$seen = $s->bodies(10);
is($seen->{a}, 10, 'traffic avoids the unhealthy peer');
like($s->error_log, qr/lb: peer \Q$b\E in upstream "backend" is down after 2 failed check\(s\): HTTP 500/,
     'the change is logged with the reason');

# A reload must not bring the unhealthy peer back, not even for a moment: the new workers
# see the shared health at once. A peer added by the reload (c, default=up) gets traffic.
$s->reload(front(extra => "        server 127.0.0.1:__PORT4__;"));
$seen = $s->bodies(12);
ok(!$seen->{b}, 'no request reaches the unhealthy peer right after the reload')
    or diag(explain $seen);
ok($seen->{c}, 'the added peer gets traffic');
is($s->peers('backend')->{$b}{state}, 'unhealthy', 'status still shows b unhealthy');

# Healthy again: rise passed checks, downtime accounted.
unlink $s->dir . '/html/b_down';
ok($s->wait_state('backend', $b, 'up', 3), 'b up again after rise passed checks');
my $hb = $s->peers('backend')->{$b}{health_checks};
is($hb->{last_reason}, 'passed', 'last_reason passed');
is($hb->{unhealthy}, 1, 'made unhealthy once');
cmp_ok($hb->{downtime}, '>', 0, 'downtime counted');
ok($hb->{last_change}, 'last_change set');
like($s->error_log, qr/lb: peer \Q$b\E in upstream "backend" is up after 2 passed check\(s\)/,
     'coming back is logged');

# kill -9 of a worker: the master respawns it; probes and the status page keep working.
my @workers = $s->worker_pids;
is(scalar @workers, 2, 'two workers');
my $checks = $s->peers('backend')->{$a}{health_checks}{checks};
kill 'KILL', $workers[0];
$s->wait_for(sub { my @w = $s->worker_pids; @w == 2 && !grep { $_ == $workers[0] } @w }, 5,
             'the master to respawn the worker');
sleep 0.6;   # three intervals
my $now = $s->peers('backend')->{$a}{health_checks}{checks};
cmp_ok($now, '>=', $checks + 2, "probes resume after kill -9 ($checks -> $now)");
$seen = $s->bodies(6);
is(($seen->{a} // 0) + ($seen->{b} // 0) + ($seen->{c} // 0), 6, 'traffic flows after kill -9');

# Workers that exited after the reloads closed their kept probe connections (nginx names any
# socket an exiting worker leaves open).
unlike($s->error_log, qr/open socket/, 'no socket left open by an exiting worker');

$s->stop unless $ENV{KEEP}; $s->cleanup unless $ENV{KEEP};
done_testing;
