# lb_check: configurations nginx must refuse, each with an [emerg] naming the parameter.
#
# The patterns are regexes because the real Test::Nginx::Socket only reads the error log, where
# the line is "[emerg] PID#TID: lb_check: ..."; ours also sees nginx's stderr.
use Cwd ();
use lib 't/lib';
use Test::Nginx::LB 'no_plan';

BEGIN {
    # For the cert/key cases: real files, so that only the pairing is wrong.
    system('t/gen-certs.sh >/dev/null') == 0 or die "t/gen-certs.sh failed\n";
    $ENV{TEST_NGINX_CERT_DIR} = Cwd::abs_path('t/certs');
}

repeat_each(1);
no_shuffle();
run_tests();

__DATA__
=== TEST 1: unknown type
--- http_config
    upstream u { lb_upstream; lb_check type=smtp; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log eval
qr{\[emerg\] .*lb_check: invalid value "smtp" for "type": expected tcp, http, https, udp or tls}



=== TEST 1b: UDP checks are for stream upstreams
--- http_config
    upstream u { lb_upstream; lb_check type=udp send=x expect=y; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log eval
qr{\[emerg\] .*lb_check: "type=udp" is not allowed in an http upstream \(UDP checks are for stream upstreams\)}



=== TEST 2: unknown key
--- http_config
    upstream u { lb_upstream; lb_check colour=blue; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log eval
qr{\[emerg\] .*lb_check: unknown parameter "colour" \(known: type, interval, timeout, rise, fall, jitter, uri, host, method, status, body, port, default, keepalive, keepalive_time, sni, verify, ca, cert, key\)}



=== TEST 3: a word that is not key=value
--- http_config
    upstream u { lb_upstream; lb_check justaword; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log eval
qr{\[emerg\] .*lb_check: invalid parameter "justaword": expected key=value}



=== TEST 4: rise=0
--- http_config
    upstream u { lb_upstream; lb_check rise=0; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log eval
qr{\[emerg\] .*lb_check: invalid value "0" for "rise": expected a positive integer \(at most 1000\)}



=== TEST 5: fall=0
--- http_config
    upstream u { lb_upstream; lb_check fall=0; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log eval
qr{\[emerg\] .*lb_check: invalid value "0" for "fall": expected a positive integer \(at most 1000\)}



=== TEST 6: rise above 1000
--- http_config
    upstream u { lb_upstream; lb_check rise=1001; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log eval
qr{\[emerg\] .*lb_check: invalid value "1001" for "rise"}



=== TEST 7: fall that is not a number
--- http_config
    upstream u { lb_upstream; lb_check fall=x; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log eval
qr{\[emerg\] .*lb_check: invalid value "x" for "fall"}



=== TEST 8: interval=0
--- http_config
    upstream u { lb_upstream; lb_check interval=0; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log eval
qr{\[emerg\] .*lb_check: invalid value "0" for "interval": must be positive}



=== TEST 9: timeout=0
--- http_config
    upstream u { lb_upstream; lb_check timeout=0ms; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log eval
qr{\[emerg\] .*lb_check: invalid value "0ms" for "timeout": must be positive}



=== TEST 10: malformed interval (fraction)
--- http_config
    upstream u { lb_upstream; lb_check interval=1.5s; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log eval
qr{\[emerg\] .*lb_check: invalid value "1\.5s" for "interval": expected a time such as 500ms or 2s}



=== TEST 11: malformed interval (negative)
--- http_config
    upstream u { lb_upstream; lb_check interval=-1s; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log eval
qr{\[emerg\] .*lb_check: invalid value "-1s" for "interval"}



=== TEST 12: malformed timeout (unit only)
--- http_config
    upstream u { lb_upstream; lb_check timeout=ms; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log eval
qr{\[emerg\] .*lb_check: invalid value "ms" for "timeout"}



=== TEST 13: empty interval
--- http_config
    upstream u { lb_upstream; lb_check interval=; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log eval
qr{\[emerg\] .*lb_check: invalid value "" for "interval"}



=== TEST 14: malformed jitter
--- http_config
    upstream u { lb_upstream; lb_check jitter=2x; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log eval
qr{\[emerg\] .*lb_check: invalid value "2x" for "jitter"}



=== TEST 15: timeout longer than interval
--- http_config
    upstream u { lb_upstream; lb_check interval=1s timeout=1500ms; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log eval
qr{\[emerg\] .*lb_check: "timeout" \(1500ms\) must not be longer than "interval" \(1000ms\)}



=== TEST 16: timeout longer than the default interval (2s)
--- http_config
    upstream u { lb_upstream; lb_check timeout=3s; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log eval
qr{\[emerg\] .*lb_check: "timeout" \(3000ms\) must not be longer than "interval" \(2000ms\)}



=== TEST 17: jitter equal to interval
--- http_config
    upstream u { lb_upstream; lb_check interval=1s jitter=1s; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log eval
qr{\[emerg\] .*lb_check: "jitter" \(1000ms\) must be shorter than "interval" \(1000ms\)}



=== TEST 18: jitter longer than interval
--- http_config
    upstream u { lb_upstream; lb_check interval=500ms jitter=2s; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log eval
qr{\[emerg\] .*lb_check: "jitter" \(2000ms\) must be shorter than "interval" \(500ms\)}



=== TEST 19: uri without a leading slash
--- http_config
    upstream u { lb_upstream; lb_check type=http uri=health; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log eval
qr{\[emerg\] .*lb_check: invalid value "health" for "uri": must start with "/"}



=== TEST 20: status out of range
--- http_config
    upstream u { lb_upstream; lb_check type=http status=600; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log eval
qr{\[emerg\] .*lb_check: invalid value "600" for "status": expected codes and ranges from 100 to 599, e.g\. 200-299,301}



=== TEST 21: status range backwards
--- http_config
    upstream u { lb_upstream; lb_check type=http status=300-200; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log eval
qr{\[emerg\] .*lb_check: invalid value "300-200" for "status"}



=== TEST 22: status not a number
--- http_config
    upstream u { lb_upstream; lb_check type=http status=abc; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log eval
qr{\[emerg\] .*lb_check: invalid value "abc" for "status"}



=== TEST 23: status list with an empty item
--- http_config
    upstream u { lb_upstream; lb_check type=http status=200,; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log eval
qr{\[emerg\] .*lb_check: invalid value "200," for "status"}



=== TEST 24: body without ~
--- http_config
    upstream u { lb_upstream; lb_check type=http body=ok; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log eval
qr{\[emerg\] .*lb_check: invalid value "ok" for "body": expected ~regex}



=== TEST 25: bad regex
--- http_config
    upstream u { lb_upstream; lb_check type=http body=~(ok; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log eval
qr{\[emerg\] .*lb_check: invalid regex in "body": .*missing closing parenthesis}



=== TEST 26: method other than GET/HEAD
--- http_config
    upstream u { lb_upstream; lb_check type=http method=POST; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log eval
qr{\[emerg\] .*lb_check: invalid value "POST" for "method": expected GET or HEAD}



=== TEST 27: uri with type=tcp
--- http_config
    upstream u { lb_upstream; lb_check uri=/health; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log eval
qr{\[emerg\] .*lb_check: "uri" needs type=http or type=https}



=== TEST 28: status with type=tcp
--- http_config
    upstream u { lb_upstream; lb_check type=tcp status=200; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log eval
qr{\[emerg\] .*lb_check: "status" needs type=http or type=https}



=== TEST 29: body with type=tcp
--- http_config
    upstream u { lb_upstream; lb_check body=~ok; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log eval
qr{\[emerg\] .*lb_check: "body" needs type=http or type=https}



=== TEST 30: method with type=tcp
--- http_config
    upstream u { lb_upstream; lb_check method=HEAD; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log eval
qr{\[emerg\] .*lb_check: "method" needs type=http or type=https}



=== TEST 31: verify with type=http
--- http_config
    upstream u { lb_upstream; lb_check type=http verify=off; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log eval
qr{\[emerg\] .*lb_check: "verify" needs type=https}



=== TEST 32: sni with type=tcp
--- http_config
    upstream u { lb_upstream; lb_check sni=off; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log eval
qr{\[emerg\] .*lb_check: "sni" needs type=https}



=== TEST 33: ca with type=http
--- http_config
    upstream u { lb_upstream; lb_check type=http ca=/etc/ssl/ca.pem; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log eval
qr{\[emerg\] .*lb_check: "ca" needs type=https}



=== TEST 34: cert with type=tcp
--- http_config
    upstream u { lb_upstream; lb_check cert=/a.crt; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log eval
qr{\[emerg\] .*lb_check: "cert" needs type=https}



=== TEST 35: key with type=http
--- http_config
    upstream u { lb_upstream; lb_check type=http key=/a.key; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log eval
qr{\[emerg\] .*lb_check: "key" needs type=https}



=== TEST 36: verify=on without ca=
--- http_config
    upstream u { lb_upstream; lb_check type=https verify=on; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log eval
qr{\[emerg\] .*lb_check: "verify=on" needs "ca=" \(a file of trusted CA certificates\)}



=== TEST 37: cert without key
--- http_config
    upstream u { lb_upstream; lb_check type=https cert=$TEST_NGINX_CERT_DIR/localhost.crt; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log eval
qr{\[emerg\] .*lb_check: "cert" and "key" go together}



=== TEST 38: key without cert
--- http_config
    upstream u { lb_upstream; lb_check type=https key=$TEST_NGINX_CERT_DIR/localhost.key; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log eval
qr{\[emerg\] .*lb_check: "cert" and "key" go together}



=== TEST 39: verify value other than on/off
--- http_config
    upstream u { lb_upstream; lb_check type=https verify=yes; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log eval
qr{\[emerg\] .*lb_check: invalid value "yes" for "verify": expected on or off}



=== TEST 40: port=0
--- http_config
    upstream u { lb_upstream; lb_check port=0; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log eval
qr{\[emerg\] .*lb_check: invalid value "0" for "port": expected a port from 1 to 65535}



=== TEST 41: port above 65535
--- http_config
    upstream u { lb_upstream; lb_check port=70000; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log eval
qr{\[emerg\] .*lb_check: invalid value "70000" for "port"}



=== TEST 42: default other than up/down
--- http_config
    upstream u { lb_upstream; lb_check default=maybe; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log eval
qr{\[emerg\] .*lb_check: invalid value "maybe" for "default": expected up or down}



=== TEST 43: host with a slash
--- http_config
    upstream u { lb_upstream; lb_check type=http host=a/b; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log eval
qr{\[emerg\] .*lb_check: invalid value "a/b" for "host": expected a host name, optionally with :port}



=== TEST 44: lb_check given twice
--- http_config
    upstream u { lb_upstream; lb_check type=tcp; lb_check type=http; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log eval
qr{\[emerg\] .*"lb_check" directive is duplicate}



=== TEST 45: lb_check in an upstream without lb_upstream
--- http_config
    upstream plain { lb_check type=tcp; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log eval
qr{\[emerg\] .*lb_check: upstream "plain" has "lb_check" but no "lb_upstream"}



=== TEST 46: lb_check in an upstream with another balancer (hash)
--- http_config
    upstream hashed { hash $uri; lb_check type=tcp; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log eval
qr{\[emerg\] .*lb_check: upstream "hashed" has "lb_check" but no "lb_upstream"}



=== TEST 47: lb_check at http level
--- http_config
    lb_check type=tcp;
--- config
--- must_die
--- error_log eval
qr{\[emerg\] .*"lb_check" directive is not allowed here}



=== TEST 48: lb_check in a location
--- http_config
    server { listen 127.0.0.1:1; location / { lb_check type=tcp; } }
--- config
--- must_die
--- error_log eval
qr{\[emerg\] .*"lb_check" directive is not allowed here}



=== TEST 49: verify=on with a CA file that does not exist (nginx's own error, worded by version)
--- http_config
    upstream u { lb_upstream; lb_check type=https verify=on ca=/nonexistent/ca.crt; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log eval
qr{\[emerg\] .*(?:cannot load certificate "|SSL_CTX_load_verify_locations\(")/nonexistent/ca\.crt"}



=== TEST 50: keepalive that is not on or off
--- http_config
    upstream u { lb_upstream; lb_check type=http keepalive=yes; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log eval
qr{\[emerg\] .*lb_check: invalid value "yes" for "keepalive": expected on or off}



=== TEST 51: keepalive with a TCP check (nothing to keep)
--- http_config
    upstream u { lb_upstream; lb_check type=tcp keepalive=on; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log eval
qr{\[emerg\] .*lb_check: "keepalive" needs type=http or type=https}



=== TEST 52: keepalive_time that is not a positive time
--- http_config
    upstream u { lb_upstream; lb_check type=http keepalive_time=0; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log eval
qr{\[emerg\] .*lb_check: invalid value "0" for "keepalive_time": must be positive}

