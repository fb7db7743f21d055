# lb_add_header: variables, `always`, inheritance (http > server > location > if), order,
# empty values, configuration errors, CR/LF in runtime values, static files, redirects, TLS
# (proxying to a TLS server block), HTTP/2 and HTTP/1.0.
#
# Runs under our Test::Nginx::LB::Runner and under the real Test::Nginx::Socket, with the nginx
# built by scripts/build.sh or Debian's (TEST_NGINX_BINARY=/usr/sbin/nginx
# TEST_NGINX_LB_MODULE=build/debian/modules/ngx_http_lb_module.so).
#
# Note: the real Test::Nginx::Socket expands $TEST_NGINX_* in the config sections and in
# response_body, but not in response_headers, raw_response_headers_like or error_log (only
# $ServerPort in response_headers), so header checks below use $ServerPort, a regex, or eval.

use strict;
use warnings;

use Cwd qw(abs_path);
use File::Basename qw(dirname);
use Sys::Hostname qw(hostname);

our $Hostname;

BEGIN {
    # TLS material is generated at test time, never committed (t/certs is gitignored).
    my $t = dirname(abs_path(__FILE__));
    my $dir = `"$t/gen-certs.sh" "$t/certs"`;
    die "t/gen-certs.sh failed (exit " . ($? >> 8) . ")\n" if $? != 0;
    chomp $dir;
    $ENV{TEST_NGINX_CERT_DIR} = $dir;
    # nginx lowercases the name gethostname() returns.
    $main::Hostname = lc hostname();
}

use lib 't/lib';
use Test::Nginx::LB 'no_plan';

# The real Test::Nginx::Socket writes "http2 on;" for any nginx >= 1.19.9 when a block has
# --- http2, but that directive only exists since nginx 1.25.1 (before, it was
# "listen ... http2"), so under the real engine the HTTP/2 blocks are skipped on older nginx
# (Debian 12's 1.22). Our runner picks the right form for each version.
our $RealH2Broken = 0;
if (Test::Nginx::LB::engine() eq 'Test::Nginx::Socket') {
    my $v = `$ENV{TEST_NGINX_BINARY} -v 2>&1`;
    $RealH2Broken = 1 if $v =~ m{nginx/(\d+)\.(\d+)\.(\d+)} && $1 * 1e6 + $2 * 1e3 + $3 < 1025001;
}

repeat_each(1);
no_long_string();

run_tests();

__DATA__

=== TEST 1: $upstream_addr through proxy_pass names the backend that answered
--- http_config
    upstream backend { server 127.0.0.1:$TEST_NGINX_RAND_PORT_1; }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        location / { return 200 "backend $server_port\n"; }
    }
--- config
    location /t {
        lb_add_header X-Served-By $upstream_addr;
        proxy_pass http://backend;
    }
--- request
GET /t
--- response_headers_like
X-Served-By: 127\.0\.0\.1:\d+
--- response_body
backend $TEST_NGINX_RAND_PORT_1



