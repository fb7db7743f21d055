# Kept probe connections are bounded: a worker keeps at most a quarter of its
# worker_connections idle for probes; the other probes connect anew each time and still pass.
# Scripted (the block format cannot set worker_connections).
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Time::HiRes qw(sleep);
use Test::LB::Server;

# One worker with 48 connections: at most 12 kept probe connections. 20 upstreams check the
# same backend (each upstream's peer is probed on its own), which logs, per request, its
# connection and the request's number on it.
my $s = Test::LB::Server->new(name => 'probe_keep_limit', workers => 1, worker_connections => 48);
my $conf = "    log_format conn '\$connection \$connection_requests';\n";
for my $i (1 .. 20) {
    $conf .= <<"CONF";
    upstream u$i {
        lb_upstream;
        lb_check type=http interval=100ms fall=1;
        server 127.0.0.1:__PORT2__;
    }
CONF
}
$conf .= <<'CONF';
    server { listen 127.0.0.1:__PORT2__; access_log logs/probes.log conn; return 200; }
    server {
        listen 127.0.0.1:__PORT1__;
        location /status { lb_status; }
    }
CONF
$s->start($conf);
sleep 2;

# Connections that carried more than one probe were kept between probes.
my (%requests, $lines);
open my $fh, '<', $s->dir . '/logs/probes.log' or die $!;
while (<$fh>) {
    my ($conn, $n) = split;
    $lines++;
    $requests{$conn} = $n if !$requests{$conn} || $n > $requests{$conn};
}
close $fh;
my $kept = grep { $_ > 1 } values %requests;
my $fresh = grep { $_ == 1 } values %requests;
cmp_ok($lines, '>=', 20 * 10, "the 20 peers were probed about every 100 ms ($lines probes)");
cmp_ok($kept, '>=', 6, "some probe connections were kept ($kept)");
cmp_ok($kept, '<=', 12, "no more than a quarter of worker_connections were kept ($kept)");
cmp_ok($fresh, '>=', 20, "the other probes used a new connection each ($fresh connections)");

my $peers = 0;
for my $u (1 .. 20) {
    my $p = $s->peers("u$u")->{ '127.0.0.1:' . $s->port(2) };
    $peers++ if $p->{state} eq 'up' && $p->{health_checks}{fails} == 0;
}
is($peers, 20, 'every peer is up, no probe failed');
unlike($s->error_log, qr/\[(?:alert|crit|emerg)\]|worker_connections are not enough|is down after/,
       'no alert, no shortage of connections, no peer down');

$s->stop unless $ENV{KEEP}; $s->cleanup unless $ENV{KEEP};
done_testing;
