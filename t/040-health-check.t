# lb_check: active TCP/HTTP/HTTPS health checks, one worker.
#
# Each block makes ONE client request to an SSI page whose includes run one after another, so
# that time passes inside the request and the error log is checked once, after everything
# (--- ssi and --- max_gaps: see t/lib/Test/LB/SSIPage.pm). For example
#
#   --- ssi: sleep*3 | t*6
#
# waits 1 s, then sends six requests through the balancer; the body shows who answered them.
#
# Misbehaving peers come from t/misbehave.py (started once for the file, see BEGIN).
#
# Runs under our Test::Nginx::LB::Runner and the real Test::Nginx::Socket.

use strict;
use warnings;

use Cwd qw(abs_path);
use File::Basename qw(dirname);

BEGIN {
    my $t = dirname(abs_path(__FILE__));
    my $dir = `"$t/gen-certs.sh" "$t/certs"`;
    die "t/gen-certs.sh failed (exit " . ($? >> 8) . ")\n" if $? != 0;
    chomp $dir;
    $ENV{TEST_NGINX_CERT_DIR} = $dir;
}

use lib 't/lib';
use Test::Nginx::LB 'no_plan';
use Test::LB::Misbehave qw(start_misbehave reserve_port);
use Test::LB::SSIPage;

BEGIN {
    # One port per peer; flip's clock starts with its first connection, so only one block
    # may use it.
    start_misbehave(
        HANG    => 'hang',
        RESET   => 'reset',
        GARBAGE => 'garbage',
        ENDLESS => 'endless',
        BADTLS  => 'badtls',
        FLIP    => 'flip:2',
        STALE   => 'stale',
        EARLY   => 'early',
    );
    reserve_port('LATE');    # listens only from a block's --- init on
}

use_ssi_page();

repeat_each(1);
no_shuffle();
check_accum_error_log();
run_tests();

__DATA__

=== TEST 1: TCP check: a closed port goes down after fall=2 and gets no traffic; no connect() error
--- http_config
    upstream backend {
        lb_upstream;
        lb_check type=tcp interval=200ms fall=2 rise=2;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
    }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1; return 200 "a"; }
--- config
    location /t { proxy_pass http://backend; }
--- ssi: sleep*3 | t*6
--- response_body chomp
|aaaaaa
--- grep_error_log eval: qr/in upstream "[^"]+" is (?:up|down) after .*/
--- grep_error_log_out
in upstream "backend" is down after 2 failed check(s): connect failed (connection refused)
--- error_log eval
qr/\[warn\] .*lb: peer 127\.0\.0\.1:\d+ in upstream "backend" is down after 2 failed check\(s\): connect failed \(connection refused\)$/
--- no_error_log
connect() failed
[error]
--- timeout: 6



=== TEST 2: TCP check: a down peer comes back after rise=2 once something listens
LATE only listens 1.5 s after nginx has started: down at once, up again after 1.5 s.
--- http_config
    upstream backend {
        lb_upstream;
        lb_check type=tcp interval=200ms fall=2 rise=2;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        server 127.0.0.1:$TEST_NGINX_LATE_PORT;
    }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1; return 200 "a"; }
--- config
    location /t { proxy_pass http://backend; }
--- init
Test::LB::Misbehave::start_misbehave(LATE => 'ok@1.5');
--- ssi: sleep*2 | t*4 | sleep*4 | t*4
--- response_body_like chomp
^\|aaaa\|\|(?:aok|oka){2}$
--- grep_error_log eval: qr/in upstream "[^"]+" is (?:up|down) after .*/
--- grep_error_log_out
in upstream "backend" is down after 2 failed check(s): connect failed (connection refused)
in upstream "backend" is up after 2 passed check(s)
--- no_error_log
connect() failed
[error]
--- timeout: 8



