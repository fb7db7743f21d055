# Parity with nginx's own stream round-robin balancer, one worker: every block runs twice, once
# with a plain stream `upstream {}` ("stock") and once with `lb_upstream;` as its first line,
# and both runs assert what stock nginx 1.28 does (the expected values were taken from the
# stock runs). See t/lib/Test/LB/Parity.pm for $TEST_NGINX_LB, --- log_count, /sleep and /e502.
#
# A request to /t is proxied to the stream server (one TCP connection per request), which
# balances it over http servers that answer their own letter; a peer on a port nobody listens
# on refuses the connection (a failed attempt: "connect() failed"). When the stream proxy
# finds no peer, or gives up, it closes the connection and the http front answers "E502".
use lib 't/lib';
use Test::Nginx::LB 'no_plan';
use Test::LB::Parity;

repeat_each(1);
no_shuffle();
check_accum_error_log();
use_parity();
run_tests();

__DATA__

=== TEST 1: weights 3/2/1: nginx's smooth order, twice over
--- stream_config
    upstream backend {
        $TEST_NGINX_LB
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1 weight=3;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2 weight=2;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_3;
    }
--- stream_server_config
        proxy_pass backend;
--- http_config
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1; return 200 "a"; }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2; return 200 "b"; }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_3; return 200 "c"; }
--- config
    location /t { error_page 502 /e502; proxy_pass http://127.0.0.1:$TEST_NGINX_STREAM_PORT; }
--- request eval
[("GET /t") x 12]
--- response_body eval
[split //, "abacbaabacba"]
--- no_error_log
[error]



=== TEST 2: a refusing peer among three: retried on the next, its effective weight lowered, out after max_fails=2
--- stream_config
    upstream backend {
        $TEST_NGINX_LB
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1 weight=2 max_fails=2 fail_timeout=30s;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2 weight=2;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_3;
    }
--- stream_server_config
        proxy_pass backend;
        proxy_connect_timeout 1s;
--- http_config
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2; return 200 "b"; }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_3; return 200 "c"; }
--- config
    location /t { error_page 502 /e502; proxy_pass http://127.0.0.1:$TEST_NGINX_STREAM_PORT; }
--- request eval
[("GET /t") x 10]
--- response_body eval
[split //, "bbcbbcbbcb"]
--- log_count
2 connect() failed
0 no live upstreams



=== TEST 3: every primary refuses: the backup takes the connections, then alone while they are out
--- stream_config
    upstream backend {
        $TEST_NGINX_LB
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1 max_fails=1 fail_timeout=30s;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2 max_fails=1 fail_timeout=30s;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_3 backup;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_4 backup;
    }
--- stream_server_config
        proxy_pass backend;
        proxy_connect_timeout 1s;
--- http_config
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_3; return 200 "c"; }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_4; return 200 "d"; }
--- config
    location /t { error_page 502 /e502; proxy_pass http://127.0.0.1:$TEST_NGINX_STREAM_PORT; }
--- request eval
[("GET /t") x 6]
--- response_body eval
[split //, "cdcdcd"]
--- log_count
2 connect() failed
0 no live upstreams



=== TEST 4: proxy_next_upstream off: a refused connection is not retried, the client's is closed
--- stream_config
    upstream backend {
        $TEST_NGINX_LB
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1 max_fails=0;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
    }
--- stream_server_config
        proxy_pass backend;
        proxy_next_upstream off;
        proxy_connect_timeout 1s;
--- http_config
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2; return 200 "b"; }
--- config
    location /t { error_page 502 /e502; proxy_pass http://127.0.0.1:$TEST_NGINX_STREAM_PORT; }
--- request eval
[("GET /t") x 6]
--- error_code eval
[502, 200, 502, 200, 502, 200]
--- response_body eval
["E502", "b", "E502", "b", "E502", "b"]
--- log_count
3 connect() failed
0 no live upstreams



=== TEST 5: proxy_next_upstream_tries 2 over three refusing peers and one that answers
--- stream_config
    upstream backend {
        $TEST_NGINX_LB
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1 max_fails=0;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2 max_fails=0;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_3 max_fails=0;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_4;
    }
--- stream_server_config
        proxy_pass backend;
        proxy_next_upstream_tries 2;
        proxy_connect_timeout 1s;
--- http_config
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_4; return 200 "d"; }
--- config
    location /t { error_page 502 /e502; proxy_pass http://127.0.0.1:$TEST_NGINX_STREAM_PORT; }
--- request eval
[("GET /t") x 8]
--- error_code eval
[502, 200, 200, 502, 200, 502, 200, 502]
--- response_body eval
["E502", "d", "d", "E502", "d", "E502", "d", "E502"]
--- log_count
11 connect() failed
0 no live upstreams



=== TEST 6: fail_timeout=1s: the failed peer is tried again once it has passed, when its turn comes
Stock nginx counts fail_timeout in whole seconds (ngx_time()), so a peer that failed is out for
1 to 2 s there: the pause (6 x /sleep) is 2.5 s. Its effective weight dropped to 0 with the
failure and grows back by one per pick, so its turn comes with the third connection after it.
--- stream_config
    upstream backend {
        $TEST_NGINX_LB
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1 max_fails=1 fail_timeout=1s;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
    }
--- stream_server_config
        proxy_pass backend;
        proxy_connect_timeout 1s;
--- http_config
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2; return 200 "b"; }
--- config
    location /t { error_page 502 /e502; proxy_pass http://127.0.0.1:$TEST_NGINX_STREAM_PORT; }
--- request eval
[("GET /t") x 3, ("GET /sleep") x 6, ("GET /t") x 3]
--- response_body eval
[("b") x 3, ("z") x 6, ("b") x 3]
--- log_count
2 connect() failed
0 no live upstreams
