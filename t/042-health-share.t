# lb_check with many peers and several workers: each worker watches its share of the peers on
# one timer (`health::due`), and still every peer is probed once per interval in total; a
# worker killed with SIGKILL is replaced by the master, and its peers go on being probed; a
# reload to fewer workers hands every peer to one of them; the peers of a stalled worker
# (SIGSTOP) are taken over by the others. Scripted (Test::LB::Server).
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use POSIX ();
use Time::HiRes qw(sleep time);
use Test::LB::Server;

my $N = 24;
my $s = Test::LB::Server->new(name => 'health-share', workers => 3);
my @P = map { "127.0.0.$_:" . $s->port(2) } 1 .. $N;
my $servers = join ' ', map { "server $_;" } @P;
my $listens = join ' ', map { "listen $_;" } @P;

sub conf {
    return <<"CONF";
    upstream u {
        lb_upstream;
        lb_check type=tcp interval=300ms;
        $servers
    }
    upstream v {
        lb_upstream;
        lb_check type=tcp interval=100ms jitter=30ms;
        server $P[0]; server $P[1];
    }
    server {
        $listens
        location / { return 200 ok; }
    }
    server {
        listen 127.0.0.1:__PORT1__;
        location / { proxy_pass http://u; }
        location /status { lb_status; }
    }
CONF
}

$s->start(conf());

# { address => checks } now.
sub checks {
    my $p = $s->peers('u');
    return { map { $_ => $p->{$_}{health_checks}{checks} } keys %$p };
}

# Probes per peer over $seconds: [min, max] over all peers.
sub probed_over {
    my ($seconds) = @_;
    my $before = checks();
    my $t0 = time;
    sleep $seconds;
    my $after = checks();
    my $took = time - $t0;
    my @d = map { $after->{$_} - $before->{$_} } @P;
    my ($min, $max) = (sort { $a <=> $b } @d)[0, -1];
    return ($min, $max, $took);
}

# CPU seconds (user + system) the workers used so far.
sub cpu {
    my $t = 0;
    for my $pid ($s->worker_pids) {
        open my $fh, '<', "/proc/$pid/stat" or next;
        my @f = split ' ', (<$fh> =~ s/^.*\) //r);
        $t += $f[11] + $f[12];
    }
    return $t / POSIX::sysconf(POSIX::_SC_CLK_TCK());
}

# Times the workers slept and woke up so far (voluntary context switches).
sub wakeups {
    my $n = 0;
    for my $pid ($s->worker_pids) {
        open my $fh, '<', "/proc/$pid/status" or next;
        for (<$fh>) { $n += $1 if /^voluntary_ctxt_switches:\s+(\d+)/ }
    }
    return $n;
}

subtest 'three workers: every peer once per interval in total' => sub {
    ok($s->wait_state('u', $P[-1], 'up', 5), 'the peers come up');
    my ($cpu, $woke) = (cpu(), wakeups());
    my ($min, $max, $took) = probed_over(3);
    ($cpu, $woke) = (cpu() - $cpu, wakeups() - $woke);
    my $expected = $took / 0.3;
    cmp_ok($min, '>=', $expected - 3, "no peer is left out (fewest probes: $min, expected ~$expected)");
    cmp_ok($max, '<=', $expected + 3, "no peer is probed by several workers (most: $max)");
    # 100 probes a second cost next to nothing; a timer that spins costs a core.
    cmp_ok($cpu, '<', 0.3 * $took, sprintf('the workers idle between probes (%.2f s of CPU in %.1f s)', $cpu, $took));
    # About 100 probes a second (u: 24 peers every 300 ms, v: 2 every 100 ms), each a wake-up
    # or two; a clock that wakes up again and again for peers not yet due doubles that.
    cmp_ok($woke / $took, '<', 350, sprintf('the workers wake up for probes only (%.0f times a second)', $woke / $took));
};

subtest 'a killed worker is replaced and its peers are probed again' => sub {
    my @before = $s->worker_pids;
    is(scalar @before, 3, 'three workers');
    kill 'KILL', $before[1];
    my $until = time + 5;
    my @now;
    while (time < $until) {
        @now = $s->worker_pids;
        last if @now == 3 && !grep { $_ == $before[1] } @now;
        sleep 0.1;
    }
    ok(@now == 3 && !grep({ $_ == $before[1] } @now), 'the master started a new worker');
    sleep 0.5;
    my ($min, $max, $took) = probed_over(3);
    my $expected = $took / 0.3;
    cmp_ok($min, '>=', $expected - 3, "every peer is probed (fewest probes: $min, expected ~$expected)");
    cmp_ok($max, '<=', $expected + 3, "and once per interval (most: $max)");
};

subtest 'a reload to two workers: every peer still probed once per interval' => sub {
    $s->{workers} = 2;    # worker_processes of the next configuration
    $s->reload(conf());
    my @w = $s->worker_pids;
    is(scalar @w, 2, 'two workers');
    sleep 0.5;
    my ($min, $max, $took) = probed_over(3);
    my $expected = $took / 0.3;
    cmp_ok($min, '>=', $expected - 3, "fewest probes: $min, expected ~$expected");
    cmp_ok($max, '<=', $expected + 3, "most: $max");
};

subtest 'a stalled worker: the others take its peers over' => sub {
    my @w = $s->worker_pids;
    kill 'STOP', $w[0];
    # Overdue after two intervals and the grace (0.85 s), noticed by the next sweep (2 s).
    sleep 3.5;
    my ($min, $max, $took) = probed_over(3);
    kill 'CONT', $w[0];
    my $expected = $took / 0.3;
    cmp_ok($min, '>=', $expected - 3, "every peer is probed (fewest probes: $min, expected ~$expected)");
    cmp_ok($max, '<=', $expected + 3, "and once per interval (most: $max)");
    like($s->error_log, qr/lb: peer 127\.0\.0\.\d+:\d+ in upstream "u" was due for a check \d+ ms ago: this worker takes its checks over/,
         'the take-over is logged');
};

my @alerts = grep { !/exited on signal 9/ } $s->error_log =~ /^.*\[(?:alert|crit|emerg)\].*$/mg;
is(scalar @alerts, 0, 'no alert in the error log but the killed worker') or diag(explain \@alerts);
# Its directory stays for a look when something failed.
$s->cleanup if Test::More->builder->is_passing;
done_testing;