=== TEST 3: HTTP check: HTTP 500 on the check uri takes the peer down; traffic avoids it
b answers 500 only on /health, so the balancer, not a failed request, keeps traffic away.
--- http_config
    upstream backend {
        lb_upstream;
        lb_check type=http uri=/health interval=200ms fall=2 rise=2;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
    }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1; return 200 "a"; }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
        location /health { return 500; }
        location / { return 200 "b"; }
    }
--- config
    location /t { proxy_pass http://backend; }
--- ssi: sleep*3 | t*6
--- response_body chomp
|aaaaaa
--- grep_error_log eval: qr/in upstream "[^"]+" is (?:up|down) after .*/
--- grep_error_log_out
in upstream "backend" is down after 2 failed check(s): HTTP 500
--- no_error_log
[error]
--- timeout: 6



=== TEST 4: HTTP check against a flipping peer: down after fall=2 (HTTP 500), up after rise=2
FLIP answers 200 "up" for 2 s from the first probe, then 500 for 2 s, then 200 again.
At 3 s it is down: only a serves; at 5 s it is up again and takes its turns.
--- http_config
    upstream backend {
        lb_upstream;
        lb_check type=http interval=200ms fall=2 rise=2;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        server 127.0.0.1:$TEST_NGINX_FLIP_PORT;
    }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1; return 200 "a"; }
--- config
    location /t { proxy_pass http://backend; }
--- ssi: sleep*7 | t*4 | sleep*4 | t*4
--- response_body_like chomp
^\|aaaa\|\|(?:aup|upa){2}$
--- grep_error_log eval: qr/in upstream "[^"]+" is (?:up|down) after .*/
--- grep_error_log_out
in upstream "backend" is down after 2 failed check(s): HTTP 500
in upstream "backend" is up after 2 passed check(s)
--- no_error_log
[error]
--- timeout: 10



=== TEST 5: body=~regex: a body that does not match takes the peer down
--- http_config
    upstream backend {
        lb_upstream;
        lb_check type=http uri=/health body=~^ready$ interval=200ms fall=2 rise=2;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        location /health { return 200 "ready"; }
        location / { return 200 "a"; }
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
        location /health { return 200 "not ready"; }
        location / { return 200 "b"; }
    }
--- config
    location /t { proxy_pass http://backend; }
--- ssi: sleep*3 | t*6
--- response_body chomp
|aaaaaa
--- grep_error_log eval: qr/in upstream "[^"]+" is (?:up|down) after .*/
--- grep_error_log_out
in upstream "backend" is down after 2 failed check(s): body does not match
--- no_error_log
[error]
--- timeout: 6



=== TEST 6: status= list is honoured (204,301 pass, 200 fails); the default 200-399 takes 302, not 404
Each upstream has one peer; only bad200 and def404 go down.
--- http_config
    upstream ok204 {
        lb_upstream;
        lb_check type=http status=204,301 interval=200ms fall=2;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
    }
    upstream ok301 {
        lb_upstream;
        lb_check type=http status=204,301 interval=200ms fall=2;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
    }
    upstream bad200 {
        lb_upstream;
        lb_check type=http status=204,301 interval=200ms fall=2;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_3;
    }
    upstream def302 {
        lb_upstream;
        lb_check type=http interval=200ms fall=2;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_4;
    }
    upstream def404 {
        lb_upstream;
        lb_check type=http interval=200ms fall=2;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_5;
    }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1; return 204; }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2; return 301 /elsewhere; }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_3; return 200 "ok"; }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_4; return 302 /elsewhere; }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_5; return 404; }
--- config
    location /t { return 204; }
--- ssi: sleep*3
--- response_body chomp
--- grep_error_log eval: qr/in upstream "[^"]+" is (?:up|down) after .*/
--- grep_error_log_out eval
qr/\A(?:in upstream "bad200" is down after 2 failed check\(s\): HTTP 200\nin upstream "def404" is down after 2 failed check\(s\): HTTP 404\n|in upstream "def404" is down after 2 failed check\(s\): HTTP 404\nin upstream "bad200" is down after 2 failed check\(s\): HTTP 200\n)\z/
--- no_error_log
[error]
--- timeout: 6