=== TEST 2: $upstream_addr is exactly the upstream peer (a loop back to this server's port)
--- http_config
    upstream self { server 127.0.0.1:$TEST_NGINX_SERVER_PORT; }
--- config
    location /t {
        lb_add_header X-Served-By $upstream_addr;
        proxy_pass http://self/back;
    }
    location = /back { return 200 "back\n"; }
--- request
GET /t
--- response_headers
X-Served-By: 127.0.0.1:$ServerPort
--- response_body
back



=== TEST 3: $host and $server_port
--- config
    location /t {
        lb_add_header X-Host $host;
        lb_add_header X-Port $server_port;
        return 200 "ok\n";
    }
--- request
GET /t
--- more_headers
Host: Example.ORG
--- response_headers
X-Host: example.org
X-Port: $ServerPort
--- response_body
ok



=== TEST 4: $hostname, and a value mixing literal text and variables
--- config
    location /t {
        lb_add_header X-Hostname $hostname;
        lb_add_header X-Mixed "host=$hostname;uri=$uri;arg=$arg_a";
        return 200 "ok\n";
    }
--- request
GET /t?a=42
--- response_headers eval
"X-Hostname: $::Hostname
X-Mixed: host=$::Hostname;uri=/t;arg=42"
--- response_body
ok



=== TEST 5: $status is evaluated when the headers are sent (always on a 404)
--- config
    location /t {
        lb_add_header X-Status $status always;
        return 404;
    }
--- request
GET /t
--- error_code: 404
--- response_headers
X-Status: 404



=== TEST 6: on a 200 both the plain and the `always` header are added
--- config
    location /t {
        lb_add_header X-Plain p;
        lb_add_header X-Always a always;
        return 200 "ok\n";
    }
--- request
GET /t
--- response_headers
X-Plain: p
X-Always: a
--- response_body
ok



=== TEST 7: `return 404`: only the `always` header
--- config
    location /t {
        lb_add_header X-Plain p;
        lb_add_header X-Always a always;
        return 404;
    }
--- request
GET /t
--- error_code: 404
--- response_headers
!X-Plain
X-Always: a
--- response_body_like: 404 Not Found



=== TEST 8: a missing static file (nginx's own 404 page): only the `always` header
--- config
    location /static/ {
        root html;
        lb_add_header X-Plain p;
        lb_add_header X-Always a always;
    }
--- request
GET /static/nope.txt
--- error_code: 404
--- response_headers
!X-Plain
X-Always: a
--- response_body_like: 404 Not Found



=== TEST 9: 502 from a dead upstream (closed port): only the `always` header
--- config
    location /t {
        lb_add_header X-Plain p;
        lb_add_header X-Always a always;
        lb_add_header X-Upstream $upstream_addr always;
        proxy_connect_timeout 2s;
        proxy_pass http://127.0.0.1:$TEST_NGINX_RAND_PORT_9;
    }
--- request
GET /t
--- error_code: 502
--- response_headers
!X-Plain
X-Always: a
--- raw_response_headers_like: X-Upstream: 127\.0\.0\.1:\d+\r\n
--- response_body_like: 502 Bad Gateway
--- error_log
connect() failed (111: Connection refused) while connecting to upstream



=== TEST 10: a status outside the list (403) gets only the `always` header
--- config
    location /t {
        lb_add_header X-Plain p;
        lb_add_header X-Always a always;
        return 403;
    }
--- request
GET /t
--- error_code: 403
--- response_headers
!X-Plain
X-Always: a



=== TEST 11: `return 301` is in the list: the plain header is added, next to Location
--- config
    location /t {
        lb_add_header X-Plain p;
        return 301 /elsewhere;
    }
--- request
GET /t
--- error_code: 301
--- response_headers
X-Plain: p
--- raw_response_headers_like: Location: http://[^/\r\n]+/elsewhere\r\n



=== TEST 12: a 304 (if_modified_since before) is in the list
--- config
    location /static/ {
        root html;
        if_modified_since before;
        lb_add_header X-Plain p;
    }
--- user_files
>>> static/a.txt
hello
--- request
GET /static/a.txt
--- more_headers
If-Modified-Since: Fri, 01 Jan 2100 00:00:00 GMT
--- error_code: 304
--- response_headers
X-Plain: p
--- response_body



=== TEST 13: a 206 (Range on a static file) is in the list
--- config
    location /static/ {
        root html;
        lb_add_header X-Plain p;
    }
--- user_files
>>> static/a.txt
hello world
--- request
GET /static/a.txt
--- more_headers
Range: bytes=0-4
--- error_code: 206
--- response_headers
X-Plain: p
Content-Range: bytes 0-4/12
--- response_body chomp
hello



=== TEST 14: 204 is in the list
--- config
    location /t {
        lb_add_header X-Plain p;
        return 204;
    }
--- request
GET /t
--- error_code: 204
--- response_headers
X-Plain: p



=== TEST 15: 202 is not in the list (only `always` headers)
--- config
    location /t {
        lb_add_header X-Plain p;
        lb_add_header X-Always a always;
        return 202 "accepted\n";
    }
--- request
GET /t
--- error_code: 202
--- response_headers
!X-Plain
X-Always: a



=== TEST 16: 307 is in the list
--- config
    location /t {
        lb_add_header X-Plain p;
        return 307 /elsewhere;
    }
--- request
GET /t
--- error_code: 307
--- response_headers
X-Plain: p



=== TEST 17: a static file from the html dir, header set at server level
--- config
    lb_add_header X-Server s;
--- user_files
>>> hello.txt
hello world
--- request
GET /hello.txt
--- response_headers
X-Server: s
--- response_body
hello world



=== TEST 18: inheritance: http level reaches a location when server and location have none
--- http_config
    lb_add_header X-Http h;
--- config
    location /t { return 200 "ok\n"; }
--- request
GET /t
--- response_headers
X-Http: h
--- response_body
ok



=== TEST 19: inheritance: server lines replace the http lines
--- http_config
    lb_add_header X-Http h;
--- config
    lb_add_header X-Server s;
    location /t { return 200 "ok\n"; }
--- request
GET /t
--- response_headers
!X-Http
X-Server: s



=== TEST 20: inheritance: location lines replace the server and http lines
--- http_config
    lb_add_header X-Http h;
--- config
    lb_add_header X-Server s;
    location /t {
        lb_add_header X-Loc l;
        return 200 "ok\n";
    }
--- request
GET /t
--- response_headers
!X-Http
!X-Server
X-Loc: l



=== TEST 21: inheritance: a sibling location without lines still gets the server's
--- http_config
    lb_add_header X-Http h;
--- config
    lb_add_header X-Server s;
    location /t {
        lb_add_header X-Loc l;
        return 200 "ok\n";
    }
    location /u { return 200 "ok\n"; }
--- request
GET /u
--- response_headers
!X-Http
!X-Loc
X-Server: s



=== TEST 22: inheritance: an `if` with its own lines replaces the location's
--- config
    lb_add_header X-Server s;
    location /t {
        lb_add_header X-Loc l;
        if ($arg_a) {
            lb_add_header X-If i;
        }
        return 200 "ok\n";
    }
--- request
GET /t?a=1
--- response_headers
!X-Server
!X-Loc
X-If: i
--- response_body
ok



=== TEST 23: inheritance: an `if` without lines inherits the location's
--- config
    location /t {
        lb_add_header X-Loc l;
        if ($arg_a) {
            set $x 1;
        }
        return 200 "ok\n";
    }
--- request
GET /t?a=1
--- response_headers
X-Loc: l
--- response_body
ok



=== TEST 24: inheritance: an `if` whose condition is false leaves the location's lines
--- config
    location /t {
        lb_add_header X-Loc l;
        if ($arg_a) {
            lb_add_header X-If i;
        }
        return 200 "ok\n";
    }
--- request
GET /t
--- response_headers
X-Loc: l
!X-If



=== TEST 25: several headers keep their order, `always` or not
--- config
    location /t {
        lb_add_header X-A 1;
        lb_add_header X-B 2 always;
        lb_add_header X-C 3;
        lb_add_header X-D 4 always;
        return 200 "ok\n";
    }
--- request
GET /t
--- raw_response_headers_like: X-A: 1\r\nX-B: 2\r\nX-C: 3\r\nX-D: 4\r\n
--- response_body
ok



=== TEST 26: several `always` headers keep their order on an error page
--- config
    location /t {
        lb_add_header X-A 1;
        lb_add_header X-B 2 always;
        lb_add_header X-C 3;
        lb_add_header X-D 4 always;
        return 404;
    }
--- request
GET /t
--- error_code: 404
--- raw_response_headers_like: X-B: 2\r\nX-D: 4\r\n



=== TEST 27: the same name twice gives two header lines
--- config
    location /t {
        lb_add_header X-Dup one;
        lb_add_header X-Dup two;
        return 200 "ok\n";
    }
--- request
GET /t
--- raw_response_headers_like: X-Dup: one\r\nX-Dup: two\r\n



=== TEST 28: a value that evaluates to "" adds no header; its neighbours stay
--- config
    location /t {
        lb_add_header X-Before b;
        lb_add_header X-Empty $arg_missing;
        lb_add_header X-After a;
        return 200 "ok\n";
    }
--- request
GET /t
--- response_headers
X-Before: b
!X-Empty
X-After: a
--- raw_response_headers_like: X-Before: b\r\nX-After: a\r\n



=== TEST 29: the same variable, when set, adds the header
--- config
    location /t {
        lb_add_header X-Empty $arg_missing;
        return 200 "ok\n";
    }
--- request
GET /t?missing=here
--- response_headers
X-Empty: here



=== TEST 30: a runtime value with CR/LF is dropped (no header injection) and logged at warn
--- config
    location /x {
        lb_add_header X-U $uri;
        lb_add_header X-Ok ok;
        return 200 "ok\n";
    }
--- request
GET /x%0d%0aSet-Cookie:a=b
--- response_headers
!X-U
!Set-Cookie
X-Ok: ok
--- response_body
ok
--- error_log
[warn]
lb_add_header: dropped header "X-U": its value contains CR, LF or NUL



=== TEST 31: config error: a header name with a space
--- config
    location /t {
        lb_add_header "X Bad" v;
    }
--- must_die
--- error_log eval
qr/\[emerg\] .*lb_add_header: invalid header name "X Bad": a space is not allowed in an HTTP token in \S*nginx\.conf:\d+/



=== TEST 32: config error: a header name with ':'
--- config
    location /t {
        lb_add_header X-Bad: v;
    }
--- must_die
--- error_log eval
qr/\[emerg\] .*lb_add_header: invalid header name "X-Bad:": ':' is not allowed in an HTTP token in \S*nginx\.conf:\d+/



=== TEST 33: config error: a literal value with a real newline (LF)
--- config
    location /t {
        lb_add_header X-A "a
b";
    }
--- must_die
--- error_log eval
qr/\[emerg\] .*lb_add_header: invalid value "a\\nb" for header "X-A": LF is not allowed in a header value in \S*nginx\.conf:\d+/



=== TEST 34: config error: a literal value with CR (nginx's "\r" escape)
--- config
    location /t {
        lb_add_header X-A "a\rb";
    }
--- must_die
--- error_log eval
qr/\[emerg\] .*lb_add_header: invalid value "a\\rb" for header "X-A": CR is not allowed in a header value in \S*nginx\.conf:\d+/



=== TEST 35: config error: a value with a variable and a real newline is still rejected
--- config
    location /t {
        lb_add_header X-A "$uri
x";
    }
--- must_die
--- error_log eval
qr/\[emerg\] .*lb_add_header: invalid value "\$uri\\nx" for header "X-A": LF is not allowed in a header value in \S*nginx\.conf:\d+/



=== TEST 36: config error: 1 argument
--- config
    location /t {
        lb_add_header X-A;
    }
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid number of arguments in "lb_add_header" directive in \S*nginx\.conf:\d+/



=== TEST 37: config error: 4 arguments
--- config
    location /t {
        lb_add_header X-A v always extra;
    }
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid number of arguments in "lb_add_header" directive in \S*nginx\.conf:\d+/



=== TEST 38: config error: unknown flag
--- config
    location /t {
        lb_add_header X-A v sometimes;
    }
--- must_die
--- error_log eval
qr/\[emerg\] .*lb_add_header: invalid parameter "sometimes": the only flag is "always" in \S*nginx\.conf:\d+/



=== TEST 39: config error: an empty name
--- config
    location /t {
        lb_add_header "" v;
    }
--- must_die
--- error_log eval
qr/\[emerg\] .*lb_add_header: empty header name in \S*nginx\.conf:\d+/



=== TEST 40: config error: at http level too (the error names the file and line)
--- http_config
    lb_add_header "X Bad" v;
--- config
    location /t { return 200; }
--- must_die
--- error_log eval
qr/\[emerg\] .*lb_add_header: invalid header name "X Bad": a space is not allowed in an HTTP token in \S*nginx\.conf:\d+/



=== TEST 41: HTTPS: the header a TLS server block adds comes back through proxy_pass https (verified)
--- http_config
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2 ssl;
        server_name localhost;
        ssl_certificate $TEST_NGINX_CERT_DIR/localhost.crt;
        ssl_certificate_key $TEST_NGINX_CERT_DIR/localhost.key;
        location / {
            lb_add_header X-Tls-Https $https;
            lb_add_header X-Tls-Scheme $scheme;
            return 200 "tls backend\n";
        }
    }
--- config
    location /t {
        proxy_pass https://127.0.0.1:$TEST_NGINX_RAND_PORT_2;
        proxy_ssl_verify on;
        proxy_ssl_trusted_certificate $TEST_NGINX_CERT_DIR/ca.crt;
        proxy_ssl_name localhost;
        proxy_ssl_server_name on;
    }
--- request
GET /t
--- response_headers
X-Tls-Https: on
X-Tls-Scheme: https
--- response_body
tls backend



=== TEST 42: HTTPS with SNI: the backend.test virtual server (its own cert) adds its header
--- http_config
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_3 ssl;
        server_name localhost;
        ssl_certificate $TEST_NGINX_CERT_DIR/localhost.crt;
        ssl_certificate_key $TEST_NGINX_CERT_DIR/localhost.key;
        lb_add_header X-Vhost default;
        location / { return 200 "default\n"; }
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_3 ssl;
        server_name backend.test;
        ssl_certificate $TEST_NGINX_CERT_DIR/backend.test.crt;
        ssl_certificate_key $TEST_NGINX_CERT_DIR/backend.test.key;
        lb_add_header X-Vhost $ssl_server_name;
        location / { return 200 "backend.test\n"; }
    }
--- config
    location /t {
        proxy_pass https://127.0.0.1:$TEST_NGINX_RAND_PORT_3;
        proxy_set_header Host backend.test;
        proxy_ssl_verify on;
        proxy_ssl_trusted_certificate $TEST_NGINX_CERT_DIR/ca.crt;
        proxy_ssl_name backend.test;
        proxy_ssl_server_name on;
    }
--- request
GET /t
--- response_headers
X-Vhost: backend.test
--- response_body
backend.test



=== TEST 43: HTTPS to an untrusted (self-signed) backend fails verification: 502, `always` header only
--- http_config
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_4 ssl;
        server_name localhost;
        ssl_certificate $TEST_NGINX_CERT_DIR/untrusted.crt;
        ssl_certificate_key $TEST_NGINX_CERT_DIR/untrusted.key;
        location / { return 200 "should not be seen\n"; }
    }
