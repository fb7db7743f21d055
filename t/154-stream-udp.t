# UDP through a stream upstream with lb_upstream and a udp check, two workers: datagrams are
# balanced by weight over the peers that pass, a closed UDP port is kept out, sessions end
# (active back to 0), and the checks go on after a worker is killed (-9).
# Scripted: the Test::Nginx block format has no UDP client.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use IO::Socket::INET;
use IO::Select;
use Time::HiRes qw(sleep);
use Test::LB::Server;

my $s = Test::LB::Server->new(name => 'stream_udp', workers => 2, stream => <<'STREAM');
    upstream dns {
        lb_upstream;
        lb_check type=udp send=ping expect=~"^[ab]$" interval=200ms timeout=200ms rise=1 fall=1;
        server 127.0.0.1:__PORT3__ weight=2;
        server 127.0.0.1:__PORT4__;
        server 127.0.0.1:__PORT5__;
    }
    server { listen 127.0.0.1:__PORT2__ udp; proxy_pass dns; proxy_responses 1; proxy_timeout 2s; }
    server { listen 127.0.0.1:__PORT3__ udp; return "a"; }
    server { listen 127.0.0.1:__PORT4__ udp; return "b"; }
STREAM
$s->start(<<'CONF');
    server { listen 127.0.0.1:__PORT1__; location /status { lb_status; } }
CONF

my ($a, $b, $dead) = map { '127.0.0.1:' . $s->port($_) } 3 .. 5;
ok($s->wait_state('dns', $dead, 'unhealthy', 5), 'the closed UDP port is down');
like($s->error_log, qr/lb: peer \Q$dead\E in stream upstream "dns" is down after 1 failed check\(s\): port unreachable/,
     'logged once, with the reason');

sub ask {
    my $c = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $s->port(2), Proto => 'udp')
        or die "udp: $!";
    $c->send('q');
    my $got = '';
    $c->recv($got, 100) if IO::Select->new($c)->can_read(3);
    return $got;
}

my %n;
$n{ ask() }++ for 1 .. 30;
is($n{''} // 0, 0, 'every datagram got an answer');
is(($n{a} // 0) + ($n{b} // 0), 30, 'from the two peers that pass');
# Weights 2:1, per worker's smooth order: each worker alone gives a's twice b's (+-1 per worker).
ok(abs(($n{a} // 0) - 20) <= 2, "weights hold: a answered $n{a}, b " . ($n{b} // 0));

ok($s->wait_for(sub {
    my $p = $s->peers('dns');
    !grep { $p->{$_}{active} } keys %$p;
}, 5, 'sessions to end'), 'UDP sessions end: no active connection left');

my $before = $s->peers('dns')->{$a}{health_checks}{checks};
my @w = $s->worker_pids;
kill 'KILL', $w[0];
sleep 1.5;
my $p = $s->peers('dns');
cmp_ok($p->{$a}{health_checks}{checks}, '>=', $before + 4, 'checks go on after a worker is killed');
is($p->{$dead}{state}, 'unhealthy', 'and the dead peer stays down');
like(ask(), qr/\A[ab]\z/, 'traffic still flows');

$s->stop;
# Its directory stays for a look when something failed.
$s->cleanup if Test::More->builder->is_passing;
done_testing;