=== TEST 7: a hanging peer goes down by timeout; requests keep their normal latency meanwhile
Probes of HANG keep hanging for 300 ms every 500 ms; eight requests through the balancer in
between take no time, and the page takes no longer than its sleeps.
--- http_config
    upstream backend {
        lb_upstream;
        lb_check type=http interval=500ms timeout=300ms fall=2 rise=2;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        server 127.0.0.1:$TEST_NGINX_HANG_PORT;
    }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1; return 200 "a"; }
--- config
    location /t { proxy_read_timeout 10s; proxy_pass http://backend; }
--- ssi: time | sleep*4 | time | t*8 | time
--- response_body_like chomp
^\d+\.\d+\|\|\d+\.\d+\|a{8}\|\d+\.\d+$
--- max_gaps: 1.8 0.25
--- grep_error_log eval: qr/in upstream "[^"]+" is (?:up|down) after .*/
--- grep_error_log_out
in upstream "backend" is down after 2 failed check(s): timed out
--- no_error_log
[error]
--- timeout: 6



=== TEST 8: a peer answering garbage goes down: not an HTTP/1.x response
--- http_config
    upstream backend {
        lb_upstream;
        lb_check type=http interval=200ms fall=2 rise=2;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        server 127.0.0.1:$TEST_NGINX_GARBAGE_PORT;
    }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1; return 200 "a"; }
--- config
    location /t { proxy_pass http://backend; }
--- ssi: sleep*3 | t*6
--- response_body chomp
|aaaaaa
--- grep_error_log eval: qr/in upstream "[^"]+" is (?:up|down) after .*/
--- grep_error_log_out
in upstream "backend" is down after 2 failed check(s): not an HTTP/1.x response
--- no_error_log
[error]
--- timeout: 6



=== TEST 9: a peer resetting the connection goes down: connection broken
--- http_config
    upstream backend {
        lb_upstream;
        lb_check type=http interval=200ms fall=2 rise=2;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        server 127.0.0.1:$TEST_NGINX_RESET_PORT;
    }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1; return 200 "a"; }
--- config
    location /t { proxy_pass http://backend; }
--- ssi: sleep*3 | t*6
--- response_body chomp
|aaaaaa
--- grep_error_log eval: qr/in upstream "[^"]+" is (?:up|down) after .*/
--- grep_error_log_out eval
qr/\Ain upstream "backend" is down after 2 failed check\(s\): connection broken(?: \(connection reset\))?\n\z/
--- no_error_log
[error]
--- timeout: 6



=== TEST 10: a peer sending an endless body goes down: response longer than 16 KiB
--- http_config
    upstream backend {
        lb_upstream;
        lb_check type=http interval=200ms fall=2 rise=2;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        server 127.0.0.1:$TEST_NGINX_ENDLESS_PORT;
    }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1; return 200 "a"; }
--- config
    location /t { proxy_pass http://backend; }
--- ssi: sleep*3 | t*6
--- response_body chomp
|aaaaaa
--- grep_error_log eval: qr/in upstream "[^"]+" is (?:up|down) after .*/
--- grep_error_log_out
in upstream "backend" is down after 2 failed check(s): response longer than 16 KiB
--- no_error_log
[error]
--- timeout: 6



=== TEST 11: HTTPS check against a peer that does not speak TLS: TLS handshake failed
--- http_config
    upstream backend {
        lb_upstream;
        lb_check type=https interval=200ms fall=2 rise=2;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        server 127.0.0.1:$TEST_NGINX_BADTLS_PORT;
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1 ssl;
        ssl_certificate $TEST_NGINX_CERT_DIR/localhost.crt;
        ssl_certificate_key $TEST_NGINX_CERT_DIR/localhost.key;
        return 200 "a";
    }