--- config
    location /t {
        lb_add_header X-Front f always;
        lb_add_header X-Plain p;
        proxy_pass https://127.0.0.1:$TEST_NGINX_RAND_PORT_4;
        proxy_ssl_verify on;
        proxy_ssl_trusted_certificate $TEST_NGINX_CERT_DIR/ca.crt;
        proxy_ssl_name localhost;
    }
--- request
GET /t
--- error_code: 502
--- response_headers
X-Front: f
!X-Plain
--- error_log
upstream SSL certificate verify error



=== TEST 44: HTTP/2 (h2c): headers are added, in order
--- http2
--- skip_eval: 5: $::RealH2Broken
--- config
    location /t {
        lb_add_header X-Proto $server_protocol;
        lb_add_header X-A 1;
        lb_add_header X-B 2;
        return 200 "ok\n";
    }
--- request
GET /t
--- response_headers
X-Proto: HTTP/2.0
X-A: 1
X-B: 2
--- response_body
ok



=== TEST 45: HTTP/2 (h2c): `always` on a 404, plain header absent
--- http2
--- skip_eval: 3: $::RealH2Broken
--- config
    location /t {
        lb_add_header X-Plain p;
        lb_add_header X-Always a always;
        return 404;
    }
--- request
GET /t
--- error_code: 404
--- response_headers
!X-Plain
X-Always: a



