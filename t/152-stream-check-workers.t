# lb_check in stream {} upstreams with two workers and a master: one probe per peer per
# interval in total, and health kept across a reload (as t/041 for http).
#
#   --- probe_count: 10 1 2     the first response's body is a list of "PORT MSEC" lines (the
#                               probed stream servers' access log); for each PORT, the probes
#                               within 2 s of its first one must number 10 ± 1
use strict;
use warnings;

use lib 't/lib';
use Test::Nginx::LB 'no_plan';
use Test::LB::Misbehave ();
use Test::LB::SSIPage;

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
    is(scalar(keys %at), 2, "$name - probes of both peers were logged") or diag("body: $body");
    for my $port (sort keys %at) {
        my @t = sort { $a <=> $b } @{ $at{$port} };
        my $n = grep { $_ < $t[0] + $window } @t;
        ok(abs($n - $want) <= $slack,
           "$name - port $port: $n probes within ${window}s (want $want ± $slack)")
            or diag("probe times: @t");
    }
});

workers(2);
master_on();
repeat_each(1);
no_shuffle();
check_accum_error_log();
run_tests();

__DATA__

=== TEST 1: two workers, interval=200ms: each peer sees 10 ± 1 TCP probes in 2 s
The probed peers are stream servers that log each connection. The page waits 3 s, then
shows that log.
--- stream_config
    log_format probe '$server_port $msec';
    upstream backend {
        lb_upstream;
        lb_check type=tcp interval=200ms;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
        access_log logs/probe.log probe;
        return "x";
    }
--- stream_server_config
        proxy_pass backend;
--- config
    location /t { return 204; }
--- ssi: sleep*6 | logs/probe.log
--- response_body_like chomp
\A\|(?:\d+ \d+\.\d+\n)+\z
--- probe_count: 10 1 2
--- no_error_log
is down after
[error]
--- timeout: 10



=== TEST 2: a reload keeps a dead peer out of rotation
Port 1 refuses connections: with fall=1 the first probe takes it out (first probes are spread
over a quarter interval from the start: within 2.5 s), and the next is due 10 s later (the due
time is shared, so the new workers wait for it too). max_fails=0, so only its health keeps
connections away from it. The master reloads at 3 s (--- init), after that first probe; the
connections after the page (4 s) are made by the new workers, which still see the dead peer
down: were its health lost, default=up would send them to it ("connect() failed").
--- stream_config
    upstream backend {
        lb_upstream;
        lb_check type=tcp interval=10s fall=1 rise=1;
        server 127.0.0.1:1 max_fails=0;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2 max_fails=0;
    }
--- stream_server_config
        proxy_pass backend;
--- http_config
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2; return 200 "b"; }
--- config
    location /t { proxy_pass http://127.0.0.1:$TEST_NGINX_STREAM_PORT; }
--- init
Test::LB::Misbehave::signal_nginx_later('HUP', 3);
--- ssi: sleep*8
--- request eval
["GET /page.html", ("GET /t") x 6]
--- response_body_like eval
["", ("b") x 6]
--- error_log
lb: peer 127.0.0.1:1 in stream upstream "backend" is down after 1 failed check(s): connect failed (connection refused)
--- no_error_log
connect() failed
--- timeout: 10
