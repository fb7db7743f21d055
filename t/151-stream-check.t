# lb_check in stream {} upstreams: the probes of http upstreams, for TCP/UDP peers.
use lib 't/lib';
use Test::Nginx::LB 'no_plan';

repeat_each(1);
no_shuffle();
check_accum_error_log();
run_tests();

__DATA__

=== TEST 1: a dead peer is kept out by a TCP check: no connection ever goes to it
max_fails=0: only the check can keep the dead peer (port 1 refuses connections) out of the
rotation; fall=1: its first probe takes it out, before the first connection.
--- stream_config
    upstream backend {
        lb_upstream;
        lb_check type=tcp interval=100ms timeout=100ms rise=1 fall=1;
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
Time::HiRes::sleep(0.5);
--- request eval
[("GET /t") x 6]
--- response_body eval
[split //, "bbbbbb"]
--- error_log
lb: stream upstream "backend": method round_robin, 2 peers (0 backup, 0 down), checks tcp every 100ms (timeout 100ms, rise 1, fall 1)
lb: peer 127.0.0.1:1 in stream upstream "backend" is down after 1 failed check(s): connect failed (connection refused)
--- no_error_log
connect() failed



=== TEST 2: the status page shows the stream upstream and its checks
--- stream_config
    upstream backend {
        lb_upstream;
        lb_check type=tcp interval=100ms timeout=100ms rise=1 fall=1;
        server 127.0.0.1:1;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
    }
--- http_config
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2; return 200 "b"; }
--- config
    location /status { lb_status; }
--- init
Time::HiRes::sleep(0.5);
--- request
GET /status
--- response_body_like
"name": "backend",.*"checks": \{\s*"type": "tcp",.*"address": "127\.0\.0\.1:1",.*"state": "unhealthy",.*"address": "127\.0\.0\.1:\d+",.*"state": "up",



=== TEST 3: one status page shows both kinds: "kind" in JSON, the kind label in Prometheus
An http and a stream upstream of the same name: two upstreams, two records for one address.
--- stream_config
    upstream backend {
        lb_upstream;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
    }
--- http_config
    upstream backend {
        lb_upstream;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
    }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2; return 200 "b"; }
--- config
    location /status { lb_status; }
--- request eval
["GET /status", "GET /status?format=prometheus", "GET /status?format=html"]
--- response_body_like eval
[qr/\A(?=.*"name": "backend",\s*"kind": "http",)(?=.*"name": "backend",\s*"kind": "stream",)/s,
 qr/\A(?=.*^nginx_lb_peer_weight\{upstream="backend",kind="http",peer="127\.0\.0\.1:\d+"\} 1$)(?=.*^nginx_lb_peer_weight\{upstream="backend",kind="stream",peer="127\.0\.0\.1:\d+"\} 1$)/ms,
 qr/\A(?=.*<h2>upstream backend<\/h2>)(?=.*<h2>stream upstream backend<\/h2>)/s]



=== TEST 4: lb_panic and lb_slow_start in a stream upstream
The check takes the dead peer out: 1 of 2 healthy is under 60%, so connections go to both
(the dead one refuses, proxy_next_upstream moves on to b).
--- stream_config
    upstream backend {
        lb_upstream;
        lb_check type=tcp interval=100ms timeout=100ms rise=1 fall=1;
        lb_panic 60%;
        lb_slow_start 10s;
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
Time::HiRes::sleep(0.5);
--- request eval
[("GET /t") x 4]
--- response_body eval
[split //, "bbbb"]
--- error_log
lb: stream upstream "backend" in panic mode: 1 of 2 peers healthy (lb_panic 60%): requests go to all of them
connect() failed
