# Parity with nginx's own round-robin balancer, one worker: every block runs twice, once with a
# plain `upstream {}` ("stock") and once with `lb_upstream;` added as its first line, and both
# runs assert what stock nginx 1.28 does (the expected values were taken from the stock runs).
# See t/lib/Test/LB/Parity.pm for $TEST_NGINX_LB, --- section@mode, --- log_count, /up,
# /sleep and /e502.
#
# Backends answer their own name; a backend that is "down" closes the connection without an
# answer (`return 444`: nginx logs "upstream prematurely closed connection", a failed attempt
# like a refused connect) until the block creates its flag file with GET /up.
use lib 't/lib';
use Test::Nginx::LB 'no_plan';
use Test::LB::Parity;
use Socket qw(getaddrinfo AF_INET AF_INET6 SOCK_STREAM);

# "localhost" resolves to both 127.0.0.1 and ::1, and ::1 can be listened on.
sub localhost_has_both {
    my ($err, @res) = getaddrinfo('localhost', undef, { socktype => SOCK_STREAM });
    return 0 if $err;
    my %family = map { $_->{family} => 1 } @res;
    return 0 if !$family{AF_INET()} || !$family{AF_INET6()};
    require IO::Socket::IP;
    my $s = IO::Socket::IP->new(LocalHost => '::1', LocalPort => 0, Listen => 1);
    return $s ? 1 : 0;
}

repeat_each(1);
no_shuffle();
# Log sections see the whole block's log (they are checked after every request).
check_accum_error_log();
use_parity();
run_tests();

__DATA__

=== TEST 1: single server, defaults: down → 502, and the very next request after it is back succeeds
nginx never marks the only peer of an upstream unavailable (peers->single).
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
["GET /t", "GET /t", "GET /up", "GET /t", "GET /t"]
--- error_code eval
[502, 502, 200, 200, 200]
--- response_body eval
["E502", "E502", "x", "a", "a"]
--- log_count
2 upstream prematurely closed connection
0 no live upstreams
--- no_error_log
upstream server temporarily disabled
is unavailable for
no available peer



=== TEST 2: single server max_fails=1 fail_timeout=10s: still never locked out
--- http_config
    upstream backend {
        $TEST_NGINX_LB
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1 max_fails=1 fail_timeout=10s;
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        root html;
        location / { if (-f $document_root/up) { return 200 "a"; } return 444; }
    }
--- config
    location /t { error_page 502 /e502; proxy_pass http://backend; }
--- request eval
["GET /t", "GET /up", "GET /t", "GET /t"]
--- error_code eval
[502, 200, 200, 200]
--- response_body eval
["E502", "x", "a", "a"]
--- log_count
1 upstream prematurely closed connection
0 no live upstreams
--- no_error_log
upstream server temporarily disabled
is unavailable for
no available peer



=== TEST 3: single server, nothing listening: every request tries it again (a connect each)
--- http_config
    upstream backend {
        $TEST_NGINX_LB
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_4 max_fails=1 fail_timeout=10s;
    }
--- config
    location /t { error_page 502 /e502; proxy_pass http://backend; }
--- request eval
["GET /t", "GET /t", "GET /t"]
--- error_code eval
[502, 502, 502]
--- response_body eval
["E502", "E502", "E502"]
--- log_count
3 connect() failed
0 no live upstreams
--- no_error_log
upstream server temporarily disabled
is unavailable for
no available peer



=== TEST 4: the only non-down primary next to a `down` one: stock marks it failed, lb_upstream never locks it out (intended)
peers->single counts `down` servers, so nginx treats this upstream as two peers: one failure
(max_fails=1) takes b out for fail_timeout=1s even after it is back ("no live upstreams").
lb_upstream treats an upstream whose only non-down primary is one peer (and no backup) as
single: the request after b is back succeeds. Intended: never worse than stock.
--- http_config
    upstream backend {
        $TEST_NGINX_LB
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2 down;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1 max_fails=1 fail_timeout=1s;
    }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2; return 200 "down-peer"; }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        root html;
        location / { if (-f $document_root/up) { return 200 "b"; } return 444; }
    }
