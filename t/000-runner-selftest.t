# Self-test of the test harness (t/lib/Test/Nginx/LB.pm and, unless the real
# Test::Nginx::Socket is used, t/lib/Test/Nginx/LB/Runner.pm).
# Only stock nginx features are used here; the lb module is merely loaded.
use strict;
use warnings;
use lib 't/lib';
use Test::Nginx::LB 'no_plan';
use Cwd qw(abs_path);
use File::Temp qw(tempdir);

# A throw-away self-signed certificate for the https block (no key is kept
# in the repository).
{
    my $dir = tempdir('lb-selftest-cert-XXXXXX', TMPDIR => 1, CLEANUP => 1);
    my @cmd = ('openssl', 'req', '-x509', '-newkey', 'ec',
               '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
               '-keyout', "$dir/key.pem", '-out', "$dir/cert.pem",
               '-days', '2', '-subj', '/CN=localhost');
    system("@cmd >/dev/null 2>&1") == 0
        or die "cannot create a test certificate with openssl\n";
    $ENV{TEST_NGINX_SELFTEST_CERTS} = $dir;
}

Test::More::note('test engine: ' . Test::Nginx::LB::engine());
repeat_each(1);
no_shuffle();
run_tests();

# --- a failing expectation must make the test file fail -------------------
{
    my $lib = abs_path('t/lib');
    my $dir = tempdir('lb-selftest-XXXXXX', TMPDIR => 1, CLEANUP => 1);
    mkdir "$dir/t" or die "mkdir: $!";
    open my $fh, '>', "$dir/t/must-fail.t" or die "write: $!";
    print $fh <<"_T_";
use lib '$lib';
use Test::Nginx::LB;
plan tests => repeat_each() * 7;
no_shuffle();
run_tests();
__DATA__

=== TEST 1: passes
--- config
    location = /t { return 200 "actual\\n"; }
--- request
GET /t
--- response_body
actual

=== TEST 2: wrong body
--- config
    location = /t { return 200 "actual\\n"; }
--- request
GET /t
--- response_body
expected

=== TEST 3: wrong status, missing and unwanted log lines
--- config
    location = /t { return 200 "actual\\n"; }
--- request
GET /nope
--- error_log
this text is never logged
--- no_error_log
No such file or directory
_T_
    close $fh;

    local %ENV = %ENV;
    delete @ENV{ grep { /^TEST_NGINX_(?:SERVER_PORT|PORT|SERVROOT|SERVER_ROOT
                                     |HTML_DIR|RAND_PORT_\d+|LB_PID)$/x }
                 keys %ENV };
    my $out = `cd '$dir' && '$^X' t/must-fail.t 2>&1`;
    my $status = $?;
    isnt($status, 0, 'a .t file with failing expectations exits non-zero')
        or diag($out);
    unlike($out, qr/planned/, 'the plan (tests => N) of that file is right');
    like($out, qr/^ok \d+ - .*TEST 1: passes - status code ok/m,
         'its passing block reports ok');
    like($out, qr/^not ok \d+ - .*TEST 2: wrong body - response_body/m,
         'a wrong response body is reported as not ok');
    like($out, qr/^not ok \d+ - .*TEST 3: .*status code/m,
         'a wrong status code is reported as not ok');
    like($out, qr/^not ok \d+ - .*TEST 3: .*never logged/m,
         'a missing error_log line is reported as not ok');
    like($out, qr/^not ok \d+ - .*TEST 3: .*No such file or directory/m,
         'an unwanted error_log line is reported as not ok');
}

__DATA__

=== TEST 1: return with a body
--- config
    location = /t {
        return 200 "hello\n";
    }
--- request
GET /t
--- response_body
hello
--- error_code: 200



=== TEST 2: response_headers, absent headers and more_headers
--- config
    location = /h {
        add_header X-Foo bar;
        return 200 "x-test=$http_x_test\n";
    }
--- request
GET /h
--- more_headers
X-Test: abc
--- response_headers
X-Foo: bar
Content-Type: text/plain
!X-Missing
--- response_body
x-test=abc



=== TEST 3: error_code, error_log and no_error_log
--- config
    location = /t { return 200 "ok\n"; }
