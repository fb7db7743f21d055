# The module's debug lines: with `error_log ... debug` in an nginx built --with-debug
# (Debian's: t/debian/ runs this file against /usr/sbin/nginx), the module logs its decisions
# as nginx's own balancers do: the peer chosen and why, the outcome of each attempt, idle
# connections taken and kept, probes started, answered and judged, lb_api requests. In an
# nginx built without --with-debug (the vendored 1.28) none of that is compiled in, and the
# same blocks check that no such line appears.
#
# Each block makes ONE client request (an SSI page where several are needed, see
# t/lib/Test/LB/SSIPage.pm), so the logs are checked once, after everything.
#
# Runs under our Test::Nginx::LB::Runner and the real Test::Nginx::Socket.

use strict;
use warnings;

use lib 't/lib';
use Test::Nginx::LB 'no_plan';
use Test::LB::SSIPage;

our $Debug;

BEGIN {
    my $bin = $ENV{TEST_NGINX_BINARY} || 'nginx';
    my $v = `'$bin' -V 2>&1`;
    die "cannot run $bin -V\n" if $? != 0;
    $Debug = $v =~ /--with-debug\b/ ? 1 : 0;
}

use_ssi_page();

repeat_each(1);
no_shuffle();
check_accum_error_log();
run_tests();

__DATA__

=== TEST 1: round_robin with lb_keepalive: each pick, each outcome, idle connections missed, kept and used
Weights 2 and 1: a, b, a. The third request finds the connection the first one left idle.
--- log_level: debug
--- http_config
    upstream backend {
        lb_upstream;
        lb_keepalive 4;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1 weight=2;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
    }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1; return 200 "a"; }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2; return 200 "b"; }
--- config
    location /t {
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_pass http://backend;
    }
--- ssi: t*3
--- response_body chomp
aba
--- grep_error_log eval: qr/lb: (?:get|free) \w+ peer|lb: keepalive: \w+ \w+/
--- grep_error_log_out eval
$main::Debug ? "lb: get round_robin peer
lb: keepalive: no idle
lb: free round_robin peer
lb: keepalive: keeping idle
lb: get round_robin peer
lb: keepalive: no idle
lb: free round_robin peer
lb: keepalive: keeping idle
lb: get round_robin peer
lb: keepalive: using idle
lb: free round_robin peer
lb: keepalive: keeping idle
" : ""
--- error_log eval
$main::Debug ? [
qr/\[debug\] .*lb: get round_robin peer, try: 2, peer 127\.0\.0\.1:\d+ in upstream "backend" \(primary, weight 2, 1 active over all workers, response time none yet\)/,
qr/\[debug\] .*lb: free round_robin peer, try: 2, peer 127\.0\.0\.1:\d+ in upstream "backend": ok, status 200, \d+ ms$/,
qr/\[debug\] .*lb: keepalive: no idle connection to peer 127\.0\.0\.1:\d+, connecting$/,
qr/\[debug\] .*lb: keepalive: keeping idle connection 0x[0-9a-f]+ to peer 127\.0\.0\.1:\d+$/,
qr/\[debug\] .*lb: keepalive: using idle connection 0x[0-9a-f]+ to peer 127\.0\.0\.1:\d+$/,
] : [qr/lb: upstream "backend": method round_robin/]
--- no_error_log eval
$main::Debug ? ["[error]"] : ["lb: get", "lb: free", "lb: keepalive:", "[debug]"]



=== TEST 2: least_conn: a failed attempt, then the retry on the other peer
The first peer refuses connections: its attempt fails (status 0), the retry goes to the second.
--- log_level: debug
--- http_config
    upstream backend {
        lb_upstream least_conn;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1 max_fails=0;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2 max_fails=0;
    }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2; return 200 "b"; }
