# lb_keepalive: idle connections cached per peer.
use lib 't/lib';
use Test::Nginx::LB 'no_plan';

repeat_each(1);
no_shuffle();
run_tests();

__DATA__

=== TEST 1: connections are reused: the backend sees fewer connections than requests
--- http_config
    upstream backend {
        lb_upstream;
        lb_keepalive 4;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
    }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1; return 200 "$connection_requests"; }
--- config
    location /t {
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_pass http://backend;
    }
--- request eval
[("GET /t") x 4]
--- response_body eval
["1", "2", "3", "4"]



=== TEST 2: a connection of peer a is never handed to peer b
Each peer answers with its letter and the number of requests its connection has served; the
letters must follow the balancer's 2:1 order (a b a ...), and each peer's count must climb by
one: a connection of a given to b, or the other way round, would break either.
--- http_config
    upstream backend {
        lb_upstream;
        lb_keepalive 2;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1 weight=2;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
    }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1; return 200 "a $connection_requests"; }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2; return 200 "b $connection_requests"; }
--- config
    location /t {
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        lb_add_header X-Peer $upstream_addr;
        proxy_pass http://backend;
    }
--- request eval
[("GET /t") x 9]
--- response_body eval
["a 1", "b 1", "a 2", "a 3", "b 2", "a 4", "a 5", "b 3", "a 6"]



=== TEST 3: requests= closes a connection after that many requests
--- http_config
    upstream backend {
        lb_upstream;
        lb_keepalive 4 requests=2;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
    }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1; return 200 "$connection_requests"; }
--- config
    location /t {
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_pass http://backend;
    }
--- request eval
[("GET /t") x 5]
--- response_body eval
["1", "2", "1", "2", "1"]



=== TEST 4: HTTP/1.0 to the backend: no reuse (as with nginx's keepalive)
--- http_config
    upstream backend {
        lb_upstream;
        lb_keepalive 4;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
    }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1; return 200 "$connection_requests"; }
--- config
    location /t { proxy_pass http://backend; }
--- request eval
[("GET /t") x 3]
--- response_body eval
["1", "1", "1"]



=== TEST 5: a failed attempt's connection is not kept; retries go to the other peer
--- http_config
    upstream backend {
        lb_upstream;
        lb_keepalive 4;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1 max_fails=0;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2 max_fails=0;
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        location / { return 502; }
    }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2; return 200 "b $connection_requests"; }
--- config
    location /t {
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_next_upstream error http_502;
        proxy_pass http://backend;
    }
--- request eval
[("GET /t") x 4]
--- response_body eval
["b 1", "b 2", "b 3", "b 4"]



=== TEST 6: lb_keepalive with nginx's keepalive in the same upstream is refused
--- http_config
    upstream u { lb_upstream; lb_keepalive 4; keepalive 4; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log eval
qr/\[emerg\] .*lb_keepalive: upstream "u" also has "keepalive"/



=== TEST 7: bad arguments
--- http_config
    upstream u { lb_upstream; lb_keepalive 0; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log eval
qr/\[emerg\] .*lb_keepalive: invalid number of connections "0"/



=== TEST 8: unknown parameter
--- http_config
    upstream u { lb_upstream; lb_keepalive 4 idle=5s; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log eval
qr/\[emerg\] .*lb_keepalive: unknown parameter "idle"/



=== TEST 9: lb_keepalive without lb_upstream
--- http_config
    upstream u { lb_keepalive 4; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log eval
qr/\[emerg\] .*lb_keepalive: upstream "u" has "lb_keepalive" but no "lb_upstream"/