=== TEST 46: HTTP/2 on every nginx and engine: an h2c server block reached through grpc_pass
--- http_config
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_5 http2;
        location / {
            lb_add_header X-H2-Proto $server_protocol;
            lb_add_header X-Plain p;
            return 200 "h2 backend\n";
        }
    }
--- config
    location /t {
        grpc_pass grpc://127.0.0.1:$TEST_NGINX_RAND_PORT_5;
    }
--- request
GET /t
--- response_headers
X-H2-Proto: HTTP/2.0
X-Plain: p
--- response_body
h2 backend



=== TEST 47: HTTP/2 through grpc_pass: `always` on the h2c server's 404, plain header absent
--- http_config
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_6 http2;
        location / {
            lb_add_header X-Always a always;
            lb_add_header X-Plain p;
            return 404;
        }
    }
--- config
    location /t {
        grpc_pass grpc://127.0.0.1:$TEST_NGINX_RAND_PORT_6;
    }
--- request
GET /t
--- error_code: 404
--- response_headers
X-Always: a
!X-Plain



=== TEST 48: HTTP/1.0 request
--- config
    location /t {
        lb_add_header X-Proto $server_protocol;
        return 200 "ok\n";
    }
--- request
GET /t HTTP/1.0
--- response_headers
X-Proto: HTTP/1.0
--- response_body
ok
