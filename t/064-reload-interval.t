# A reload that shortens lb_check's interval takes effect at once: the next probe is not due
# at the time the old, longer interval set. A reload that lengthens it leaves the nearer due
# time as it is. Two workers: still one probe per peer per interval over both. Scripted: the
# block format cannot reload nginx in the middle of a block.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Time::HiRes qw(sleep time);
use Test::LB::Server;

my $s = Test::LB::Server->new(name => 'reloadinterval', workers => 2);

# The backend logs each probe's time (ms) in probes.log.
sub conf {
    my ($interval) = @_;
    return <<"CONF";
    log_format probe '\$msec';
    upstream backend {
        lb_upstream;
        lb_check type=http uri=/health interval=$interval timeout=100ms jitter=0;
        server 127.0.0.1:__PORT2__;
    }
    server {
        listen 127.0.0.1:__PORT2__;
        location /health { access_log __DIR__/logs/probes.log probe; return 200; }
    }
    server {
        listen 127.0.0.1:__PORT1__;
        location / { proxy_pass http://backend; }
    }
CONF
}

sub probes {
    my $text = $s->slurp('logs/probes.log') // '';
    return grep { /^\d+\.\d+$/ } split /\n/, $text;
}

# Every probe at or after $t (seconds since the epoch).
sub probes_since {
    my ($t) = @_;
    return scalar grep { $_ >= $t } probes();
}

$s->start(conf('4s'));
ok($s->wait_for(sub { probes() >= 1 }, 5, 'the first probe'), 'the first probe at 4s');
# The next one is due 4 s after it: the reload comes right after the first.
$s->checked_reload('interval 4s -> 200ms', conf('200ms'));
my $t0 = time;
sleep 1.6;
my $n = probes_since($t0);
ok($n >= 5 && $n <= 10,
   "interval 4s -> 200ms: $n probes in the 1.6 s after the reload (want about 8, not 0)")
    or diag(join ' ', probes());

# Back to a long interval: at most the probe already due at 200 ms comes.
$s->checked_reload('interval 200ms -> 30s', conf('30s'));
my $t1 = time;
sleep 1.2;
$n = probes_since($t1);
ok($n <= 1, "interval 200ms -> 30s: $n probe(s) in the 1.2 s after the reload (want 0 or 1)")
    or diag(join ' ', probes());

$s->stop;
unlike($s->error_log, qr/\[(alert|crit|emerg)\]/, 'no alert, crit or emerg in the error log');
$s->cleanup;
done_testing();
