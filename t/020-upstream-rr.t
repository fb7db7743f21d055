# lb_upstream: smooth weighted round-robin over nginx's own server lines, one worker.
use lib 't/lib';
use Test::Nginx::LB 'no_plan';

BEGIN {
    system('t/gen-certs.sh') == 0 or die "t/gen-certs.sh failed\n";
    $ENV{TEST_NGINX_CERT_DIR} = Cwd::abs_path('t/certs');
}

repeat_each(1);
no_shuffle();
# Log checks see the whole block's log, so "exactly once" holds after every request.
check_accum_error_log();
run_tests();

__DATA__

=== TEST 1: weights 5/1/1 give nginx's smooth order a a b a c a a, three times over
--- http_config
    upstream backend {
        lb_upstream;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1 weight=5;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_3;
    }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1; return 200 "a"; }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2; return 200 "b"; }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_3; return 200 "c"; }
--- config
    location /t { proxy_pass http://backend; }
--- request eval
[("GET /t") x 21]
--- response_body eval
[split //, "aabacaa" x 3]
--- no_error_log
[error]



=== TEST 2: lb_add_header shows the peer that served each request
--- http_config
    upstream backend {
        lb_upstream round_robin;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1 weight=2;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
    }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1; return 200 "a"; }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2; return 200 "b"; }
--- config
    location /t { lb_add_header X-Peer $upstream_addr; proxy_pass http://backend; }
--- request eval
[("GET /t") x 3]
--- response_headers_like eval
[("X-Peer: 127\\.0\\.0\\.1:\\d+") x 3]
--- response_body eval
["a", "b", "a"]



=== TEST 3: a down peer is never chosen
--- http_config
    upstream backend {
        lb_upstream;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2 down;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_3 weight=2;
    }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1; return 200 "a"; }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2; return 200 "b"; }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_3; return 200 "c"; }
--- config
    location /t { proxy_pass http://backend; }
--- request eval
[("GET /t") x 12]
--- response_body eval
[split //, "cac" x 4]



=== TEST 4: backup serves only while every primary is down
--- http_config
    upstream backend {
        lb_upstream;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1 down;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2 down;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_3 backup;
    }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1; return 200 "a"; }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2; return 200 "b"; }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_3; return 200 "backup"; }
--- config
    location /t { proxy_pass http://backend; }
--- request eval
[("GET /t") x 3]
--- response_body eval
[("backup") x 3]



=== TEST 5: backup is not used while a primary is available
--- http_config
    upstream backend {
        lb_upstream;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_3 backup;
    }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1; return 200 "a"; }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_3; return 200 "backup"; }
--- config
    location /t { proxy_pass http://backend; }
--- request eval
[("GET /t") x 4]
--- response_body eval
[("a") x 4]



=== TEST 6: backup takes over while the primary has failed, and is left when the primary is back
A request with ?fail=1 makes the primary answer 502, which counts as a failure
(max_fails=1 fail_timeout=1s); the backup then serves until fail_timeout has passed.
/sleep waits: limit_req delays each request after the first by a second (it needs a
static file: `return` would answer before limit_req runs).
--- http_config
    limit_req_zone $server_port zone=pace:1m rate=1r/s;
    upstream backend {
        lb_upstream;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1 max_fails=1 fail_timeout=1s;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_3 backup;
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        location / {
            if ($arg_fail) { return 502; }
            return 200 "primary";
        }
    }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_3; return 200 "backup"; }
--- config
    location /t {
        proxy_next_upstream error timeout http_502;
        proxy_pass http://backend;
    }
    location /sleep { limit_req zone=pace burst=5; try_files /slept.txt =404; }
--- user_files
>>> slept.txt
slept
--- request eval
["GET /t", "GET /t?fail=1", "GET /t", "GET /sleep", "GET /sleep", "GET /sleep", "GET /t", "GET /t"]
--- response_body eval
["primary", "backup", "backup", "slept\n", "slept\n", "slept\n", "primary", "primary"]
--- timeout: 6



