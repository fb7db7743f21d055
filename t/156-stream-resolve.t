# `server NAME:PORT resolve` in a stream {} upstream with lb_upstream (nginx 1.27.3 and later):
# TCP peers follow DNS at run time, as t/110-resolve.t checks for http upstreams. Scripted
# (Test::LB::Server + Test::LB::Dns, the responder t/dns.py), because the answers change while
# nginx runs.
#
# One nginx (master + 2 workers): the stream front (`upstream u`, port 3, `reuseport` so that
# connections land on both workers), stream backends that answer "ADDRESS:PORT" and close on
# 127.0.0.1, 127.0.0.2 and 127.0.0.4 at port 2 (nothing listens on 127.0.0.3: connections
# there are refused, so a TCP check fails), and lb_status in http (port 1). Case (g) adds a
# UDP front (port 4, `upstream udp`) over UDP backends at port 5 answering the same way.
#
# TEST_RESOLVE_STOCK=1 runs the same scenarios with nginx's own stream balancers (no lb_*
# directives, no status checks): it proves the responder and the test logic. KEEP=1 keeps
# t/servroot_stream_resolve_PID.
#
# nginx asks again after the answer's validity: `valid=1s` makes that about 2 s.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use IO::Socket::INET;
use IO::Select;
use Time::HiRes qw(sleep time);
use Test::LB::Server;
use Test::LB::Dns;

my $STOCK = $ENV{TEST_RESOLVE_STOCK} ? 1 : 0;
my $LB = !$STOCK;

my $s = Test::LB::Server->new(name => 'stream_resolve', workers => 2);
{
    my $v = `$s->{binary} -v 2>&1`;
    my ($maj, $min, $pat) = $v =~ m{nginx/(\d+)\.(\d+)\.(\d+)};
    if (!defined $maj || ($maj * 1000 + $min) * 1000 + $pat < 1_027_003) {
        $s->cleanup;
        plan skip_all => "nginx " . ($maj ? "$maj.$min.$pat" : '?')
            . " has no \"server ... resolve\" (1.27.3 and later)";
    }
}
note($STOCK ? 'stock mode: nginx balancers, no lb_* directives' : 'lb_upstream mode');

my $dns = Test::LB::Dns->start(dir => $s->dir, a => { 'backend.test' => ['127.0.0.1'] });
my $DNS = $dns->port;
my $P2 = $s->port(2);
my %A = map { ($_ => "127.0.0.$_:$P2") } 1 .. 4;
my ($a2, $a3) = ($A{2}, $A{3});    # for regexes (where $A{2} would read as a quantifier)
my $CHECK = 'lb_check type=tcp interval=300ms timeout=250ms rise=1 fall=1;';

# Backends log each connection with the address it reached (logs/backend.log): the TCP
# probes show there too.
my $backends = <<'CONF';
    log_format reached '$server_addr';
    server {
        listen 127.0.0.1:__PORT2__; listen 127.0.0.2:__PORT2__; listen 127.0.0.4:__PORT2__;
        access_log logs/backend.log reached;
        return "$server_addr:$server_port";
    }
CONF

# The stream block: method, check (an lb_check line or ''), servers, resolver_in_upstream,
# udp (1: the UDP upstream of case (g) too).
sub stream_conf {
    my (%o) = @_;
    my $udp = '';
    if ($o{udp}) {
        my $ucheck = $LB ? "lb_upstream;\n        lb_check type=udp send=q expect=~\"^127\" "
                           . "interval=300ms timeout=250ms rise=1 fall=1;" : '';
        $udp = <<"UDP";
    upstream udp {
        $ucheck
        zone udp 256k;
        server backend.test:__PORT5__ resolve;
    }
    server {
        listen 127.0.0.1:__PORT4__ udp reuseport;
        proxy_pass udp;
        proxy_responses 1;
        proxy_timeout 1s;
    }
    server {
        listen 127.0.0.1:__PORT5__ udp; listen 127.0.0.2:__PORT5__ udp;
        return "\$server_addr:\$server_port";
    }
UDP
    }
    my $method = $o{method} // 'round_robin';
    my $check = $o{check} // $CHECK;
    my $servers = $o{servers} // "server backend.test:__PORT2__ resolve;";
    my $resolver = "resolver 127.0.0.1:$DNS valid=1s;";
    my ($top_resolver, $ups_resolver) = $o{resolver_in_upstream} ? ('', $resolver) : ($resolver, '');
    my $balancer;
    if ($LB) {
        $balancer = "lb_upstream $method;\n        $check";
    } else {
        $balancer = { round_robin => '', least_conn => 'least_conn;',
                      p2c => 'random two least_conn;' }->{ (split ' ', $method)[0] };
    }
    return <<"CONF" . $backends;
    $top_resolver
    resolver_timeout 1s;
    upstream u {
        $balancer
        zone u 256k;
        $ups_resolver
        $servers
    }
    server {
        listen 127.0.0.1:__PORT3__ reuseport;
        proxy_pass u;
        proxy_connect_timeout 1s;
    }
$udp
CONF
}

