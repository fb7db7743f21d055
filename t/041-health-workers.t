# lb_check with two workers and a master: one probe per peer per interval in total, and health
# kept across a reload.
#
# --- ssi / --- max_gaps: see t/lib/Test/LB/SSIPage.pm.
#
#   --- probe_count: 10 1 10    the first response's body is a list of "PORT MSEC" lines (a probe
#                               access log); for each PORT, the probes within 10 s of its first
#                               one must number 10 ± 1
#   --- workers_after: 2        after the last response the nginx master (re-read from the pid
#                               file) has exactly 2 children within 5 s: old workers exited
#
# Runs under our Test::Nginx::LB::Runner and the real Test::Nginx::Socket.

use strict;
use warnings;

use lib 't/lib';
use Test::Nginx::LB 'no_plan';
use Test::LB::Misbehave qw(start_misbehave);
use Test::LB::SSIPage;
use Time::HiRes ();

BEGIN {
    # 500 "down" for 1.5 s from the first probe, then 200 "up" for good.
    start_misbehave(FLOP => 'flop:1.5:1000');
}

use_ssi_page();

add_response_body_check(sub {
    my ($block, $body, $req_idx, $repeated_req_idx, $dry_run) = @_;
    my $spec = $block->probe_count or return;
    return if $dry_run || $req_idx != 0;
    my $name = $block->name;
    my ($want, $slack, $window) = split ' ', $spec;
    my %at;
    while ($body =~ /^(\d+) (\d+\.\d+)$/mg) {
        push @{ $at{$1} }, $2;
    }
    ok(scalar(keys %at), "$name - probes were logged") or diag("body: $body");
    for my $port (sort keys %at) {
        my @t = sort { $a <=> $b } @{ $at{$port} };
        my $n = grep { $_ < $t[0] + $window } @t;
        ok(abs($n - $want) <= $slack,
           "$name - port $port: $n probes within ${window}s (want $want ± $slack)")
            or diag("probe times: @t");
    }
});

add_response_body_check(sub {
    my ($block, $body, $req_idx, $repeated_req_idx, $dry_run) = @_;
    my $want = $block->workers_after or return;
    return if $dry_run;
    my $n = ref $block->request eq 'ARRAY' ? scalar @{ $block->request } : 1;
    return if $req_idx != $n - 1;
    my $name = $block->name;
    my $pidfile = "$ENV{TEST_NGINX_SERVER_ROOT}/logs/nginx.pid";
    my ($master, @kids);
    for (1 .. 50) {
        open my $fh, '<', $pidfile or last;
        ($master) = <$fh> =~ /(\d+)/;
        @kids = grep { _ppid($_) == $master } _pids();
        last if @kids == $want;
        Time::HiRes::sleep(0.1);
    }
    is(scalar @kids, $want, "$name - master $master has $want children (old workers exited)")
        or diag(`ps -o pid,ppid,args --ppid $master 2>&1`);
});

sub _pids {
    opendir my $d, '/proc' or return;
    return grep { /^\d+$/ } readdir $d;
}

sub _ppid {
    my $pid = shift;
    open my $fh, '<', "/proc/$pid/stat" or return -1;
    my $stat = <$fh> // '';
    return $stat =~ /\)\s+\S+\s+(\d+)/ ? $1 : -1;
}

workers(2);
master_on();
repeat_each(1);
no_shuffle();
check_accum_error_log();
run_tests();

__DATA__

=== TEST 1: two workers, interval=1s: each peer sees 10 ± 1 probes in 10 s (one per interval in total)
Both workers arm a timer per peer; the lease in shared memory lets only one of them probe.
The page waits 11.5 s, then shows the probe log of both peers.
--- http_config
    log_format probe '$server_port $msec';
    upstream backend {
        lb_upstream;
        lb_check type=http uri=/health interval=1s;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
        location /health { access_log logs/probe.log probe; return 200; }
    }
--- config
    location /t { return 204; }
--- ssi: sleep*24 | logs/probe.log
--- response_body_like chomp
\A\|(?:\d+ \d+\.\d+\n)+\z
--- probe_count: 10 1 10
--- no_error_log
is down after
[error]
--- timeout: 20



=== TEST 2: a reload keeps a down peer out of rotation; old workers stop probing and exit
FLOP fails (500) for 1.5 s, so with fall=1 it is down at once; then it passes, but rise=50 at
300 ms keeps it down for 15 s. The master reloads at 2 s (--- init). The page (3 s) is served
by an old worker; the requests after it by the new workers, which still see FLOP down (were
its health lost, default=up would let it answer "up").
--- http_config
    upstream backend {
        lb_upstream;
        lb_check type=http interval=300ms fall=1 rise=50;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        server 127.0.0.1:$TEST_NGINX_FLOP_PORT;
    }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1; return 200 "a"; }
--- config
    location /t { proxy_pass http://backend; }
--- init
Test::LB::Misbehave::signal_nginx_later('HUP', 2);
--- ssi: sleep*7 | t*4
--- request eval
["GET /page.html", ("GET /t") x 6]
--- response_body eval
["|aaaa", ("a") x 6]
--- grep_error_log eval: qr/in upstream "[^"]+" is (?:up|down) after .*/
--- grep_error_log_out
in upstream "backend" is down after 1 failed check(s): HTTP 500
--- error_log
reconfiguring
--- workers_after: 2
--- no_error_log
[error]
--- timeout: 10