--- request
GET /does-not-exist.html
--- error_code: 404
--- error_log
No such file or directory
--- no_error_log
[alert]
[crit]



=== TEST 4: must_die with a bad directive
--- config
    no_such_directive_here on;
--- must_die
--- error_log
unknown directive "no_such_directive_here"



=== TEST 5: several requests (request eval) and response_body_like
--- config
    location = /a { return 200 "A\n"; }
    location = /b { return 200 "B\n"; }
--- request eval
["GET /a", "GET /b"]
--- response_body_like eval
["^A\$", "^B\$"]



=== TEST 6: request_eval (the older spelling)
--- config
    location = /a { return 200 "A\n"; }
--- request_eval
"GET /a"
--- response_body
A



=== TEST 7: a backend server in http_config behind proxy_pass
--- http_config
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        location / {
            return 200 "backend saw $uri\n";
        }
    }
--- config
    location /p/ {
        proxy_pass http://127.0.0.1:$TEST_NGINX_RAND_PORT_1/;
    }
--- request
GET /p/hi
--- response_body
backend saw /hi



=== TEST 8: HTTP/2 through curl
--- skip_nginx: 2: < 1.25.1
--- http2
--- config
    location = /h2 {
        return 200 "protocol=$server_protocol\n";
    }
--- request
GET /h2
--- response_body
protocol=HTTP/2.0



=== TEST 9: https listener through curl
--- skip_nginx: 2: < 1.25.1
--- http2
--- curl_protocol: https
--- curl_options: -k
--- config
    listen 127.0.0.1:$TEST_NGINX_SERVER_PORT ssl;
    ssl_certificate $TEST_NGINX_SELFTEST_CERTS/cert.pem;
    ssl_certificate_key $TEST_NGINX_SELFTEST_CERTS/key.pem;
    location = /s {
        return 200 "https=$https\n";
    }
--- request
GET /s
--- response_body
https=on



=== TEST 10: wait, then look at the access log
--- config
    location = /w { return 200 "w\n"; }
--- request
GET /w
--- wait: 0.2
--- access_log
"GET /w HTTP/1.1" 200



=== TEST 11: HTTP/1.0 request, response_headers_like, raw_response_headers_like
--- config
    location = /t { return 200 "ten\n"; }
--- request
GET /t HTTP/1.0
--- response_headers_like
Content-Length: \d+
Server: nginx.*
--- raw_response_headers_like: ^HTTP/1\.1 200 OK\r\n
--- response_body
ten



=== TEST 12: request body gets a Content-Length
--- config
    location = /len {
        return 200 "len=$content_length method=$request_method\n";
    }
--- request
POST /len
hello
--- response_body
len=5 method=POST



=== TEST 13: pipelined requests
--- config
    location = /a { return 200 "A\n"; }
    location = /b { return 200 "BB\n"; }
--- pipelined_requests eval
["GET /a", "GET /b"]
--- response_body eval
["A\n", "BB\n"]



=== TEST 14: raw_request
--- config
    location = /a { return 200 "A\n"; }
--- raw_request eval
"GET /a HTTP/1.0\r\nHost: localhost\r\n\r\n"
--- response_body
A



=== TEST 15: error_code_like, grep_error_log
--- config
    location = /t { return 200 "ok\n"; }
--- request
GET /missing.txt
--- error_code_like: ^4\d\d$
--- grep_error_log: No such file or directory
--- grep_error_log_out
No such file or directory



=== TEST 16: user_files, init and a timeout
--- user_files
>>> dir/static.txt
static file
--- init
open my $out, '>', "$ENV{TEST_NGINX_SERVER_ROOT}/html/from-init.txt" or die $!;
print $out "written by init\n";
close $out;
--- config
    location = /t { return 200 "ok\n"; }
--- request eval
["GET /dir/static.txt", "GET /from-init.txt"]
--- response_body eval
["static file\n", "written by init\n"]
--- timeout: 5



=== TEST 17: regexes in error_log and no_error_log
--- config
    location = /t { return 200 "ok\n"; }
--- request
GET /gone.txt
--- error_code: 404
--- error_log eval
qr/open\(\) "[^"]+gone\.txt" failed/
--- no_error_log eval
[qr/\[emerg\]/, "segmentation fault"]