--- config
    location /t { error_page 502 /e502; proxy_pass http://backend; }
--- request eval
["GET /t", "GET /t", "GET /up", "GET /t",
 "GET /sleep", "GET /sleep", "GET /sleep", "GET /sleep", "GET /sleep",
 "GET /t", "GET /t"]
--- error_code@stock eval
[502, 502, 200, 502, 200, 200, 200, 200, 200, 200, 200]
--- error_code@lb eval
[502, 502, 200, 200, 200, 200, 200, 200, 200, 200, 200]
--- response_body@stock eval
["E502", "E502", "x", "E502", "z", "z", "z", "z", "z", "b", "b"]
--- response_body@lb eval
["E502", "E502", "x", "b", "z", "z", "z", "z", "z", "b", "b"]
--- log_count@stock
1 upstream prematurely closed connection
1 upstream server temporarily disabled
2 no live upstreams
--- log_count@lb
2 upstream prematurely closed connection
0 is unavailable for
0 no live upstreams



=== TEST 5: all primaries failed, no backup: 502 without a connection until fail_timeout ends
nginx 1.28 does not reset the failure counters when every peer is unavailable (older nginx
did): the requests after a full outage get "no live upstreams" until fail_timeout=1s has
passed, even though the backends are back.
--- http_config
    upstream backend {
        $TEST_NGINX_LB
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
["GET /t", "GET /t", "GET /up", "GET /t",
 "GET /sleep", "GET /sleep", "GET /sleep", "GET /sleep", "GET /sleep",
 "GET /t", "GET /t", "GET /t", "GET /t"]
--- error_code eval
[502, 502, 200, 502, 200, 200, 200, 200, 200, 200, 200, 200, 200]
--- response_body eval
["E502", "E502", "x", "E502", "z", "z", "z", "z", "z", "b", "b", "a", "b"]
--- log_count@stock
2 upstream prematurely closed connection
2 upstream server temporarily disabled
2 no live upstreams
--- log_count@lb
2 upstream prematurely closed connection
2 is unavailable for 1s after 1 failure(s)
2 no live upstreams
2 lb: no available peer in upstream "backend" (2 peers: 0 down, 2 failed



=== TEST 6: all primaries failed, with a backup: the backup serves, then the primaries again
--- http_config
    upstream backend {
        $TEST_NGINX_LB
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1 max_fails=1 fail_timeout=1s;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2 max_fails=1 fail_timeout=1s;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_3 backup;
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
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_3; return 200 "c"; }
--- config
    location /t { error_page 502 /e502; proxy_pass http://backend; }
--- request eval
["GET /t", "GET /t", "GET /up", "GET /t",
 "GET /sleep", "GET /sleep", "GET /sleep", "GET /sleep", "GET /sleep",
 "GET /t", "GET /t", "GET /t"]
--- response_body eval
["c", "c", "x", "c", "z", "z", "z", "z", "z", "b", "b", "a"]
--- log_count@stock
2 upstream prematurely closed connection
2 upstream server temporarily disabled
--- log_count@lb
2 upstream prematurely closed connection
2 is unavailable for 1s after 1 failure(s)
--- no_error_log
no live upstreams
no available peer



=== TEST 7: proxy_next_upstream off: the failed attempt is not retried, but still counts
--- http_config
    upstream backend {
        $TEST_NGINX_LB
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_4 max_fails=1 fail_timeout=10s;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
    }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2; return 200 "b"; }
--- config
    location /t { error_page 502 /e502; proxy_next_upstream off; proxy_pass http://backend; }
--- request eval
["GET /t", "GET /t", "GET /t", "GET /t"]
--- error_code eval
[502, 200, 200, 200]
--- response_body eval
["E502", "b", "b", "b"]
--- log_count@stock
1 connect() failed
1 upstream server temporarily disabled
--- log_count@lb
1 connect() failed
1 is unavailable for 10s after 1 failure(s)
--- no_error_log
no live upstreams



=== TEST 8: proxy_next_upstream error timeout (default): a refused connect is retried on the next peer
--- http_config
    upstream backend {
        $TEST_NGINX_LB
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_4 max_fails=1 fail_timeout=10s;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_3;
    }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2; return 200 "b"; }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_3; return 200 "c"; }
--- config
    location /t { error_page 502 /e502; proxy_pass http://backend; }
--- request eval
["GET /t", "GET /t", "GET /t", "GET /t", "GET /t"]
--- response_body eval
["b", "c", "b", "c", "b"]
--- log_count@stock
1 connect() failed
1 upstream server temporarily disabled
--- log_count@lb
1 connect() failed
1 is unavailable for 10s after 1 failure(s)
--- no_error_log
no live upstreams



=== TEST 9: a backend's own 502 without http_502: passed to the client, not a failure
--- http_config
    upstream backend {
        $TEST_NGINX_LB
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1 max_fails=1 fail_timeout=10s;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
    }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1; return 502 "a502"; }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2; return 200 "b"; }
--- config
    location /t { error_page 502 /e502; proxy_pass http://backend; }
--- request eval
["GET /t", "GET /t", "GET /t", "GET /t"]
--- error_code eval
[502, 200, 502, 200]
--- response_body eval
["a502", "b", "a502", "b"]
--- no_error_log
upstream server temporarily disabled
is unavailable for
[error]



=== TEST 10: proxy_next_upstream error timeout http_502: a backend's 502 is retried and counts as a failure
--- http_config
    upstream backend {
        $TEST_NGINX_LB
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1 max_fails=1 fail_timeout=10s;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
    }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1; return 502 "a502"; }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2; return 200 "b"; }
