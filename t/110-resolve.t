# `server NAME resolve` in an lb_upstream (nginx 1.27.3 and later): peers follow DNS at run
# time. Scripted (Test::LB::Server + Test::LB::Dns, the responder t/dns.py), because the
# answers change while nginx runs.
#
# One nginx (master + 2 workers) carries the front (`upstream u`, port 1, `reuseport` so that
# requests land on both workers) and the backends: every backend answers
# "ADDRESS:PORT CONNECTION_REQUESTS", on 127.0.0.1 and 127.0.0.2 (healthy) and 127.0.0.3 (its
# /health answers 500) at ports 2 and 3, and a static peer on 127.0.0.1, port 4 (all of
# 127.0.0.0/8 is loopback on Linux). The front adds X-Pid (the worker that served).
#
# TEST_RESOLVE_STOCK=1 runs the same scenarios with nginx's own balancers (no lb_upstream,
# lb_check, lb_keepalive, no lb_status checks): it proves the responder and the test logic.
# Where health checks matter, stock mode asserts the opposite (the unhealthy peer DOES get
# traffic without lb_check), so that the lb assertion is known to depend on the checks and not
# on DNS. KEEP=1 keeps t/servroot_resolve_PID (config, logs, DNS answers and query log).
#
# nginx resolves every name in one worker and asks again after the answer's validity:
# `valid=1s` makes that 2 s (nginx waits valid + 1 s), so a DNS change shows within ~2-3 s.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Time::HiRes qw(sleep time);
use Test::LB::Server;
use Test::LB::Dns;
use JSON::PP ();

my $STOCK = $ENV{TEST_RESOLVE_STOCK} ? 1 : 0;
my $LB = !$STOCK;

my $s = Test::LB::Server->new(name => 'resolve', workers => 2);
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
my ($P2, $P3, $P4) = map { $s->port($_) } 2, 3, 4;
my %A = map { ($_ => "127.0.0.$_:$P2") } 1, 2, 3;          # resolved peers at port 2
my $STATIC = "127.0.0.1:$P4";
my $CHECK = 'lb_check type=http uri=/health interval=300ms timeout=250ms rise=1 fall=1;';
my $BIG = 40;    # addresses of the large answer (l)

# /slow on 127.0.0.2 sends its 6 KiB at 2 KiB/s (requests in flight while the answer changes);
# probes of /health are logged with the address probed (logs/health.log).
my $backends = <<'CONF';
    log_format probed '$server_addr';
    map $server_addr $slow_rate { 127.0.0.2 2k; default 0; }
    server {
        listen 127.0.0.1:__PORT2__; listen 127.0.0.2:__PORT2__;
        listen 127.0.0.1:__PORT3__; listen 127.0.0.2:__PORT3__;
        root html;
        location /health { access_log logs/health.log probed; return 200 "ok"; }
        location /slow { limit_rate $slow_rate; try_files /slow =404; }
        location / { return 200 "$server_addr:$server_port $connection_requests"; }
    }
    server {
        listen 127.0.0.3:__PORT2__; listen 127.0.0.3:__PORT3__;
        location /health { return 500 "sick"; }
        location / { return 200 "$server_addr:$server_port $connection_requests"; }
    }
    server {
        listen 127.0.0.1:__PORT4__;
        location / { return 200 "$server_addr:$server_port $connection_requests"; }
    }
CONF
$backends .= "    server {\n"
    . join('', map { "        listen 127.0.1.$_:__PORT2__;\n" } 1 .. $BIG)
    . "        location / { return 200 \"\$server_addr:\$server_port \$connection_requests\"; }\n"
    . "    }\n";