=== TEST 7: a dead peer is tried once, then skipped for fail_timeout; every client gets 200
--- http_config
    upstream backend {
        lb_upstream;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_4 max_fails=1 fail_timeout=10s;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
    }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1; return 200 "ok"; }
--- config
    location /t { proxy_pass http://backend; }
--- request eval
[("GET /t") x 8]
--- response_body eval
[("ok") x 8]
--- grep_error_log: connect() failed
--- grep_error_log_out
connect() failed



=== TEST 8: no available peer: 502 and an error-log line naming the upstream
Two SSI includes one after the other: the first fails on both dead peers, the second finds no
peer. (Two peers: an upstream's only peer is never made unavailable, see TEST 16.)
--- http_config
    upstream backend {
        lb_upstream;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_4 max_fails=1 fail_timeout=10s;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_5 max_fails=1 fail_timeout=10s;
    }
--- config
    location /page.html { ssi on; }
    location /u { proxy_pass http://backend; }
--- user_files
>>> page.html
<!--# include virtual="/u/1" wait="yes" -->|<!--# include virtual="/u/2" wait="yes" -->
--- request
GET /page.html
--- response_body_like chomp
^<html>.*502 Bad Gateway.*\|<html>.*502 Bad Gateway
--- error_log
connect() failed
lb: peer 127.0.0.1:
in upstream "backend" is unavailable for 10s after 1 failure(s)
lb: no available peer in upstream "backend" (2 peers: 0 down, 2 failed
no live upstreams



=== TEST 9: every peer configured down: 502 at once, no connection attempt
--- http_config
    upstream backend {
        lb_upstream;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1 down;
    }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1; return 200 "a"; }
--- config
    location /t { proxy_pass http://backend; }
--- request
GET /t
--- error_code: 502
--- error_log
lb: no available peer in upstream "backend" (1 peers: 1 down
--- no_error_log
connect() failed



=== TEST 10: max_conns=1 with zone: concurrent requests spread to the other peer, then 502
Three SSI includes run as concurrent subrequests; each backend answer is slowed by limit_rate.
With max_conns=1 the second goes to b although a has weight 5, and the third finds no peer.
--- http_config
    upstream backend {
        lb_upstream;
        zone backend 64k;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1 weight=5 max_conns=1;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2 max_conns=1;
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        root $TEST_NGINX_SERVER_ROOT/html;
        location / { limit_rate 1000; try_files /a.txt =404; }
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
        root $TEST_NGINX_SERVER_ROOT/html;
        location / { limit_rate 1000; try_files /b.txt =404; }
    }
--- config
    location /page.html { ssi on; }
    location /u { proxy_pass http://backend; }
--- user_files eval
[
  ["page.html" => qq{<!--# include virtual="/u/1" -->|<!--# include virtual="/u/2" -->|<!--# include virtual="/u/3" -->}],
  ["a.txt" => "a" x 3000],
  ["b.txt" => "b" x 3000],
]
--- request
GET /page.html
--- response_body_like chomp
^a{3000}\|b{3000}\|.*502 Bad Gateway
--- timeout: 8
--- error_log
lb: no available peer in upstream "backend" (2 peers: 0 down, 0 failed, 2 at max_conns



=== TEST 11: keepalive to the backend: connections are reused
--- http_config
    upstream backend {
        lb_upstream;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        keepalive 4;
    }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1; return 200 "$connection_requests"; }
--- config
    location /t {
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_pass http://backend;
    }
--- request eval
[("GET /t") x 3]
--- response_body eval
["1", "2", "3"]



=== TEST 12: HTTPS backend with proxy_ssl_verify against our CA
--- http_config
    upstream backend {
        lb_upstream;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1 ssl;
        ssl_certificate $TEST_NGINX_CERT_DIR/localhost.crt;
        ssl_certificate_key $TEST_NGINX_CERT_DIR/localhost.key;
        return 200 "secure $ssl_protocol";
    }
--- config
    location /t {
        proxy_ssl_verify on;
        proxy_ssl_trusted_certificate $TEST_NGINX_CERT_DIR/ca.crt;
        proxy_ssl_name localhost;
        proxy_pass https://backend;
    }
--- request eval
["GET /t", "GET /t"]
--- response_body_like eval
[qr/^secure TLSv1\.[23]$/, qr/^secure TLSv1\.[23]$/]



=== TEST 13: HTTPS backend with an untrusted certificate: proxy_ssl_verify is honoured (502)
--- http_config
    upstream backend {
        lb_upstream;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1 ssl;
        ssl_certificate $TEST_NGINX_CERT_DIR/untrusted.crt;
        ssl_certificate_key $TEST_NGINX_CERT_DIR/untrusted.key;
        return 200 "secure";
    }
--- config
    location /t {
        proxy_ssl_verify on;
        proxy_ssl_trusted_certificate $TEST_NGINX_CERT_DIR/ca.crt;
        proxy_ssl_name localhost;
        proxy_pass https://backend;
    }
--- request
GET /t
--- error_code: 502
--- error_log
upstream SSL certificate verify error



=== TEST 14: a hostname that resolves to an address works like an address
--- http_config
    upstream backend {
        lb_upstream;
        server localhost:$TEST_NGINX_RAND_PORT_1;
    }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1; return 200 "a"; }
--- config
    location /t { proxy_pass http://backend; }
--- request
GET /t
--- response_body: a



=== TEST 15: HTTPS backends: each peer resumes its own TLS session (proxy_ssl_session_reuse)
No keepalive, so every request makes a new TLS connection; from the second one to a peer on,
it resumes that peer's session ($ssl_session_reused is "r"). The two backends have separate
session ticket keys: a session handed to the wrong peer would not resume.
--- http_config
    upstream backend {
        lb_upstream;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1 ssl;
        ssl_certificate $TEST_NGINX_CERT_DIR/localhost.crt;
        ssl_certificate_key $TEST_NGINX_CERT_DIR/localhost.key;
        return 200 "a$ssl_session_reused";
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2 ssl;
        ssl_certificate $TEST_NGINX_CERT_DIR/localhost.crt;
        ssl_certificate_key $TEST_NGINX_CERT_DIR/localhost.key;
        return 200 "b$ssl_session_reused";
    }
--- config
    location /t {
        proxy_pass https://backend;
    }
--- request eval
["GET /t", "GET /t", "GET /t", "GET /t", "GET /t", "GET /t"]
--- response_body eval
["a.", "b.", "ar", "br", "ar", "br"]
--- no_error_log
[error]
[alert]



=== TEST 16: a single-server upstream is not locked out by one failed attempt (nginx's peers->single)
--- http_config
    upstream backend {
        lb_upstream;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1 max_fails=1 fail_timeout=10s;
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        location /t/fail { return 444; }
        location / { return 200 "ok"; }
    }
--- config
    location /t { proxy_pass http://backend; }
--- request eval
["GET /t/fail", "GET /t", "GET /t"]
--- error_code eval
[502, 200, 200]
--- response_body_like eval
[".*", "ok", "ok"]
--- no_error_log
is unavailable



=== TEST 17: the only non-down primary is treated as single too: one failure does not lock it out
--- http_config
    upstream backend {
        lb_upstream;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2 down;
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        location /t/fail { return 444; }
        location / { return 200 "ok"; }
    }
--- config
    location /t { proxy_pass http://backend; }
--- request eval
["GET /t/fail", "GET /t", "GET /t/fail", "GET /t"]
--- error_code eval
[502, 200, 502, 200]



=== TEST 18: with two peers a failure still takes the failed peer out for fail_timeout (unchanged)
--- http_config
    upstream backend {
        lb_upstream;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1 max_fails=1 fail_timeout=10s;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        location /t/fail { return 444; }
        location / { return 200 "a"; }
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
        location / { return 200 "b"; }
    }
--- config
    location /t { proxy_pass http://backend; proxy_next_upstream off; }
--- request eval
["GET /t/fail", "GET /t", "GET /t", "GET /t"]
--- error_code eval
[502, 200, 200, 200]
--- response_body_like eval
[".*", "b", "b", "b"]
--- error_log
is unavailable for 10s after 1 failure(s)