--- config
    location /t { proxy_pass https://backend; }
--- ssi: sleep*3 | t*6
--- response_body chomp
|aaaaaa
--- grep_error_log eval: qr/in upstream "[^"]+" is (?:up|down) after .*/
--- grep_error_log_out
in upstream "backend" is down after 2 failed check(s): TLS handshake failed
--- no_error_log
[error]
--- timeout: 6



=== TEST 12: HTTPS with SNI: host=backend.test passes a server that rejects other names
The TLS port's default server rejects every handshake (ssl_reject_handshake); only the name
backend.test has a certificate. Without host= (the peer is an IP: no SNI) or with sni=off the
handshake fails.
--- http_config
    upstream sni {
        lb_upstream;
        lb_check type=https host=backend.test interval=200ms fall=2 rise=2 default=down;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
    }
    upstream nosni {
        lb_upstream;
        lb_check type=https interval=200ms fall=2 rise=2;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
    }
    upstream snioff {
        lb_upstream;
        lb_check type=https host=backend.test sni=off interval=200ms fall=2 rise=2;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1 ssl default_server;
        ssl_reject_handshake on;
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1 ssl;
        server_name backend.test;
        ssl_certificate $TEST_NGINX_CERT_DIR/backend.test.crt;
        ssl_certificate_key $TEST_NGINX_CERT_DIR/backend.test.key;
        return 200 "b";
    }
--- config
    location /t {
        proxy_ssl_server_name on;
        proxy_ssl_name backend.test;
        proxy_set_header Host backend.test;
        proxy_pass https://sni;
    }
--- ssi: sleep*3 | t*2
--- response_body chomp
|bb
--- grep_error_log eval: qr/in upstream "[^"]+" is (?:up|down) after .*/
--- grep_error_log_out eval
qr/\A(?=(?:.*\n){3}\z)(?=[\s\S]*^in upstream "sni" is up after 2 passed check\(s\)$)(?=[\s\S]*^in upstream "nosni" is down after 2 failed check\(s\): TLS handshake failed$)(?=[\s\S]*^in upstream "snioff" is down after 2 failed check\(s\): TLS handshake failed$)/m
--- no_error_log
[error]
--- timeout: 6



=== TEST 13: failed TLS probes are not logged, only the state change (no [crit] SSL_do_handshake() failed)
The server rejects the handshake with an "unrecognized name" alert, which nginx's own TLS code
logs at crit: probes must keep it out of the error log like every other probe error.
--- http_config
    upstream nosni {
        lb_upstream;
        lb_check type=https interval=200ms fall=2 rise=2;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1 ssl default_server;
        ssl_reject_handshake on;
    }
--- config
    location /t { return 204; }
--- ssi: sleep*3
--- response_body chomp
--- error_log
in upstream "nosni" is down after 2 failed check(s): TLS handshake failed
--- no_error_log
SSL_do_handshake() failed
[crit]
--- timeout: 6



=== TEST 14: verify=on: an untrusted certificate fails, the right CA and name pass
--- http_config
    upstream untrusted {
        lb_upstream;
        lb_check type=https verify=on ca=$TEST_NGINX_CERT_DIR/ca.crt host=localhost interval=200ms fall=2 rise=2;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
    }
    upstream trusted {
        lb_upstream;
        lb_check type=https verify=on ca=$TEST_NGINX_CERT_DIR/ca.crt host=backend.test interval=200ms fall=2 rise=2 default=down;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
    }
    upstream noverify {
        lb_upstream;
        lb_check type=https interval=200ms fall=2 rise=2 default=down;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1 ssl;
        ssl_certificate $TEST_NGINX_CERT_DIR/untrusted.crt;
        ssl_certificate_key $TEST_NGINX_CERT_DIR/untrusted.key;
        return 200 "u";
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2 ssl;
        ssl_certificate $TEST_NGINX_CERT_DIR/backend.test.crt;
        ssl_certificate_key $TEST_NGINX_CERT_DIR/backend.test.key;
        return 200 "b";
    }
--- config
    location /t { return 204; }