# The configuration: method (round_robin, least_conn, p2c), check (an lb_check line or ''),
# keepalive (N or 0), servers (the server lines), resolver_in_upstream.
sub conf {
    my (%o) = @_;
    my $method = $o{method} // 'round_robin';
    my $check = $o{check} // $CHECK;
    my $servers = $o{servers} // "server backend.test:__PORT2__ resolve;";
    my $resolver = "resolver 127.0.0.1:$DNS valid=1s;";
    my ($http_resolver, $ups_resolver) = $o{resolver_in_upstream} ? ('', $resolver) : ($resolver, '');
    my ($balancer, $ka);
    if ($LB) {
        $balancer = "lb_upstream $method;\n        $check";
        $ka = $o{keepalive} ? "lb_keepalive $o{keepalive};" : '';
    } else {
        $balancer = { round_robin => '', least_conn => 'least_conn;',
                      p2c => 'random two least_conn;' }->{$method};
        $ka = $o{keepalive} ? "keepalive $o{keepalive};" : '';
    }
    my $status = $LB ? 'location /status { lb_status; add_header X-Pid $pid always; }' : '';
    return <<"CONF" . $backends;
    $http_resolver
    resolver_timeout 1s;
    upstream u {
        $balancer
        $ka
        zone u 256k;
        $ups_resolver
        $servers
    }
    server {
        listen 127.0.0.1:__PORT1__ reuseport;
        location / {
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://u;
            add_header X-Pid \$pid always;
        }
        $status
    }
CONF
}

# --- helpers -----------------------------------------------------------------------------