--- config
    location /t {
        error_page 502 /e502;
        proxy_next_upstream error timeout http_502;
        proxy_pass http://backend;
    }
--- request eval
["GET /t", "GET /t", "GET /t", "GET /t"]
--- response_body eval
["b", "b", "b", "b"]
--- log_count@stock
1 upstream server temporarily disabled
--- log_count@lb
1 is unavailable for 10s after 1 failure(s)
--- no_error_log
no live upstreams



=== TEST 11: proxy_next_upstream_tries 1, three peers of which two fail: no retry at all
--- http_config
    upstream backend {
        $TEST_NGINX_LB
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_4 max_fails=1 fail_timeout=10s;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_5 max_fails=1 fail_timeout=10s;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_3;
    }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_3; return 200 "c"; }
--- config
    location /t { error_page 502 /e502; proxy_next_upstream_tries 1; proxy_pass http://backend; }
--- request eval
["GET /t", "GET /t", "GET /t", "GET /t"]
--- error_code eval
[502, 502, 200, 200]
--- response_body eval
["E502", "E502", "c", "c"]
--- log_count@stock
2 connect() failed
2 upstream server temporarily disabled
--- log_count@lb
2 connect() failed
2 is unavailable for 10s after 1 failure(s)
--- no_error_log
no live upstreams



=== TEST 12: proxy_next_upstream_tries 2, three peers of which two fail: two attempts, then 502
--- http_config
    upstream backend {
        $TEST_NGINX_LB
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_4 max_fails=1 fail_timeout=10s;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_5 max_fails=1 fail_timeout=10s;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_3;
    }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_3; return 200 "c"; }