--- ssi: sleep*3
--- response_body chomp
--- grep_error_log eval: qr/in upstream "[^"]+" is (?:up|down) after .*/
--- grep_error_log_out eval
qr/\A(?=(?:.*\n){3}\z)(?=[\s\S]*^in upstream "untrusted" is down after 2 failed check\(s\): certificate not trusted \(verify error \d+\)$)(?=[\s\S]*^in upstream "trusted" is up after 2 passed check\(s\)$)(?=[\s\S]*^in upstream "noverify" is up after 2 passed check\(s\)$)/m
--- timeout: 6



=== TEST 15: verify=on checks the name: a trusted certificate for another name fails
--- http_config
    upstream wrongname {
        lb_upstream;
        lb_check type=https verify=on ca=$TEST_NGINX_CERT_DIR/ca.crt host=other.test interval=200ms fall=2 rise=2;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
    }
    upstream rightname {
        lb_upstream;
        lb_check type=https verify=on ca=$TEST_NGINX_CERT_DIR/ca.crt host=backend.test interval=200ms fall=2 rise=2 default=down;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1 ssl;
        ssl_certificate $TEST_NGINX_CERT_DIR/backend.test.crt;
        ssl_certificate_key $TEST_NGINX_CERT_DIR/backend.test.key;
        return 200 "b";
    }
--- config
    location /t { return 204; }
--- ssi: sleep*3
--- response_body chomp
--- grep_error_log eval: qr/in upstream "[^"]+" is (?:up|down) after .*/
--- grep_error_log_out eval
qr/\A(?=(?:.*\n){2}\z)(?=[\s\S]*^in upstream "wrongname" is down after 2 failed check\(s\): certificate does not match the host name$)(?=[\s\S]*^in upstream "rightname" is up after 2 passed check\(s\)$)/m
--- timeout: 6



=== TEST 16: cert= and key= send a client certificate
The server asks for a client certificate (any, not verified) and answers 403 without one.
--- http_config
    upstream withcert {
        lb_upstream;
        lb_check type=https cert=$TEST_NGINX_CERT_DIR/localhost.crt key=$TEST_NGINX_CERT_DIR/localhost.key interval=200ms fall=2 rise=2 default=down;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
    }
    upstream nocert {
        lb_upstream;
        lb_check type=https interval=200ms fall=2 rise=2;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1 ssl;
        ssl_certificate $TEST_NGINX_CERT_DIR/backend.test.crt;
        ssl_certificate_key $TEST_NGINX_CERT_DIR/backend.test.key;
        ssl_verify_client optional_no_ca;
        location / {
            if ($ssl_client_s_dn = "") { return 403; }
            return 200 "$ssl_client_s_dn";
        }
    }
--- config
    location /t { return 204; }
--- ssi: sleep*3
--- response_body chomp
--- grep_error_log eval: qr/in upstream "[^"]+" is (?:up|down) after .*/
--- grep_error_log_out eval
qr/\A(?=(?:.*\n){2}\z)(?=[\s\S]*^in upstream "withcert" is up after 2 passed check\(s\)$)(?=[\s\S]*^in upstream "nocert" is down after 2 failed check\(s\): HTTP 403$)/m
--- no_error_log
[error]
--- timeout: 6



=== TEST 17: default=down: no traffic until rise=3 checks have passed
The first include comes before any probe could pass three times: 502, no peer.
--- http_config
    upstream backend {
        lb_upstream;
        lb_check type=http interval=500ms rise=3 fall=2 default=down;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
    }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1; return 200 "a"; }