my $HTTP = $LB ? 'server { listen 127.0.0.1:__PORT1__; location /status { lb_status; } }' : '';

# --- helpers -----------------------------------------------------------------------------

# One TCP connection through the front: what it answered ("none" when it closed at once).
sub conn {
    my $c = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $s->port(3), Timeout => 3)
        or return "connect: $!";
    local $/;
    my $got = <$c> // '';
    return length $got ? $got : 'none';
}

# $n connections: { addr => count } (failures under "none" or "connect: ...").
sub sample {
    my ($n) = @_;
    my %r;
    $r{ conn() }++ for 1 .. $n;
    return \%r;
}

sub set_of { join ' ', sort keys %{ $_[0] } }
sub want_of { join ' ', sort @_ }

# Asserts that connections are served by exactly @want within $seconds (and a fresh sample of
# $n agrees); returns the fresh sample.
sub served_by {
    my ($name, $seconds, $n, @want) = @_;
    my $want = want_of(@want);
    my $until = time + $seconds;
    my $r;
    while (1) {
        $r = sample(10);
        last if set_of($r) eq $want || time > $until;
        sleep 0.1;
    }
    is(set_of($r), $want, "$name: served by $want within ${seconds}s") or diag(explain $r);
    my $fresh = sample($n);
    is(set_of($fresh), $want, "$name: the next $n connections too") or diag(explain $fresh);
    return $fresh;
}

# Status: the stream upstream u's object (lb mode only).
sub upstream_u {
    my ($u) = grep { $_->{name} eq 'u' && $_->{kind} eq 'stream' } @{ $s->status->{upstreams} };
    die "no stream upstream u in the status\n" unless $u;
    return $u;
}
sub peers { +{ map { $_->{address} => $_ } @{ upstream_u()->{peers} } } }

# Waits up to $seconds until the status lists exactly @want in stream upstream u.
sub status_lists {
    my ($name, $seconds, @want) = @_;
    my $want = want_of(@want);
    my $got = '';
    my $until = time + $seconds;
    while (1) {
        $got = eval { set_of(peers()) } // "error: $@";
        last if $got eq $want || time > $until;
        sleep 0.05;
    }
    is($got, $want, "$name: status lists " . ($want || 'no peer'));
}

sub wait_state {
    my ($addr, $state, $seconds) = @_;
    my $until = time + $seconds;
    my $got = '';
    while (time < $until) {
        $got = eval { peers()->{$addr}{state} } // 'absent';
        return 1 if $got eq $state;
        sleep 0.05;
    }
    diag("peer $addr is $got, not $state, after ${seconds}s");
    return 0;
}

# Rewrites the stream block; nginx -t first, then a reload that returns once the old workers
# are gone.
sub reload_stream {
    my ($name, $stream) = @_;
    $s->set_stream($stream);
    $s->checked_reload($name, $HTTP);
}

sub case {
    my ($name, $code) = @_;
    subtest $name => sub {
        eval { $code->(); 1 } or fail("$name died: $@");
    };
}

sub log_since { $s->log_since(@_) }
sub wait_log  { $s->wait_log(@_) }

