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



=== TEST 18: max_resolved without a server with "resolve" is refused
The limit would have nothing to limit; a typo in the upstream is likelier.
--- http_config
    upstream u {
        lb_upstream max_resolved=10;
        server 127.0.0.1:1;
    }
--- config
--- must_die
--- error_log
lb_upstream: "max_resolved" in upstream "u" needs a server with "resolve"



=== TEST 19: max_resolved must be a positive number
--- http_config
    upstream u {
        lb_upstream max_resolved=0;
        server 127.0.0.1:1;
    }
--- config
--- must_die
--- error_log
lb_upstream: invalid value "0" for "max_resolved": expected a number of addresses from 1 to 1000000



=== TEST 20: max_added without zone is refused
Peers added through lb_api live in shared memory: like NGINX Plus's API, it needs the zone.
--- http_config
    upstream u {
        lb_upstream max_added=10;
        server 127.0.0.1:1;
    }
--- config
--- must_die
--- error_log
lb_upstream: "max_added" in upstream "u" needs the "zone" directive



=== TEST 21: max_added must be a number
--- http_config
    upstream u {
        zone u 64k;
        lb_upstream max_added=many;
        server 127.0.0.1:1;
    }
--- config
--- must_die
--- error_log
lb_upstream: invalid value "many" for "max_added": expected a number of peers from 0 to 100000



=== TEST 22: lb_panic above 100%
--- http_config
    upstream u { lb_upstream; lb_panic 150%; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log
lb_panic: invalid value "150%" (expected a percentage from 1% to 100%, such as 50%)



=== TEST 23: lb_panic 0% is refused
--- http_config
    upstream u { lb_upstream; lb_panic 0%; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log
lb_panic: invalid value "0%"



=== TEST 24: lb_panic without % is refused
--- http_config
    upstream v { lb_upstream; lb_panic 50; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log
lb_panic: invalid value "50"



=== TEST 25: lb_panic twice
--- http_config
    upstream u { lb_upstream; lb_panic 50%; lb_panic 20%; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log
"lb_panic" directive is duplicate



=== TEST 26: lb_panic without lb_upstream
--- http_config
    upstream u { lb_panic 50%; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log
lb_panic: upstream "u" has "lb_panic" but no "lb_upstream"



=== TEST 27: lb_outlier with an unknown key
--- http_config
    upstream u { lb_upstream; lb_outlier consecutive_5xx=5 colour=red; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log
lb_outlier: unknown parameter "colour" (expected consecutive_5xx, consecutive_errors, base_ejection, max_ejection or max_percent)



=== TEST 28: lb_outlier with a bad value
--- http_config
    upstream u { lb_upstream; lb_outlier max_percent=150; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log
lb_outlier: invalid value "150" for "max_percent": expected a percentage from 1 to 100



=== TEST 29: lb_outlier with max_ejection below base_ejection
--- http_config
    upstream u { lb_upstream; lb_outlier base_ejection=1m max_ejection=10s; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log
lb_outlier: max_ejection is shorter than base_ejection



=== TEST 30: lb_outlier without lb_upstream
--- http_config
    upstream u { lb_outlier; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log
lb_outlier: upstream "u" has "lb_outlier" but no "lb_upstream"



=== TEST 31: lb_slow_start 0
--- http_config
    upstream u { lb_upstream; lb_slow_start 0; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log
lb_slow_start: invalid value "0" (expected a positive time such as 30s)



=== TEST 32: lb_slow_start without lb_upstream
--- http_config
    upstream u { lb_slow_start 30s; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log
lb_slow_start: upstream "u" has "lb_slow_start" but no "lb_upstream"
