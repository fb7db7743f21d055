# lb_upstream: configurations nginx must refuse, each with an [emerg] naming the directive.
use lib 't/lib';
use Test::Nginx::LB 'no_plan';

repeat_each(1);
no_shuffle();
run_tests();

__DATA__

=== TEST 1: lb_upstream outside an upstream block
--- http_config
    lb_upstream;
--- config
--- must_die
--- error_log
"lb_upstream" directive is not allowed here



=== TEST 2: lb_upstream given twice
--- http_config
    upstream u { lb_upstream; lb_upstream; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log
"lb_upstream" directive is duplicate



=== TEST 3: unknown method
--- http_config
    upstream u { lb_upstream fastest; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log
lb_upstream: unknown balancing method "fastest"



=== TEST 4: too many arguments
--- http_config
    upstream u { lb_upstream p2c decay=1s extra; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log
invalid number of arguments in "lb_upstream" directive



=== TEST 5: least_conn after lb_upstream
--- http_config
    upstream u { lb_upstream; least_conn; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log
lb_upstream: upstream "u" also uses another load balancing method



=== TEST 6: least_conn before lb_upstream
--- http_config
    upstream u { least_conn; lb_upstream; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log
lb_upstream: upstream "u" already has a load balancing method



=== TEST 7: hash before lb_upstream
--- http_config
    upstream u { hash $uri; lb_upstream; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log
lb_upstream: upstream "u" already has a load balancing method



=== TEST 8: hash after lb_upstream
--- http_config
    upstream u { lb_upstream; hash $uri consistent; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log
lb_upstream: upstream "u" also uses another load balancing method



=== TEST 9: ip_hash after lb_upstream
--- http_config
    upstream u { lb_upstream; ip_hash; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log
lb_upstream: upstream "u" also uses another load balancing method



=== TEST 10: ip_hash before lb_upstream
--- http_config
    upstream u { ip_hash; lb_upstream; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log
lb_upstream: upstream "u" already has a load balancing method



=== TEST 11: random after lb_upstream
--- http_config
    upstream u { lb_upstream; random two; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log
lb_upstream: upstream "u" also uses another load balancing method



=== TEST 12: random before lb_upstream
--- http_config
    upstream u { random; lb_upstream; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log
lb_upstream: upstream "u" already has a load balancing method



=== TEST 13: keepalive before lb_upstream would silently drop keepalive: refused
--- http_config
    upstream u { keepalive 4; lb_upstream; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log
"lb_upstream" must come first in the block



=== TEST 14: keepalive after lb_upstream is fine
--- http_config
    upstream u { lb_upstream; keepalive 4; server 127.0.0.1:$TEST_NGINX_RAND_PORT_1; }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1; return 200 "ok"; }
--- config
    location /t { proxy_pass http://u; }
--- request
GET /t
--- response_body: ok
--- error_log
lb: upstream "u": method round_robin, 1 peers (0 backup, 0 down)



=== TEST 15: two methods
--- http_config
    upstream u { lb_upstream least_conn round_robin; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log
lb_upstream: unexpected parameter "round_robin"



=== TEST 16: decay with a method that has no response-time average
--- http_config
    upstream u { lb_upstream least_conn decay=5s; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log
lb_upstream: "decay" applies to the p2c method only



=== TEST 17: bad decay
--- http_config
    upstream u { lb_upstream p2c decay=0; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log
lb_upstream: invalid value "0" for "decay"



=== TEST 18: a server with "resolve" is refused until lb_upstream follows resolved peers
nginx 1.27.3 and later keep such peers outside the configuration-time lists; accepting the
upstream would answer every request with 502. (nginx before 1.27.3 has no "resolve" at all.)
--- http_config
    resolver 127.0.0.1:1;
    upstream u {
        zone u 64k;
        lb_upstream;
        server localhost:1 resolve;
    }
--- config
--- must_die
--- error_log eval
qr/lb_upstream: upstream "u" has a server with "resolve", which lb_upstream does not support yet|invalid parameter "resolve"/
