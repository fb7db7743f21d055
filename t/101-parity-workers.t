# Parity with nginx's own round-robin balancer, two workers: the scenarios of t/100-parity.t
# where sharing state between workers matters. Every block runs once with a plain
# `upstream {}` ("stock") and once with `lb_upstream;` added (see t/lib/Test/LB/Parity.pm).
#
# Which worker accepts each client connection is up to the kernel, so:
#   * blocks with `zone` compare like for like: stock nginx then keeps fails, conns and the
#     round-robin weights in shared memory too;
#   * without `zone` stock nginx counts failures and max_conns per worker, lb_upstream over all
#     workers (README, lb_upstream: "Counted in shared memory over all workers", "at most N
#     connections at once over all workers (zone is not needed)"). Those blocks say "intended"
#     in their title and assert our documented behaviour for lb_upstream and only what is
#     certain for stock (its outcome depends on which worker took which connection).
#
# Concurrent requests that may land on either worker: a page's SSI includes of /hop/N, which
# proxies to our own port, i.e. a new client connection each.
use lib 't/lib';
use Test::Nginx::LB 'no_plan';
use Test::LB::Parity;

workers(2);
master_on();
repeat_each(1);
no_shuffle();
check_accum_error_log();
use_parity();
run_tests();

__DATA__

=== TEST 1: single server, two workers: down → 502, and the very next request after it is back succeeds
--- http_config
    upstream backend {
        $TEST_NGINX_LB
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        root html;
        location / { if (-f $document_root/up) { return 200 "a"; } return 444; }
    }