--- config
    location /t { proxy_pass http://backend; }
--- ssi: t | sleep*5 | t*3
--- response_body_like chomp
\A<html>.*502 Bad Gateway.*\|\|aaa\z
--- grep_error_log eval: qr/in upstream "[^"]+" is (?:up|down) after .*/
--- grep_error_log_out
in upstream "backend" is up after 3 passed check(s)
--- error_log
lb: no available peer in upstream "backend" (1 peers: 0 down, 0 failed, 0 at max_conns, 1 unhealthy
--- timeout: 6



=== TEST 18: port= probes another port than the traffic; the traffic ports never see a probe
Both peers answer 500 on /health, so they only come up (default=down) if the probes go to
port 3; the traffic servers' access log has nothing but /t.
--- http_config
    log_format req '$request';
    upstream backend {
        lb_upstream;
        lb_check type=http uri=/health port=$TEST_NGINX_RAND_PORT_3 interval=200ms rise=2 default=down;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        access_log logs/traffic.log req;
        location /health { return 500; }
        location / { return 200 "a"; }
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
        access_log logs/traffic.log req;
        location /health { return 500; }
        location / { return 200 "b"; }
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_3;
        access_log logs/probe.log req;
        location /health { return 200 "healthy"; }
    }
--- config
    location /t { proxy_pass http://backend; }
--- ssi: sleep*3 | t*4 | logs/traffic.log | logs/probe.log
--- response_body_like chomp
\A\|(?:ab|ba){2}\|(?:GET /t HTTP/1\.0\n){4}\|(?:GET /health HTTP/1\.1\n){4,}\z
--- grep_error_log eval: qr/in upstream "[^"]+" is (?:up|down) after .*/
--- grep_error_log_out
in upstream "backend" is up after 2 passed check(s)
in upstream "backend" is up after 2 passed check(s)
--- no_error_log
[error]
--- timeout: 6



=== TEST 19: method=HEAD sends HEAD (a GET check of the same peer fails)
--- http_config
    upstream head {
        lb_upstream;
        lb_check type=http method=HEAD uri=/health interval=200ms rise=2 fall=2 default=down;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
    }
    upstream get {
        lb_upstream;
        lb_check type=http uri=/health interval=200ms rise=2 fall=2;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        location /health {
            if ($request_method = HEAD) { return 200; }
            return 405;
        }
    }
--- config
    location /t { return 204; }
--- ssi: sleep*3
--- response_body chomp
--- grep_error_log eval: qr/in upstream "[^"]+" is (?:up|down) after .*/
--- grep_error_log_out eval
qr/\A(?=(?:.*\n){2}\z)(?=[\s\S]*^in upstream "head" is up after 2 passed check\(s\)$)(?=[\s\S]*^in upstream "get" is down after 2 failed check\(s\): HTTP 405$)/m
--- timeout: 6