--- config
    location /t { proxy_pass http://backend; }
--- ssi: t*2
--- response_body chomp
bb
--- error_log eval
$main::Debug ? [
qr/\[debug\] .*lb: get least_conn peer, try: 2, peer 127\.0\.0\.1:\d+ in upstream "backend" \(primary, weight 1, 1 active over all workers/,
qr/\[debug\] .*lb: free least_conn peer, try: 2, peer 127\.0\.0\.1:\d+ in upstream "backend": failed, status 0, \d+ ms$/,
qr/\[debug\] .*lb: get least_conn peer, try: 1, peer 127\.0\.0\.1:\d+ in upstream "backend"/,
qr/\[debug\] .*lb: free least_conn peer, try: 1, peer 127\.0\.0\.1:\d+ in upstream "backend": ok, status 200/,
] : [qr/lb: upstream "backend": method least_conn/]
--- no_error_log eval
$main::Debug ? ["lb: keepalive:"] : ["lb: get", "lb: free", "[debug]"]



=== TEST 3: p2c: the pick shows the response-time average it compared
--- log_level: debug
--- http_config
    upstream backend {
        lb_upstream p2c;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
    }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1; return 200 "a"; }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2; return 200 "a"; }
--- config
    location /t { proxy_pass http://backend; }
--- ssi: t*6
--- response_body chomp
aaaaaa
--- error_log eval
$main::Debug ? [
qr/\[debug\] .*lb: get p2c peer, try: 2, peer 127\.0\.0\.1:\d+ in upstream "backend" \(primary, weight 1, 1 active over all workers, response time none yet\)$/,
qr/\[debug\] .*lb: get p2c peer, try: 2, peer 127\.0\.0\.1:\d+ in upstream "backend" \(primary, weight 1, 1 active over all workers, response time \d+us\)$/,
] : [qr/lb: upstream "backend": method p2c/]
--- no_error_log eval
$main::Debug ? ["[error]"] : ["lb: get", "[debug]"]



=== TEST 4: lb_check: probes started, answered and judged, on a new then a kept connection
--- log_level: debug
--- http_config
    upstream backend {
        lb_upstream;
        lb_check type=http uri=/health interval=200ms rise=1 fall=1;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        location /health { return 200 "ok"; }
        location / { return 200 "a"; }
    }
--- config
    location /t { proxy_pass http://backend; }
--- ssi: sleep*3 | t*1
--- response_body chomp
|a
--- error_log eval
$main::Debug ? [
qr/\[debug\] .*lb: probe of peer 127\.0\.0\.1:\d+ in upstream "backend" started \(type=http, new connection\)$/,
qr/\[debug\] .*lb: probe of peer 127\.0\.0\.1:\d+ in upstream "backend" started \(type=http, kept connection\)$/,
qr/\[debug\] .*lb: probe of peer 127\.0\.0\.1:\d+ in upstream "backend" answered: status 200, 2 body byte\(s\)$/,
qr/\[debug\] .*lb: probe of peer 127\.0\.0\.1:\d+ in upstream "backend" answered: status 200, 2 body byte\(s\), on a kept connection$/,
qr/\[debug\] .*lb: probe of peer 127\.0\.0\.1:\d+ in upstream "backend" judged: passed; peer up, 1 pass\(es\), 0 failure\(s\) in a row \(rise=1, fall=1\)/,
] : [qr/lb: upstream "backend": method round_robin, 1 peers/]
--- no_error_log eval
$main::Debug ? ["[error]"] : ["lb: probe", "[debug]"]
--- timeout: 6



=== TEST 5: lb_api: a change, with its answer
--- log_level: debug
--- http_config
    upstream backend {
        zone backend 64k;
        lb_upstream;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
    }
--- config
    location /lb-api/ { lb_api write=on; }
--- request
POST /lb-api/upstreams/backend/peers
{"address": "127.0.0.1:1", "weight": 2}
--- error_code: 201
--- error_log eval
$main::Debug ? [
qr/\[debug\] .*lb: api: POST \/lb-api\/upstreams\/backend\/peers \(39 byte body\): 201$/,
qr/\[notice\] .*lb: api: /,
] : [qr/\[notice\] .*lb: api: /]
--- no_error_log eval
$main::Debug ? ["[error]"] : ["lb: api: POST", "[debug]"]