--- config
    location /t { error_page 502 /e502; proxy_pass http://backend; }
--- request eval
["GET /t", "GET /t", "GET /t", "GET /up", "GET /t", "GET /t", "GET /t"]
--- error_code eval
[502, 502, 502, 200, 200, 200, 200]
--- response_body eval
["E502", "E502", "E502", "x", "a", "a", "a"]
--- log_count
3 upstream prematurely closed connection
0 no live upstreams
--- no_error_log
upstream server temporarily disabled
is unavailable for
no available peer



=== TEST 2: all primaries failed, zone, two workers: the outage is seen by both workers until fail_timeout
--- http_config
    upstream backend {
        $TEST_NGINX_LB
        zone backend 64k;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1 max_fails=1 fail_timeout=1s;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2 max_fails=1 fail_timeout=1s;
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        root html;
        location / { if (-f $document_root/up) { return 200 "a"; } return 444; }
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
        root html;
        location / { if (-f $document_root/up) { return 200 "b"; } return 444; }
    }
--- config
    location /t { error_page 502 /e502; proxy_pass http://backend; }
--- request eval
["GET /t", "GET /t", "GET /t", "GET /t", "GET /up", "GET /t",
 "GET /sleep", "GET /sleep", "GET /sleep", "GET /sleep", "GET /sleep",
 "GET /t", "GET /t", "GET /t", "GET /t"]
--- error_code eval
[502, 502, 502, 502, 200, 502, 200, 200, 200, 200, 200, 200, 200, 200, 200]
--- response_body_like eval
["^E502\$", "^E502\$", "^E502\$", "^E502\$", "^x\$", "^E502\$", "^z\$", "^z\$", "^z\$", "^z\$",
 "^z\$", "^[ab]\$", "^[ab]\$", "^[ab]\$", "^[ab]\$"]
--- log_count@stock
2 upstream prematurely closed connection
2 upstream server temporarily disabled
4 no live upstreams
--- log_count@lb
2 upstream prematurely closed connection
2 is unavailable for 1s after 1 failure(s)
4 no live upstreams
4 lb: no available peer in upstream "backend" (2 peers: 0 down, 2 failed



=== TEST 3: a dead peer, zone, two workers: tried once in all, then skipped by both workers
--- http_config
    upstream backend {
        $TEST_NGINX_LB
        zone backend 64k;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_4 max_fails=1 fail_timeout=10s;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
    }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2; return 200 "b"; }
--- config
    location /t { proxy_pass http://backend; }
--- request eval
[("GET /t") x 12]
--- response_body eval
[("b") x 12]
--- log_count@stock
1 connect() failed
1 upstream server temporarily disabled
--- log_count@lb
1 connect() failed
1 is unavailable for 10s after 1 failure(s)



=== TEST 4: a dead peer, no zone, two workers: lb_upstream shares the failure over workers (intended)
Stock nginx without zone keeps fails per worker: each worker tries the dead peer once (1 or 2
connects, depending on where the 12 connections land); lb_upstream tries it once in all.
--- http_config
    upstream backend {
        $TEST_NGINX_LB
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_4 max_fails=1 fail_timeout=10s;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
    }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2; return 200 "b"; }
--- config
    location /t { proxy_pass http://backend; }
--- request eval
[("GET /t") x 12]
--- response_body eval
[("b") x 12]
--- log_count@stock
1-2 connect() failed
1-2 upstream server temporarily disabled
--- log_count@lb
1 connect() failed
1 is unavailable for 10s after 1 failure(s)



=== TEST 5: max_conns=1, zone, two workers: three concurrent connections get a, b and one 502
Each /hop/N is a new client connection (to either worker); the backends answer in about a
second (limit_rate). With zone, stock nginx counts conns over all workers, as lb_upstream does.
--- http_config
    upstream backend {
        $TEST_NGINX_LB
        zone backend 64k;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1 max_conns=1;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2 max_conns=1;
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        location / { root html; limit_rate 1000; try_files /a.txt =404; }
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
        location / { root html; limit_rate 1000; try_files /b.txt =404; }
    }
--- config
    location = /page.html { root html; ssi on; }
    location /hop/ { proxy_pass http://127.0.0.1:$TEST_NGINX_SERVER_PORT/u/; }
    location /u/ { error_page 502 /e502; proxy_pass http://backend; }
--- user_files eval
[
  ["page.html" => qq{<!--# include virtual="/hop/1" -->|<!--# include virtual="/hop/2" -->|<!--# include virtual="/hop/3" -->}],
  ["a.txt" => "a" x 3000],
  ["b.txt" => "b" x 3000],
]
--- request
GET /page.html
--- response_body_like eval
qr/^(?=(?:.*\|)?a{3000}(?:\||$))(?=(?:.*\|)?b{3000}(?:\||$))(?=(?:.*\|)?E502(?:\||$))(?:a{3000}|b{3000}|E502)(?:\|(?:a{3000}|b{3000}|E502)){2}$/s
--- timeout: 8
--- log_count
1 no live upstreams



=== TEST 6: max_conns=1, no zone, two workers: lb_upstream counts over all workers (intended)
Stock nginx without zone counts conns per worker: depending on which worker takes each of the
three connections, the third may also get a peer. (limit_rate counts whole seconds: 3000 bytes
at 1000/s take at least one second wherever in a second they start; at 2000/s they could be
over in a few ms, and on a busy machine the third hop then found a free peer.) lb_upstream counts over all workers (README:
"at most N connections at once over all workers (zone is not needed)"): always a, b and a 502.
--- http_config
    upstream backend {
        $TEST_NGINX_LB
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1 max_conns=1;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2 max_conns=1;
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        location / { root html; limit_rate 1000; try_files /a.txt =404; }
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
        location / { root html; limit_rate 1000; try_files /b.txt =404; }
    }
--- config
    location = /page.html { root html; ssi on; }
    location /hop/ { proxy_pass http://127.0.0.1:$TEST_NGINX_SERVER_PORT/u/; }
    location /u/ { error_page 502 /e502; proxy_pass http://backend; }
--- user_files eval
[
  ["page.html" => qq{<!--# include virtual="/hop/1" -->|<!--# include virtual="/hop/2" -->|<!--# include virtual="/hop/3" -->}],
  ["a.txt" => "a" x 3000],
  ["b.txt" => "b" x 3000],
]
--- request
GET /page.html
--- response_body_like@stock eval
qr/^(?:a{3000}|b{3000}|E502)(?:\|(?:a{3000}|b{3000}|E502)){2}$/s
--- response_body_like@lb eval
qr/^(?=(?:.*\|)?a{3000}(?:\||$))(?=(?:.*\|)?b{3000}(?:\||$))(?=(?:.*\|)?E502(?:\||$))(?:a{3000}|b{3000}|E502)(?:\|(?:a{3000}|b{3000}|E502)){2}$/s
--- timeout: 8
--- log_count@stock
0-1 no live upstreams
--- log_count@lb
1 no live upstreams
1 lb: no available peer in upstream "backend" (2 peers: 0 down, 0 failed, 2 at max_conns