--- config
    location /t { error_page 502 /e502; proxy_next_upstream_tries 2; proxy_pass http://backend; }
--- request eval
["GET /t", "GET /t", "GET /t"]
--- error_code eval
[502, 200, 200]
--- response_body eval
["E502", "c", "c"]
--- log_count@stock
2 connect() failed
2 upstream server temporarily disabled
--- log_count@lb
2 connect() failed
2 is unavailable for 10s after 1 failure(s)
--- no_error_log
no live upstreams



=== TEST 13: max_conns=1, no backup, one worker: concurrent requests spread, then 502
Three SSI includes run as concurrent subrequests; each backend answer takes about a second
(limit_rate). a has weight 5 but max_conns=1, so the second goes to b; the third finds no peer.
--- http_config
    upstream backend {
        $TEST_NGINX_LB
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1 weight=5 max_conns=1;
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
    location /u { error_page 502 /e502; proxy_pass http://backend; }
--- user_files eval
[
  ["page.html" => qq{<!--# include virtual="/u/1" -->|<!--# include virtual="/u/2" -->|<!--# include virtual="/u/3" -->}],
  ["a.txt" => "a" x 3000],
  ["b.txt" => "b" x 3000],
]
--- request
GET /page.html
--- response_body eval
("a" x 3000) . "|" . ("b" x 3000) . "|E502"
--- timeout: 8
--- log_count
1 no live upstreams
--- log_count@lb
1 lb: no available peer in upstream "backend" (2 peers: 0 down, 0 failed, 2 at max_conns



=== TEST 14: max_conns=1 with a backup, one worker: the backup takes what the primary cannot
--- http_config
    upstream backend {
        $TEST_NGINX_LB
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1 max_conns=1;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_3 backup;
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        location / { root html; limit_rate 1000; try_files /a.txt =404; }
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_3;
        location / { root html; limit_rate 1000; try_files /c.txt =404; }
    }
--- config
    location = /page.html { root html; ssi on; }
    location /u { error_page 502 /e502; proxy_pass http://backend; }
--- user_files eval
[
  ["page.html" => qq{<!--# include virtual="/u/1" -->|<!--# include virtual="/u/2" -->|<!--# include virtual="/u/3" -->}],
  ["a.txt" => "a" x 3000],
  ["c.txt" => "c" x 3000],
]
--- request
GET /page.html
--- response_body eval
("a" x 3000) . "|" . ("c" x 3000) . "|" . ("c" x 3000)
--- timeout: 8
--- no_error_log
no live upstreams
[error]



=== TEST 15: max_conns=1 on the only server: the second concurrent request gets 502
--- http_config
    upstream backend {
        $TEST_NGINX_LB
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1 max_conns=1;
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        location / { root html; limit_rate 1000; try_files /a.txt =404; }
    }
--- config
    location = /page.html { root html; ssi on; }
    location /u { error_page 502 /e502; proxy_pass http://backend; }
--- user_files eval
[
  ["page.html" => qq{<!--# include virtual="/u/1" -->|<!--# include virtual="/u/2" -->}],
  ["a.txt" => "a" x 3000],
]
--- request
GET /page.html
--- response_body eval
("a" x 3000) . "|E502"
--- timeout: 8
--- log_count
1 no live upstreams



=== TEST 16: max_fails=0: a dead peer is never marked failed, so every other request tries it again
--- http_config
    upstream backend {
        $TEST_NGINX_LB
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_4 max_fails=0;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
    }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2; return 200 "b"; }
--- config
    location /t { error_page 502 /e502; proxy_pass http://backend; }
--- request eval
["GET /t", "GET /t", "GET /t", "GET /t", "GET /t", "GET /t"]
--- response_body eval
["b", "b", "b", "b", "b", "b"]
--- log_count
3 connect() failed
--- no_error_log
upstream server temporarily disabled
is unavailable for
no live upstreams



=== TEST 17: weights 5/1/1: nginx's smooth order a a b a c a a, twice over
--- http_config
    upstream backend {
        $TEST_NGINX_LB
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
[("GET /t") x 14]
--- response_body eval
[split //, "aabacaa" x 2]
--- no_error_log
[error]



=== TEST 18: weights 3/2: order a b a b a, twice over
--- http_config
    upstream backend {
        $TEST_NGINX_LB
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1 weight=3;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2 weight=2;
    }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1; return 200 "a"; }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2; return 200 "b"; }
--- config
    location /t { proxy_pass http://backend; }
--- request eval
[("GET /t") x 10]
--- response_body eval
[split //, "ababa" x 2]
--- no_error_log
[error]



=== TEST 19: the same address on two server lines is two peers (order, and failures counted apart)
--- http_config
    upstream backend {
        $TEST_NGINX_LB
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
    }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1; return 200 "a"; }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2; return 200 "b"; }
--- config
    location /t { proxy_pass http://backend; }
--- request eval
[("GET /t") x 6]
--- response_body eval
[split //, "aabaab"]
--- no_error_log
[error]



=== TEST 20: a dead address on two server lines: both lines are tried, and both marked failed
--- http_config
    upstream backend {
        $TEST_NGINX_LB
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_4 max_fails=1 fail_timeout=10s;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_4 max_fails=1 fail_timeout=10s;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
    }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2; return 200 "b"; }
--- config
    location /t { proxy_pass http://backend; }
--- request eval
[("GET /t") x 4]
--- response_body eval
["b", "b", "b", "b"]
--- log_count@stock
2 connect() failed
2 upstream server temporarily disabled
--- log_count@lb
2 connect() failed
2 is unavailable for 10s after 1 failure(s)



=== TEST 21: max_conns=1 on the same address twice: two connections at once, then 502
--- http_config
    upstream backend {
        $TEST_NGINX_LB
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1 max_conns=1;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1 max_conns=1;
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        location / { root html; limit_rate 1000; try_files /a.txt =404; }
    }
--- config
    location = /page.html { root html; ssi on; }
    location /u { error_page 502 /e502; proxy_pass http://backend; }
--- user_files eval
[
  ["page.html" => qq{<!--# include virtual="/u/1" -->|<!--# include virtual="/u/2" -->|<!--# include virtual="/u/3" -->}],
  ["a.txt" => "a" x 3000],
]
--- request
GET /page.html
--- response_body eval
("a" x 3000) . "|" . ("a" x 3000) . "|E502"
--- timeout: 8
--- log_count
1 no live upstreams



=== TEST 22: localhost resolving to ::1 and 127.0.0.1: two peers, in the resolver's order
nginx keeps getaddrinfo's order (::1 first with glibc's default /etc/gai.conf). Needs a resolver that gives both addresses for "localhost" (e.g. /etc/hosts with
"127.0.0.1 localhost" and "::1 localhost") and ::1 on lo; skipped otherwise.
--- skip_eval: 4: !main::localhost_has_both()
--- http_config
    upstream backend {
        $TEST_NGINX_LB
        server localhost:$TEST_NGINX_RAND_PORT_1;
    }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1; return 200 "v4"; }
    server { listen [::1]:$TEST_NGINX_RAND_PORT_1; return 200 "v6"; }
--- config
    location /t { proxy_pass http://backend; }
--- request eval
[("GET /t") x 4]
--- response_body eval
["v6", "v4", "v6", "v4"]



=== TEST 23: localhost with only 127.0.0.1 listening: the ::1 peer fails once, then is skipped
Not a single-peer upstream (two addresses), so ::1 is marked failed (max_fails=1).
--- skip_eval: 5: !main::localhost_has_both()
--- http_config
    upstream backend {
        $TEST_NGINX_LB
        server localhost:$TEST_NGINX_RAND_PORT_1 max_fails=1 fail_timeout=10s;
    }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1; return 200 "v4"; }
--- config
    location /t { proxy_pass http://backend; }
--- request eval
[("GET /t") x 4]
--- response_body eval
["v4", "v4", "v4", "v4"]
--- log_count@stock
1 connect() failed
1 upstream server temporarily disabled
--- log_count@lb
1 connect() failed
1 is unavailable for 10s after 1 failure(s)