=== TEST 20: a `down` server is not probed; the probe request is GET uri HTTP/1.1 with Host (and Connection: close with keepalive=off)
b is configured down: its access log stays empty while a's shows the probes.
host= replaces the Host header (the peer's address by default).
--- http_config
    log_format probe '$request|$http_host|$http_connection|$http_user_agent';
    upstream backend {
        lb_upstream;
        lb_check type=http uri=/health?x=1 interval=200ms;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2 down;
    }
    upstream named {
        lb_upstream;
        lb_check type=http uri=/named host=api.example:8080 interval=200ms keepalive=off;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_3;
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        location /health { access_log logs/a.log probe; return 200; }
        location / { return 200 "a"; }
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
        access_log logs/b.log probe;
        return 200 "b";
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_3;
        access_log logs/named.log probe;
        return 200;
    }
--- config
    location /t { proxy_pass http://backend; }
--- ssi: sleep*3 | t*3 | logs/b.log | logs/a.log | logs/named.log
--- response_body_like eval
qr{\A\|aaa\|\|(?:GET /health\?x=1 HTTP/1\.1\|127\.0\.0\.1:\d+\|-\|nginx-lb-check\n){4,}\|(?:GET /named HTTP/1\.1\|api\.example:8080\|close\|nginx-lb-check\n){4,}\z}
--- no_error_log
is down after
[error]
--- timeout: 6



=== TEST 21: keepalive: a peer's probes share one connection; a server's request limit and idle timeout only mean new connections
Each access log line is "connection number|request number on it". `kept` keeps one connection;
`limited` closes every 2nd request (keepalive_requests 2); `short` closes idle connections
before the next probe (keepalive_timeout 100ms). No probe fails: fall=1 would log it.
--- http_config
    log_format conn '$connection|$connection_requests';
    upstream kept {
        lb_upstream;
        lb_check type=http uri=/health interval=200ms fall=1;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
    }
    upstream limited {
        lb_upstream;
        lb_check type=http uri=/health interval=200ms fall=1;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
    }
    upstream short {
        lb_upstream;
        lb_check type=http uri=/health interval=200ms fall=1;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_3;
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        access_log logs/kept.log conn;
        return 200;
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
        keepalive_requests 2;
        access_log logs/limited.log conn;
        location / { return 200; }
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_3;
        keepalive_timeout 100ms;
        access_log logs/short.log conn;
        return 200;
    }
--- config
    location /t { return 200; }
--- ssi: sleep*3 | logs/kept.log | logs/limited.log | logs/short.log
--- response_body_like eval
qr{\A\|(\d+)\|1\n\1\|2\n\1\|3\n\1\|4\n(?:\1\|\d+\n)*\|(?:\d+\|1\n\d+\|2\n){2,}(?:\d+\|1\n)?\|(?:\d+\|1\n){4,}\z}
--- no_error_log
is down after
[error]
[alert]
--- timeout: 6



=== TEST 22: keepalive: a kept connection that the peer closes as the probe is sent is replaced, not counted as a failure
STALE answers the first request of each connection and resets the connection on the second.
With fall=1 a single failed probe would take it down.
--- http_config
    upstream backend {
        lb_upstream;
        lb_check type=http interval=200ms fall=1 rise=1;
        server 127.0.0.1:$TEST_NGINX_STALE_PORT;
    }
--- config
    location /t { return 200; }
    location /status { lb_status; }
--- ssi: sleep*3 | /status
--- response_body_like eval
qr{"state": "up",.*"health_checks": \{\s*"checks": (?:[4-9]|\d\d+),\s*"fails": 0,}s
--- no_error_log
is down after
[error]
[alert]
--- timeout: 6



=== TEST 23: keepalive over HTTPS: one TLS connection (one handshake) carries the probes
--- http_config
    log_format conn '$connection|$connection_requests|$ssl_protocol';
    upstream backend {
        lb_upstream;
        lb_check type=https uri=/health interval=200ms fall=1;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1 ssl;
        ssl_certificate $TEST_NGINX_CERT_DIR/localhost.crt;
        ssl_certificate_key $TEST_NGINX_CERT_DIR/localhost.key;
        access_log logs/tls.log conn;
        return 200;
    }
--- config
    location /t { return 200; }
--- ssi: sleep*3 | logs/tls.log
--- response_body_like eval
qr{\A\|(\d+)\|1\|TLSv[\d.]+\n\1\|2\|TLSv[\d.]+\n\1\|3\|TLSv[\d.]+\n\1\|4\|TLSv[\d.]+\n(?:\1\|\d+\|TLSv[\d.]+\n)*\z}
--- no_error_log
is down after
[error]
[alert]
--- timeout: 6



=== TEST 24: verify=on without a host name checks the peer's IP address in the certificate
localhost.crt names IP:127.0.0.1; backend.test.crt names only DNS:backend.test. Both are
signed by the trusted CA.
--- http_config
    upstream withip {
        lb_upstream;
        lb_check type=https verify=on ca=$TEST_NGINX_CERT_DIR/ca.crt interval=200ms fall=2 rise=2 default=down;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
    }
    upstream noip {
        lb_upstream;
        lb_check type=https verify=on ca=$TEST_NGINX_CERT_DIR/ca.crt interval=200ms fall=2 rise=2;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1 ssl;
        ssl_certificate $TEST_NGINX_CERT_DIR/localhost.crt;
        ssl_certificate_key $TEST_NGINX_CERT_DIR/localhost.key;
        return 200;
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2 ssl;
        ssl_certificate $TEST_NGINX_CERT_DIR/backend.test.crt;
        ssl_certificate_key $TEST_NGINX_CERT_DIR/backend.test.key;
        return 200;
    }
--- config
    location /t { return 204; }
--- ssi: sleep*3
--- response_body chomp
--- grep_error_log eval: qr/in upstream "[^"]+" is (?:up|down) after .*/
--- grep_error_log_out eval
qr/\A(?=(?:.*\n){2}\z)(?=[\s\S]*^in upstream "noip" is down after 2 failed check\(s\): certificate does not match the IP address$)(?=[\s\S]*^in upstream "withip" is up after 2 passed check\(s\)$)/m
--- timeout: 6



=== TEST 25: keepalive=off over HTTPS: each probe's new connection resumes the peer's TLS session; not with verify=on
With verify=on every connection checks the certificate with a full handshake.
--- http_config
    log_format tls '$ssl_session_reused';
    upstream backend {
        lb_upstream;
        lb_check type=https interval=200ms fall=1 keepalive=off;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
    }
    upstream verified {
        lb_upstream;
        lb_check type=https interval=200ms fall=1 keepalive=off verify=on ca=$TEST_NGINX_CERT_DIR/ca.crt host=localhost;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1 ssl;
        ssl_certificate $TEST_NGINX_CERT_DIR/localhost.crt;
        ssl_certificate_key $TEST_NGINX_CERT_DIR/localhost.key;
        access_log logs/resume.log tls;
        return 200;
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2 ssl;
        ssl_certificate $TEST_NGINX_CERT_DIR/localhost.crt;
        ssl_certificate_key $TEST_NGINX_CERT_DIR/localhost.key;
        access_log logs/full.log tls;
        return 200;
    }
--- config
    location /t { return 200; }
--- ssi: sleep*3 | logs/resume.log | logs/full.log
--- response_body_like eval
qr{\A\|\.\n(?:r\n){3,}\|(?:\.\n){4,}\z}
--- no_error_log
is down after
[error]
[alert]
--- timeout: 6



=== TEST 26: keepalive_time: a kept connection carries probes for at most that long, then a new one takes over
interval=100ms and keepalive_time=500ms: about five probes per connection, and several
connections in a second and a half.
--- http_config
    log_format conn '$connection|$connection_requests';
    upstream backend {
        lb_upstream;
        lb_check type=http interval=100ms keepalive_time=500ms fall=1;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        access_log logs/aged.log conn;
        return 200;
    }
--- config
    location /t { return 200; }
--- ssi: sleep*4 | logs/aged.log
--- response_body_like eval
qr{\A\|(?=(?:\d+\|\d+\n)*?\d+\|1\n(?:\d+\|\d+\n)*?\d+\|1\n(?:\d+\|\d+\n)*?\d+\|1\n)(?=(?:\d+\|\d+\n)*?\d+\|4\n)(?:\d+\|[1-8]\n){10,}\z}
--- no_error_log
is down after
[error]
[alert]
--- timeout: 8



=== TEST 27: interim 1xx responses (103 Early Hints, 100 Continue) before the 200 do not fail the check
EARLY sends "103 Early Hints" with a Link header, then "100 Continue", then 200 "ok", in
separate writes. It starts down (default=down) and must come up. (No traffic is sent to it:
nginx's proxy takes a 103 for the final response.)
--- http_config
    upstream backend {
        lb_upstream;
        lb_check type=http interval=200ms fall=1 rise=2 default=down;
        server 127.0.0.1:$TEST_NGINX_EARLY_PORT;
    }
--- config
    location /t { return 204; }
--- ssi: sleep*3
--- response_body chomp
--- grep_error_log eval: qr/in upstream "[^"]+" is (?:up|down) after .*/
--- grep_error_log_out
in upstream "backend" is up after 2 passed check(s)
--- no_error_log
is down after
[error]
--- timeout: 6
