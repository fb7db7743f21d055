# lb_upstream in stream {} upstreams (TCP): the balancing methods over nginx's stream
# server lines, weights, down, backup, proxy_next_upstream, and the configuration errors.
#
# Most blocks reach the stream proxy through http: a request to /t is proxied to the stream
# server ($TEST_NGINX_STREAM_PORT, one TCP connection per request), which balances it over
# http servers that answer their own letter. That shows which peer each connection got,
# request by request, under both our runner and the real Test::Nginx::Socket. The blocks
# with --- stream_request (a raw TCP exchange) need our runner: the real engine has it only
# through Test::Nginx::Socket::Lua::Stream (lua-nginx-module), so they are skipped there.
use lib 't/lib';
use Test::Nginx::LB 'no_plan';

repeat_each(1);
no_shuffle();
check_accum_error_log();
run_tests();

__DATA__

=== TEST 1: weights 2/1 over TCP give nginx's smooth order a b a, twice
--- stream_config
    upstream backend {
        lb_upstream;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1 weight=2;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
    }
--- stream_server_config
        proxy_pass backend;
--- http_config
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1; return 200 "a"; }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2; return 200 "b"; }
--- config
    location /t { proxy_pass http://127.0.0.1:$TEST_NGINX_STREAM_PORT; }
--- request eval
[("GET /t") x 6]
--- response_body eval
[split //, "abaaba"]
--- error_log
lb: stream upstream "backend": method round_robin, 2 peers (0 backup, 0 down), no active checks
--- no_error_log
[error]



=== TEST 2: a down peer is never chosen, a backup only when no primary can be
--- stream_config
    upstream backend {
        lb_upstream least_conn;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1 down;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_3 backup;
    }
--- stream_server_config
        proxy_pass backend;
--- http_config
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1; return 200 "a"; }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2; return 200 "b"; }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_3; return 200 "c"; }
--- config
    location /t { proxy_pass http://127.0.0.1:$TEST_NGINX_STREAM_PORT; }
--- request eval
[("GET /t") x 4]
--- response_body eval
[split //, "bbbb"]
--- error_log
lb: stream upstream "backend": method least_conn, 3 peers (1 backup, 1 down)



=== TEST 3: a refused connection is retried on the next peer (proxy_next_upstream) and counted by max_fails
Port 1 of the loopback refuses connections. Round-robin tries it first; with max_fails=1 it is
made unavailable then, and every connection after that goes straight to b.
--- stream_config
    upstream backend {
        lb_upstream;
        server 127.0.0.1:1 max_fails=1 fail_timeout=30s;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
    }
--- stream_server_config
        proxy_pass backend;
        proxy_connect_timeout 1s;
--- http_config
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2; return 200 "b"; }
--- config
    location /t { proxy_pass http://127.0.0.1:$TEST_NGINX_STREAM_PORT; }
--- request eval
[("GET /t") x 6]
--- response_body eval
[split //, "bbbbbb"]
--- grep_error_log eval: qr/lb: peer 127\.0\.0\.1:1 in stream upstream "backend" is unavailable for 30s after 1 failure\(s\)|connect\(\) failed/
--- grep_error_log_out eval
[("connect() failed\nlb: peer 127.0.0.1:1 in stream upstream \"backend\" is unavailable for 30s after 1 failure(s)\n") x 6]



=== TEST 4: no peer left: the client's connection is closed, and the log says why
--- stream_config
    upstream backend {
        lb_upstream;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1 down;
    }
--- stream_server_config
        proxy_pass backend;
--- skip_eval: 3: $Test::Nginx::LB::Engine ne 'Test::Nginx::LB::Runner'
--- stream_request
hello
--- stream_response:
--- error_log
lb: no available peer in stream upstream "backend" (1 peers: 1 down
no live upstreams



=== TEST 5: a stream server that answers directly (TCP echo style backends through return)
--- stream_config
    upstream backend {
        lb_upstream;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
    }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1; return "pong\n"; }
--- stream_server_config
        proxy_pass backend;
--- skip_eval: 2: $Test::Nginx::LB::Engine ne 'Test::Nginx::LB::Runner'
--- stream_request
ping
--- stream_response
pong
--- no_error_log
[error]



=== TEST 6: lb_upstream given twice in a stream upstream
--- stream_config
    upstream u { lb_upstream; lb_upstream; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log
"lb_upstream" directive is duplicate



=== TEST 7: least_conn after lb_upstream in a stream upstream
--- stream_config
    upstream u { lb_upstream; least_conn; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log
lb_upstream: stream upstream "u" also uses another load balancing method



=== TEST 8: hash before lb_upstream in a stream upstream
--- stream_config
    upstream u { hash $remote_addr; lb_upstream; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log
lb_upstream: stream upstream "u" already has a load balancing method



=== TEST 9: lb_check without lb_upstream in a stream upstream
--- stream_config
    upstream u { lb_check type=tcp; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log
lb_check: stream upstream "u" has "lb_check" but no "lb_upstream"



=== TEST 10: an HTTP check in a stream upstream
--- stream_config
    upstream u { lb_upstream; lb_check type=http uri=/; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log
lb_check: "type=http" is not allowed in a stream upstream



=== TEST 11: max_added in a stream upstream without zone (lb_api's peers live in the zone)
--- stream_config
    upstream u { lb_upstream max_added=4; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log
lb_upstream: "max_added" in stream upstream "u" needs the "zone" directive



=== TEST 12: lb_keepalive is http only
--- stream_config
    upstream u { lb_upstream; lb_keepalive 4; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log
"lb_keepalive" directive is not allowed here



=== TEST 13: an unknown method
--- stream_config
    upstream u { lb_upstream fastest; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log
lb_upstream: unknown balancing method "fastest"



=== TEST 14: an nginx whose stream is a module of its own (Debian) without it: our module loads, and nginx names the stream block
Only where TEST_NGINX_STREAM_MODULE says stream is a separate module (the Debian run);
the stream block is written here directly, so that the runner does not load that module.
--- skip_eval: 2: !$ENV{TEST_NGINX_STREAM_MODULE}
--- main_config
    stream { upstream u { lb_upstream; server 127.0.0.1:1; } }
--- config
--- must_die
--- error_log
unknown directive "stream"



=== TEST 15: $lb_upstream, $lb_peer and $lb_peer_state in a stream log_format
--- stream_config
    log_format lb '$lb_upstream $lb_peer $lb_peer_state';
    upstream backend {
        lb_upstream;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
    }
--- stream_server_config
        proxy_pass backend;
        access_log logs/stream.log lb;
--- http_config
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1; return 200 "a"; }
--- config
    location /t { proxy_pass http://127.0.0.1:$TEST_NGINX_STREAM_PORT; }
    location = /log { alias $TEST_NGINX_SERVER_ROOT/logs/stream.log; }
--- request eval
["GET /t", "GET /log"]
--- wait: 0.3
--- response_body_like eval
["a", qr{\Abackend 127\.0\.0\.1:\d+ up\n\z}]



=== TEST 16: lb_outlier counts connection errors of stream peers (there is no status to count)
max_fails=0: only the outlier rule can take the dead peer (port 1) out. Round-robin tries it
first (and again after nginx's walk let its lowered weight recover); after 2 refused
connections in a row it is ejected, and every later connection goes straight to b
(proxy_next_upstream retried the two that failed).
--- stream_config
    upstream backend {
        lb_upstream;
        lb_outlier consecutive_errors=2 base_ejection=30s max_percent=50;
        server 127.0.0.1:1 max_fails=0;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2 max_fails=0;
    }
--- stream_server_config
        proxy_pass backend;
--- http_config
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2; return 200 "b"; }
--- config
    location /t { proxy_pass http://127.0.0.1:$TEST_NGINX_STREAM_PORT; }
--- request eval
[("GET /t") x 8]
--- response_body eval
[split //, "bbbbbbbb"]
--- grep_error_log eval: qr/lb: peer 127\.0\.0\.1:1 in stream upstream "backend" ejected for 30s after 2 connection errors or timeouts in a row \(ejection 1\)|connect\(\) failed/
--- grep_error_log_out eval
# Checked after each request (by the real engine; ours sees the whole block's log): on the way,
# a prefix of the end state; at the end, exactly two refused connections and one ejection.
[(qr/\A(?:connect\(\) failed\n){1,2}(?:lb: peer [^\n]* ejected [^\n]*\n)?\z/) x 7,
 "connect() failed\nconnect() failed\nlb: peer 127.0.0.1:1 in stream upstream \"backend\" ejected for 30s after 2 connection errors or timeouts in a row (ejection 1)\n"]



=== TEST 17: max_resolved in a stream upstream without a server with "resolve"
--- stream_config
    upstream u { lb_upstream max_resolved=8; zone u 64k; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log
lb_upstream: "max_resolved" in stream upstream "u" needs a server with "resolve"
