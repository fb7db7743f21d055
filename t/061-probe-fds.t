# Probes leak nothing: after thousands of probes against good, refusing, hanging, resetting,
# garbage-sending and non-TLS peers, every worker has as many descriptors open as before.
# Scripted (the block format cannot watch a worker's descriptors over time).
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Time::HiRes qw(sleep);
use Test::LB::Server;
use Test::LB::Misbehave qw(start_misbehave);

my %bad = start_misbehave(HANG => 'hang', RESET => 'reset', GARBAGE => 'garbage',
                          ENDLESS => 'endless', BADTLS => 'badtls');
my $s = Test::LB::Server->new(name => 'probe_fds', workers => 2);

# Each upstream: one good peer and one misbehaving one; 20 ms interval.
my $conf = '';
for my $mode (qw(HANG RESET GARBAGE ENDLESS BADTLS REFUSED)) {
    my $port = $mode eq 'REFUSED' ? '__PORT9__' : $bad{$mode};
    my $type = $mode eq 'BADTLS' ? 'https' : 'http';
    my $good = $mode eq 'BADTLS' ? '__PORT3__' : '__PORT2__';
    $conf .= <<"CONF";
    upstream u_$mode {
        lb_upstream;
        lb_check type=$type interval=20ms timeout=15ms rise=1 fall=1;
        server 127.0.0.1:$good;
        server 127.0.0.1:$port;
    }
CONF
}
$conf .= <<'CONF';
    server { listen 127.0.0.1:__PORT2__; access_log off; return 200 "ok"; }
    server { listen 127.0.0.1:__PORT3__ ssl; ssl_certificate __CERT__.crt;
             ssl_certificate_key __CERT__.key; access_log off; return 200 "ok"; }
    server {
        listen 127.0.0.1:__PORT1__;
        location /status { lb_status; }
    }
CONF
system('t/gen-certs.sh >/dev/null') == 0 or die "gen-certs failed\n";
my $cert = Cwd::abs_path('t/certs') . '/localhost';
$conf =~ s/__CERT__/$cert/g;
$s->start($conf);

# Descriptors per worker: the minimum over 20 samples 25 ms apart, because probes in flight
# (up to one per peer at any moment) come and go; a leak grows with every probe instead.
sub fds {
    my %n;
    for (1 .. 20) {
        for my $pid ($s->worker_pids) {
            opendir my $d, "/proc/$pid/fd" or next;
            my $count = grep { /^\d+$/ } readdir $d;
            $n{$pid} = $count if !defined $n{$pid} || $count < $n{$pid};
        }
        sleep 0.025;
    }
    return \%n;
}

sub total_checks {
    my $sum = 0;
    for my $u (@{ $s->status->{upstreams} }) {
        $sum += $_->{health_checks}{checks} for @{ $u->{peers} };
    }
    return $sum;
}

sleep 1;
my $before = fds();
my %state = map { $_->{name} => [map { $_->{state} } @{ $_->{peers} }] } @{ $s->status->{upstreams} };
is_deeply(\%state, { map { ("u_$_" => ['up', 'unhealthy']) } qw(HANG RESET GARBAGE ENDLESS BADTLS REFUSED) },
          'good peers up, every misbehaving peer unhealthy');
my $c0 = total_checks();
my $waited = 0;
while (total_checks() - $c0 < 2000 && $waited < 30) {
    sleep 0.5;
    $waited += 0.5;
}
sleep 0.1;
my $probes = total_checks() - $c0;
cmp_ok($probes, '>=', 2000, "at least 2,000 probes ran ($probes in ${waited}s)");
my $after = fds();
is(scalar(keys %$before), 2, 'two workers');
for my $pid (sort keys %$before) {
    ok(defined $after->{$pid}, "worker $pid still runs");
}
# A kept probe connection belongs to the worker that ran the peer's last probe; when the other
# worker takes a peer over (its timer came first), both may hold one for a while, so a worker's
# count can move by up to the number of peers. A leak grows with every probe: over 2,000
# probes, far beyond that.
my $peers = 12;
my ($sum_before, $sum_after) = (0, 0);
$sum_before += $_ for values %$before;
$sum_after += $after->{$_} // 1e9 for keys %$before;
cmp_ok($sum_after - $sum_before, '<=', $peers + 2,
       "descriptors of both workers flat within one per peer ($sum_before -> $sum_after)");
unlike($s->error_log, qr/\[(alert|crit|emerg)\]/, 'no alert, crit or emerg in the error log');

$s->cleanup;
done_testing;