# Connections the backends saw on $ip (proxied ones and probes).
sub reached {
    my ($ip) = @_;
    my $n = () = ($s->slurp('logs/backend.log') // '') =~ /^\Q$ip\E$/mg;
    return $n;
}

# --- the scenarios -------------------------------------------------------------------------

$s->set_stream(stream_conf());
my $started = eval { $s->_write_conf($HTTP); my ($ok, $out) = $s->_nginx('-t');
                     die "nginx -t: $out" unless $ok; $s->start($HTTP); 1 };
ok($started, 'nginx starts with "server backend.test:PORT resolve" in a stream upstream')
    or diag($@);
if (!$started) {
    $s->cleanup unless $ENV{KEEP};
    done_testing;
    exit;
}

case '(a) one address: connections are served' => sub {
    served_by('(a)', 3, 10, $A{1});
    ok(scalar $dns->asked('backend.test', 1, 'A'), 'nginx asked for A backend.test');
    return unless $LB;
    like($s->error_log, qr/lb: stream upstream "u": method round_robin, 0 peers \(0 backup, 0 down\), 1 resolved server\(s\) \(up to 128 addresses\)/,
         '(a) the start-up notice counts the resolved server');
    status_lists('(a)', 2, $A{1});
    my $u = upstream_u();
    is($u->{kind}, 'stream', '(a) the upstream is of kind stream');
    my $p = peers()->{$A{1}};
    is($p->{name}, "backend.test:$P2", '(a) the peer is named as in the server line');
    ok($p->{resolved}, '(a) and marked resolved');
    ok(wait_state($A{1}, 'up', 2), '(a) the resolved peer is up');
    cmp_ok(peers()->{$A{1}}{requests}, '>=', 20, '(a) status counts its connections');
};

case '(b) a second address: both are used' => sub {
    my $serial = $dns->set(a => { 'backend.test' => ['127.0.0.1', '127.0.0.2'] });
    ok($dns->wait_asked('backend.test', $serial, 5), '(b) nginx asked again within 5s');
    my $r = served_by('(b)', 4, 20, $A{1}, $A{2});
    cmp_ok($r->{$A{2}} // 0, '>=', 5, '(b) the new address gets a fair share of 20');
    return unless $LB;
    status_lists('(b)', 2, $A{1}, $A{2});
    ok(wait_state($A{2}, 'up', 3), '(b) the new peer is up once probed');
    cmp_ok(peers()->{$A{2}}{requests}, '>=', 5, '(b) status counts the new peer\'s connections');
    like($s->error_log, qr/lb: stream upstream "u": peer \Q$a2\E \(backend\.test:$P2\) joined/,
         '(b) the join is logged');
};

case '(c) 127.0.0.2 leaves, 127.0.0.3 (refusing) joins: checked out, no new connections' => sub {
    my $serial = $dns->set(a => { 'backend.test' => ['127.0.0.1', '127.0.0.3'] });
    ok($dns->wait_asked('backend.test', $serial, 5), '(c) nginx asked again');
    if ($STOCK) {
        # Control: nginx retries the refused connection on 1 (proxy_next_upstream): served by
        # 1, but 3 is tried.
        served_by('(c) stock control', 4, 20, $A{1});
        return;
    }
    status_lists('(c)', 4, $A{1}, $A{3});
    ok(wait_state($A{3}, 'unhealthy', 3), '(c) the new peer fails its checks');
    like(peers()->{$A{3}}{health_checks}{last_reason}, qr/connection refused/,
         '(c) reason: connection refused');
    like($s->error_log, qr/lb: peer \Q$a3\E in stream upstream "u" is down after 1 failed check/,
         '(c) the change is logged');
    like($s->error_log, qr/lb: stream upstream "u": peer \Q$a2\E \(backend\.test:$P2\) left/,
         '(c) the leave is logged');
    my $before = peers();
    my $r = served_by('(c)', 2, 20, $A{1});
    my $after = peers();
    is($after->{$A{3}}{requests}, $before->{$A{3}}{requests},
       '(c) the unhealthy peer got no connection attempt');
    ok(!exists $after->{$A{2}}, '(c) the address no longer in DNS is gone from the status');
    # Neither connections nor probes reach 127.0.0.2 any more.
    my $n = reached('127.0.0.2');
    cmp_ok($n, '>', 0, '(c) 127.0.0.2 was reached while it was a member');
    sleep 1;
    is(reached('127.0.0.2'), $n, '(c) and is reached no more (no connection, no probe)');
};

case '(d) a reload keeps the unhealthy resolved peer out' => sub {
    my $before = $LB ? peers()->{$A{3}} : undef;
    # A longer interval after the reload: a peer that lost its health would be tried until
    # its first check.
    reload_stream('(d)', stream_conf(check => 'lb_check type=tcp interval=3s timeout=1s rise=1 fall=1;'));
    my $r = sample(20);
    is(set_of($r), $A{1}, '(d) after the reload connections are served by 1') or diag(explain $r);
    return unless $LB;
    status_lists('(d)', 3, $A{1}, $A{3});
    my $p = peers();
    is($p->{$A{3}}{state}, 'unhealthy', '(d) status still shows it unhealthy');
    cmp_ok($p->{$A{3}}{health_checks}{unhealthy}, '>=', $before->{health_checks}{unhealthy},
           '(d) its health record carried over');
    is($p->{$A{3}}{requests}, $before->{requests}, '(d) it got no connection attempt');
};

case '(e) least_conn and p2c with resolved peers, resolver in the upstream' => sub {
    $dns->set(a => { 'backend.test' => ['127.0.0.1', '127.0.0.4'] });
    for my $method (qw(least_conn p2c)) {
        reload_stream("(e) $method", stream_conf(method => $method, check => '',
                                                 resolver_in_upstream => 1));
        served_by("(e) $method", 4, 20, $A{1}, $A{4});
        next unless $LB;
        is(upstream_u()->{method}, $method, "(e) status shows method $method");
    }
};

case '(f) max_resolved: addresses over the limit are ignored with a [warn]' => sub {
    if ($STOCK) {
        pass('(f) stock nginx has no such limit');
        return;
    }
    my $log = length $s->error_log;
    $dns->set(a => { 'backend.test' => ['127.0.0.1', '127.0.0.2', '127.0.0.4'] });
    reload_stream('(f)', stream_conf(method => 'round_robin max_resolved=2', check => ''));
    ok(wait_log($log, qr/\[warn\].*lb: stream upstream "u": 1 resolved address\(es\) ignored \(1 over max_resolved=2, 0 for lack of room/, 5),
       '(f) the address over the limit is reported') or diag(log_since($log));
    sleep 0.5;
    my $r = sample(30);
    is(scalar(grep { /^127/ } keys %$r) . ' ' . scalar(grep { !/^127/ } keys %$r), '2 0',
       '(f) exactly two addresses serve, nothing fails') or diag(explain $r);
    status_lists('(f)', 2, keys %$r);
};

case '(g) a UDP upstream follows DNS too, its udp check on the resolved peers' => sub {
    $dns->set(a => { 'backend.test' => ['127.0.0.1', '127.0.0.2', '127.0.0.3'] });
    reload_stream('(g)', stream_conf(check => '', udp => 1));
    my $P5 = $s->port(5);
    my %U = map { ($_ => "127.0.0.$_:$P5") } 1 .. 3;
    # One datagram through the UDP front: the answer, or "none" within 1 s.
    my $ask = sub {
        my $c = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $s->port(4),
                                      Proto => 'udp') or return "udp: $!";
        $c->send('q');
        my $got = '';
        $c->recv($got, 100) if IO::Select->new($c)->can_read(1);
        return length $got ? $got : 'none';
    };
    if ($LB) {
        # 127.0.0.3 has no UDP listener: port unreachable, the check takes it out.
        my $until = time + 4;
        my $u3 = '';
        while (time < $until) {
            my ($u) = grep { $_->{name} eq 'udp' } @{ $s->status->{upstreams} };
            my ($p) = grep { $_->{address} eq $U{3} } @{ $u->{peers} // [] };
            $u3 = $p ? $p->{state} : 'absent';
            last if $u3 eq 'unhealthy';
            sleep 0.1;
        }
        is($u3, 'unhealthy', '(g) the resolved UDP peer without a listener fails its udp check');
        my ($u) = grep { $_->{name} eq 'udp' } @{ $s->status->{upstreams} };
        is($u->{kind}, 'stream', '(g) the UDP upstream is a stream one in the status');
    }
    my %r;
    $r{ $ask->() }++ for 1 .. ($LB ? 20 : 6);
    if ($LB) {
        is(set_of(\%r), want_of($U{1}, $U{2}), '(g) datagrams are answered by the two that pass')
            or diag(explain \%r);
    } else {
        # Control: without checks the datagrams sent to 127.0.0.3 go unanswered.
        ok($r{none}, '(g) stock control: some datagrams went to 127.0.0.3') or diag(explain \%r);
    }
};

unlike($s->error_log, qr/\[(?:alert|crit|emerg)\]/, 'no alert, crit or emerg in the error log');

if ($ENV{KEEP}) {
    diag("kept " . $s->dir);
    $s->stop;
} else {
    $dns->stop;
    $s->cleanup;
}
done_testing;