# One request: (status, address that served, connection_requests at the backend, worker pid).
sub req {
    my ($path) = @_;
    my ($code, $body, $head) = $s->get($path // '/');
    my ($addr, $n) = $code == 200 ? $body =~ /^(\S+) (\d+)$/ : ();
    my ($pid) = ($head // '') =~ /^X-Pid: (\d+)/mi;
    return ($code, $addr // "status $code", $n // 0, $pid // 0);
}

# $n requests: { addrs => {addr => count}, errors => {status => count}, pids => {pid =>
# {addr => count}}, reused => {addr => max connection_requests} }.
sub sample {
    my ($n, $path) = @_;
    my %r = (addrs => {}, errors => {}, pids => {}, reused => {});
    for (1 .. $n) {
        my ($code, $addr, $cr, $pid) = req($path);
        if ($code != 200) { $r{errors}{$code}++; next; }
        $r{addrs}{$addr}++;
        $r{pids}{$pid}{$addr}++;
        $r{reused}{$addr} = $cr if $cr > ($r{reused}{$addr} // 0);
    }
    return \%r;
}

sub set_of { join ' ', sort keys %{ $_[0] } }
sub want_of { join ' ', sort @_ }

# Waits up to $seconds until a sample of 10 requests is served by exactly @want, without
# errors; returns (ok, last sample).
sub wait_served {
    my ($seconds, @want) = @_;
    my $want = want_of(@want);
    my $until = time + $seconds;
    my $r;
    while (1) {
        $r = sample(10);
        return (1, $r) if set_of($r->{addrs}) eq $want && !%{ $r->{errors} };
        last if time > $until;
        sleep 0.1;
    }
    return (0, $r);
}

# Asserts that requests are served by exactly @want within $seconds (and a fresh sample of $n
# agrees); returns the fresh sample.
sub served_by {
    my ($name, $seconds, $n, @want) = @_;
    my ($ok, $r) = wait_served($seconds, @want);
    ok($ok, "$name: served by " . want_of(@want) . " within ${seconds}s")
        or diag("last sample: " . explain($r));
    my $fresh = sample($n);
    is(set_of($fresh->{addrs}) . (%{ $fresh->{errors} } ? ' errors ' . set_of($fresh->{errors}) : ''),
       want_of(@want), "$name: the next $n requests too") or diag(explain $fresh);
    return $fresh;
}

# Status: { address => peer } of upstream u (lb mode only).
sub peers { $s->peers('u') }

# Waits up to $seconds until the status lists exactly @want in upstream u.
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

# Rewrites the config; nginx -t first (a refused config fails the test, with nginx's words),
# then a reload that returns once the old workers are gone.
sub reload_conf { $s->checked_reload(@_) }

# Each case runs as a subtest; one that dies fails, and the next one runs.
sub case {
    my ($name, $code) = @_;
    subtest $name => sub {
        eval { $code->(); 1 } or fail("$name died: $@");
    };
}

sub log_since { $s->log_since(@_) }
sub wait_log  { $s->wait_log(@_) }

# --- the scenarios -------------------------------------------------------------------------

my $started = eval { $s->_write_conf(conf()); my ($ok, $out) = $s->_nginx('-t');
                     die "nginx -t: $out" unless $ok; $s->start(conf()); 1 };
ok($started, 'nginx starts with "server backend.test:PORT resolve" in the upstream')
    or diag($@);
if (!$started) {
    $s->cleanup unless $ENV{KEEP};
    done_testing;
    exit;
}

case '(a) one address: requests are served' => sub {
    served_by('(a)', 3, 10, $A{1});
    ok(scalar $dns->asked('backend.test', 1, 'A'), 'nginx asked for A backend.test');
    return unless $LB;
    like($s->error_log, qr/lb: upstream "u": method round_robin, 0 peers \(0 backup, 0 down\), 1 resolved server\(s\) \(up to 128 addresses\)/,
         '(a) the start-up notice counts the resolved server');
    status_lists('(a)', 2, $A{1});
    my $p = peers()->{$A{1}};
    is($p->{name}, "backend.test:$P2", '(a) the peer is named as in the server line');
    ok($s->wait_state('u', $A{1}, 'up', 2), '(a) the resolved peer is up');
    cmp_ok($p->{requests}, '>=', 10, '(a) status counts its requests');
};

case '(b) a second address: both are used' => sub {
    my $serial = $dns->set(a => { 'backend.test' => ['127.0.0.1', '127.0.0.2'] });
    ok($dns->wait_asked('backend.test', $serial, 5), '(b) nginx asked again within 5s');
    my $r = served_by('(b)', 4, 20, $A{1}, $A{2});
    cmp_ok($r->{addrs}{$A{2}} // 0, '>=', 5, '(b) the new address gets a fair share of 20');
    return unless $LB;
    status_lists('(b)', 2, $A{1}, $A{2});
    # A new peer starts in default= state (up, "checking" until its first probes pass).
    ok($s->wait_state('u', $A{2}, 'up', 3), '(b) the new peer is up once probed');
    my $p = peers();
    is(join(' ', map { $p->{$_}{state} } $A{1}, $A{2}), 'up up', '(b) both up');
    cmp_ok($p->{$A{2}}{requests}, '>=', 5, '(b) status counts the new peer\'s requests');
};

case '(c) one address replaced by an unhealthy one' => sub {
    my $serial = $dns->set(a => { 'backend.test' => ['127.0.0.1', '127.0.0.3'] });
    ok($dns->wait_asked('backend.test', $serial, 5), '(c) nginx asked again');
    if ($STOCK) {
        # Control: without health checks the answer {1, 3} puts 3 in rotation.
        served_by('(c) stock control', 4, 20, $A{1}, $A{3});
        return;
    }
    status_lists('(c)', 4, $A{1}, $A{3});
    ok($s->wait_state('u', $A{3}, 'unhealthy', 3), '(c) the new peer fails its checks');
    is(peers()->{$A{3}}{health_checks}{last_reason}, 'HTTP 500', '(c) reason HTTP 500');
    served_by('(c)', 2, 20, $A{1});
    my $p = peers();
    is($p->{$A{1}}{state}, 'up', '(c) the healthy one is up');
    is($p->{$A{3}}{state}, 'unhealthy', '(c) the unhealthy one is shown unhealthy');
    ok(!exists $p->{$A{2}}, '(c) the address no longer in DNS is gone from the status');
    my $a3 = $A{3};
    like($s->error_log, qr/lb: peer \Q$a3\E in upstream "u" is down after 1 failed check/,
         '(c) the change is logged');
};

case '(d) a reload keeps the unhealthy resolved peer out' => sub {
    my $before = $LB ? peers()->{$A{3}} : undef;
    # A longer interval after the reload: a peer that lost its health would serve until its
    # first check.
    my $conf = conf(check => 'lb_check type=http uri=/health interval=2s timeout=1s rise=1 fall=1;');
    $s->_write_conf($conf);
    my ($ok, $out) = $s->_nginx('-t');
    ok($ok, '(d) nginx -t') or die $out;
    my %old = map { $_ => 1 } $s->worker_pids;
    kill 'HUP', $s->master_pid;
    $s->wait_for(sub { grep { !$old{$_} } $s->worker_pids }, 10, 'a new worker');
    # Sample at once and for 2.5 s: from before the new workers resolve until after.
    my %seen;
    my $until = time + 2.5;
    while (time < $until) {
        my ($code, $addr) = req();
        $seen{$addr}++;
    }
    $s->wait_for(sub { !grep { kill 0, $_ } keys %old }, 10, 'old workers to exit');
    ok(!grep({ /^status/ } keys %seen), '(d) no request failed around the reload (stock: none)')
        or diag(explain \%seen);
    if ($STOCK) {
        ok($seen{$A{3}}, '(d) stock control: after the reload 3 serves (no checks)')
            or diag(explain \%seen);
        return;
    }
    ok(!$seen{$A{3}} && $seen{$A{1}}, '(d) no request reached the unhealthy peer after the reload')
        or diag(explain \%seen);
    status_lists('(d)', 3, $A{1}, $A{3});
    my $p = peers();
    is($p->{$A{3}}{state}, 'unhealthy', '(d) status still shows it unhealthy');
    cmp_ok($p->{$A{3}}{health_checks}{unhealthy}, '>=', $before->{health_checks}{unhealthy},
           '(d) its health record carried over');
    is($p->{$A{3}}{requests}, $before->{requests}, '(d) its request counter did not move');
};

case '(e) all addresses gone (NXDOMAIN): the static peers serve' => sub {
    my $serial = $dns->set(a => { 'backend.test' => ['127.0.0.1', '127.0.0.2'] });
    reload_conf('(e)', conf(servers => "server 127.0.0.1:__PORT4__;\n"
                                       . "        server backend.test:__PORT2__ resolve;"));
    served_by('(e) before', 4, 20, $STATIC, $A{1}, $A{2});
    my $log = length $s->error_log;
    $serial = $dns->set(nxdomain => ['backend.test']);
    ok($dns->wait_asked('backend.test', $serial, 5), '(e) nginx asked again');
    my $r = served_by('(e)', 4, 20, $STATIC);
    ok(wait_log($log, qr/backend\.test could not be resolved \(3: Host not found\)/, 2),
       '(e) nginx logs the NXDOMAIN');
    status_lists('(e)', 2, $STATIC) if $LB;
    $serial = $dns->set(a => { 'backend.test' => ['127.0.0.2'] });
    ok($dns->wait_asked('backend.test', $serial, 5), '(e) nginx asked again');
    served_by('(e) name back', 4, 20, $STATIC, $A{2});
    status_lists('(e) name back', 2, $STATIC, $A{2}) if $LB;
};

case '(f) resolver down (no answer) or failing (SERVFAIL): the last answer is kept' => sub {
    my $log = length $s->error_log;
    my $serial = $dns->set(a => { 'backend.test' => ['127.0.0.1'] }, drop => 1);
    ok($dns->wait_asked('backend.test', $serial, 5), '(f) nginx asked the silent resolver');
    ok(wait_log($log, qr/backend\.test could not be resolved \(110: Operation timed out\)/, 4),
       '(f) nginx logs the timeout');
    my $r = sample(20);
    is(set_of($r->{addrs}) . (%{ $r->{errors} } ? ' errors' : ''), want_of($STATIC, $A{2}),
       '(f) after a timed-out query the peers of the last answer still serve')
        or diag(explain $r);
    status_lists('(f) timeout', 1, $STATIC, $A{2}) if $LB;
    # The dropped queries were not answered from the file: its A answer {1} must not show.
    ok(!$r->{addrs}{$A{1}}, '(f) nothing came from the unanswered queries');

    $log = length $s->error_log;
    $serial = $dns->set(a => { 'backend.test' => ['127.0.0.1'] }, servfail => ['backend.test']);
    ok($dns->wait_asked('backend.test', $serial, 5), '(f) nginx asked the failing resolver');
    ok(wait_log($log, qr/backend\.test could not be resolved \(2: Server failure\)/, 3),
       '(f) nginx logs the SERVFAIL');
    $r = sample(20);
    is(set_of($r->{addrs}) . (%{ $r->{errors} } ? ' errors' : ''), want_of($STATIC, $A{2}),
       '(f) after SERVFAIL the peers of the last answer still serve') or diag(explain $r);

    $serial = $dns->set(a => { 'backend.test' => ['127.0.0.1'] });
    served_by('(f) resolver back', 6, 20, $STATIC, $A{1});
};

case '(g) two workers agree' => sub {
    $dns->set(a => { 'backend.test' => ['127.0.0.1', '127.0.0.2'] });
    reload_conf('(g)', conf());
    served_by('(g)', 4, 10, $A{1}, $A{2});
    for my $step ([ '{1, 2}', $A{1}, $A{2} ], [ 'changed to {2}', $A{2} ]) {
        my ($what, @want) = @$step;
        if ($what =~ /changed/) {
            my $serial = $dns->set(a => { 'backend.test' => ['127.0.0.2'] });
            ok($dns->wait_asked('backend.test', $serial, 5), '(g) nginx asked again');
            wait_served(4, @want);
        }
        # Each worker, on its own, uses exactly @want.
        my $r = sample(40);
        my @pids = sort keys %{ $r->{pids} };
        cmp_ok(scalar @pids, '>=', 2, "(g) $what: requests landed on both workers")
            or diag(explain $r);
        for my $pid (@pids) {
            is(set_of($r->{pids}{$pid}), want_of(@want), "(g) $what: worker $pid uses " . want_of(@want));
        }
        next unless $LB;
        # The status page, asked until both workers have answered, lists the same peers.
        my %by_pid;
        for (1 .. 40) {
            my ($code, $body, $head) = $s->get('/status');
            my ($pid) = $head =~ /^X-Pid: (\d+)/mi;
            next unless $code == 200 && $pid;
            my $st = eval { JSON::PP::decode_json($body) } or next;
            my ($u) = grep { $_->{name} eq 'u' } @{ $st->{upstreams} };
            $by_pid{$pid} = join ' ', sort map { $_->{address} } @{ $u->{peers} };
            last if keys %by_pid >= 2;
        }
        cmp_ok(scalar keys %by_pid, '>=', 2, "(g) $what: status answered by both workers");
        for my $pid (sort keys %by_pid) {
            is($by_pid{$pid}, want_of(@want), "(g) $what: status from worker $pid");
        }
    }
};

case '(h) every method and lb_keepalive with resolved peers' => sub {
    $dns->set(a => { 'backend.test' => ['127.0.0.1', '127.0.0.2'] });
    for my $method (qw(round_robin least_conn p2c)) {
        reload_conf("(h) $method", conf(method => $method, check => ''));
        served_by("(h) $method", 4, 20, $A{1}, $A{2});
        if ($LB) {
            my ($u) = grep { $_->{name} eq 'u' } @{ $s->status->{upstreams} };
            is($u->{method}, $method, "(h) status shows method $method");
        }
    }
    reload_conf('(h) keepalive', conf(keepalive => 8, check => ''));
    served_by('(h) keepalive', 4, 10, $A{1}, $A{2});
    my $r = sample(30);
    for my $a ($A{1}, $A{2}) {
        cmp_ok($r->{reused}{$a} // 0, '>=', 2, "(h) keepalive: connections to $a are reused");
    }
};

case '(i) SRV records (service=_http._tcp): ports, weights and priorities from DNS' => sub {
    # t1 (127.0.0.1) at port 2 weight 3, t2 (127.0.0.2) at port 3 weight 1; t3 (127.0.0.1)
    # at port 3 with a lower priority: a backup.
    my %a = ('t1.test' => ['127.0.0.1'], 't2.test' => ['127.0.0.2'], 't3.test' => ['127.0.0.1']);
    my $serial = $dns->set(a => \%a, srv => { '_http._tcp.backend.test' =>
        [[10, 3, $P2, 't1.test'], [10, 1, $P3, 't2.test'], [20, 1, $P3, 't3.test']] });
    reload_conf('(i)', conf(servers => 'server backend.test service=_http._tcp resolve;'));
    my ($t1, $t2, $t3) = ("127.0.0.1:$P2", "127.0.0.2:$P3", "127.0.0.1:$P3");
    my $r = served_by('(i)', 4, 40, $t1, $t2);
    ok(scalar $dns->asked('_http._tcp.backend.test', $serial, 'SRV'), '(i) nginx asked for SRV');
    ok(scalar $dns->asked('t1.test', $serial, 'A'), '(i) and for the target\'s A record');
    cmp_ok($r->{addrs}{$t1} // 0, '>=', 2 * ($r->{addrs}{$t2} // 0),
           '(i) the SRV weight 3:1 shows in the traffic') or diag(explain $r);
    if ($LB) {
        status_lists('(i)', 2, $t1, $t2, $t3);
        my $p = peers();
        is(join(' ', map { $p->{$_}{weight} } $t1, $t2, $t3), '3 1 1', '(i) weights from SRV');
        is(join(' ', map { $p->{$_}{backup} ? 'backup' : 'primary' } $t1, $t2, $t3),
           'primary primary backup', '(i) the lower SRV priority is a backup');
    }
    # SRV changes follow too: t1 moves to port 3, t2 disappears.
    $serial = $dns->set(a => \%a, srv => { '_http._tcp.backend.test' => [[10, 1, $P3, 't1.test']] });
    ok($dns->wait_asked('_http._tcp.backend.test', $serial, 5), '(i) nginx asked again');
    served_by('(i) changed', 4, 10, "127.0.0.1:$P3");
    status_lists('(i) changed', 2, "127.0.0.1:$P3") if $LB;
};

case '(k) resolver given in the upstream block' => sub {
    $dns->set(a => { 'backend.test' => ['127.0.0.2'] });
    reload_conf('(k)', conf(resolver_in_upstream => 1, check => ''));
    served_by('(k)', 4, 10, $A{2});
};

case "(l) a large answer ($BIG addresses, over TCP after a truncated UDP answer)" => sub {
    my @addrs = map { "127.0.1.$_" } 1 .. $BIG;
    my $serial = $dns->set(a => { 'backend.test' => \@addrs });
    reload_conf('(l)', conf(check => ''));
    my @want = map { "$_:$P2" } @addrs;
    my ($ok, $r);
    my $until = time + 4;
    while (1) {
        $r = sample(2 * $BIG);
        $ok = set_of($r->{addrs}) eq want_of(@want) && !%{ $r->{errors} };
        last if $ok || time > $until;
        sleep 0.1;
    }
    ok($ok, "(l) all $BIG addresses serve") or diag(explain $r);
    my @q = $dns->asked('backend.test', $serial, 'A');
    ok((grep { $_->{proto} eq 'udp' && $_->{result} =~ /^TRUNCATED/ } @q)
       && (grep { $_->{proto} eq 'tcp' && $_->{result} eq "NOERROR/$BIG" } @q),
       '(l) nginx asked over TCP after the truncated UDP answer') or diag(explain \@q);
    status_lists('(l)', 2, @want) if $LB;
};

case '(m) an address that leaves: requests in flight finish, nothing fails, probing stops' => sub {
    $dns->set(a => { 'backend.test' => ['127.0.0.1', '127.0.0.2'] });
    reload_conf('(m)', conf());
    served_by('(m) before', 4, 10, $A{1}, $A{2});
    # Six slow requests in the background; those that land on 127.0.0.2 take about 3 s.
    my $body = 'x' x 6144;
    open(my $fh, '>', $s->dir . '/html/slow') or die "html/slow: $!";
    print $fh $body;
    close $fh;
    my $finished = $s->in_background(6, '/slow');
    sleep 0.5;
    # 127.0.0.2 leaves while requests to it are in flight; keep sending requests meanwhile.
    my $serial = $dns->set(a => { 'backend.test' => ['127.0.0.1'] });
    my %seen;
    my $until = time + 4;
    while (time < $until) {
        my ($code, $addr) = req();
        $seen{$addr}++;
    }
    my @slow = $finished->();
    my @took = map { (split ' ')[2] // 0 } @slow;
    is(join(',', map { join ' ', (split ' ')[0, 1] } @slow), join(',', ('200 6144') x 6),
       '(m) every request in flight finished, complete') or diag(explain \@slow);
    ok((grep { $_ >= 2 } @took), '(m) some of them were on 127.0.0.2 when it left')
        or diag(explain \@slow);
    ok(!grep({ /^status/ } keys %seen), '(m) no request failed while the answer changed')
        or diag(explain \%seen);
    served_by('(m) after', 4, 10, $A{1});
    return unless $LB;
    status_lists('(m)', 2, $A{1});
    # Probes of 127.0.0.2 stopped at once: none in 1.5 s (5 intervals).
    my $count = sub { my $n = () = ($s->slurp('logs/health.log') // '') =~ /^127\.0\.0\.2$/mg; $n };
    my $before = $count->();
    cmp_ok($before, '>', 0, '(m) 127.0.0.2 was probed while it was a member');
    sleep 1.5;
    is($count->(), $before, '(m) and is probed no more');
};

case '(n) max_resolved: addresses over the limit are ignored with a [warn], never a 502' => sub {
    if ($STOCK) {
        pass('(n) stock nginx has no such limit');
        return;
    }
    my $log = length $s->error_log;
    $dns->set(a => { 'backend.test' => ['127.0.0.1', '127.0.0.2', '127.0.0.3'] });
    reload_conf('(n)', conf(method => 'round_robin max_resolved=2', check => ''));
    ok(wait_log($log, qr/\[warn\].*lb: upstream "u": 1 resolved address\(es\) ignored \(1 over max_resolved=2, 0 for lack of room/, 5),
       '(n) the address over the limit is reported') or diag(log_since($log));
    # nginx's resolver rotates the answer: which two get in is not fixed, but two do.
    sleep 0.5;
    my $r = sample(30);
    is(scalar(keys %{ $r->{addrs} }) . ' ' . scalar(keys %{ $r->{errors} }), '2 0',
       '(n) exactly two addresses serve, nothing fails') or diag(explain $r);
    status_lists('(n)', 2, keys %{ $r->{addrs} });
    # Room again when the answer shrinks.
    $dns->set(a => { 'backend.test' => ['127.0.0.3'] });
    served_by('(n) one address', 5, 10, $A{3});
};

case '(o) a worker killed after the answer changed: its successor uses the current peers' => sub {
    $dns->set(a => { 'backend.test' => ['127.0.0.1'] });
    reload_conf('(o)', conf());
    served_by('(o) after the reload', 4, 10, $A{1});
    # The master's copy of the peers is now older than the workers'.
    $dns->set(a => { 'backend.test' => ['127.0.0.1', '127.0.0.2'] });
    served_by('(o) changed', 5, 10, $A{1}, $A{2});
    my @before = $s->worker_pids;
    my $log = length $s->error_log;
    kill 'KILL', $before[0];
    my $new;
    $s->wait_for(sub { ($new) = grep { my $p = $_; !grep { $_ == $p } @before } $s->worker_pids; $new },
                 10, 'a new worker');
    my $r = sample(40);
    ok($r->{pids}{$new}, "(o) the new worker $new serves") or diag(explain $r);
    is(set_of($r->{pids}{$new} // {}), want_of($A{1}, $A{2}), '(o) with the current peers');
    is(scalar keys %{ $r->{errors} }, 0, '(o) nothing failed');
    return unless $LB;
    unlike(log_since($log), qr/\[notice\] $new#\d+: lb: upstream "u": peer .* (joined|left)/,
           '(o) the new worker announces no change (nothing changed)');
};

# (o)'s kill is the one alert expected.
unlike(join('', grep { !/exited on signal 9/ } split /^/, $s->error_log),
       qr/\[(?:alert|crit|emerg)\]/, 'no alert, crit or emerg in the error log');

if ($ENV{KEEP}) {
    diag("kept " . $s->dir);
    $s->stop;
} else {
    $dns->stop;
    $s->cleanup;
}
done_testing;
