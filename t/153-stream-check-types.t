# Stream checks beyond the connect: send=/expect= over TCP (a Redis-like PING), UDP datagrams,
# TLS handshakes; and their configuration errors. The peers are stream servers of the same
# nginx that answer with `return`; the status page (http) shows each peer's state and reason.
use lib 't/lib';
use Test::Nginx::LB 'no_plan';

BEGIN {
    my $dir = `t/gen-certs.sh`;
    $? == 0 or die "t/gen-certs.sh failed\n";
    chomp $dir;
    $ENV{TEST_NGINX_CERT_DIR} = $dir;
}

repeat_each(1);
no_shuffle();
check_accum_error_log();
run_tests();

__DATA__

=== TEST 1: send/expect: a peer answering +PONG is up, one answering an error reply is down
--- stream_config
    upstream redis {
        lb_upstream;
        lb_check type=tcp send="PING\r\n" expect=~"^\+PONG" interval=100ms rise=1 fall=1;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
    }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1; return "+PONG\r\n"; }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2; return "-LOADING Redis is loading\r\n"; }
--- config
    location /status { lb_status; }
--- init
Time::HiRes::sleep(0.6);
--- request
GET /status
--- response_body_like
"address": "127\.0\.0\.1:\d+",.*"state": "up",.*"last_reason": "passed",.*"address": "127\.0\.0\.1:\d+",.*"state": "unhealthy",.*"last_reason": "answer does not match",
--- error_log eval
qr/lb: peer 127\.0\.0\.1:\d+ in stream upstream "redis" is down after 1 failed check\(s\): answer does not match/
--- no_error_log
[error]



=== TEST 2: expect as a byte prefix with hex escapes (binary protocols), and a banner read without send
--- stream_config
    upstream bin {
        lb_upstream;
        lb_check type=tcp send=\x00\x01 expect=\x4f\x4B interval=100ms rise=1 fall=1;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
    }
    upstream smtp {
        lb_upstream;
        lb_check type=tcp expect=220 interval=100ms rise=1 fall=1;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_3;
    }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1; return "OK"; }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2; return "NO"; }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_3; return "220 mail ESMTP\r\n"; }
--- config
    location /status { lb_status; }
--- init
Time::HiRes::sleep(0.6);
--- request
GET /status
--- response_body_like
"name": "bin",.*"state": "up",.*"state": "unhealthy",.*"last_reason": "answer does not match",.*"name": "smtp",.*"state": "up",
--- error_log eval
qr/lb: peer 127\.0\.0\.1:\d+ in stream upstream "bin" is down after 1 failed check\(s\): answer does not match/



=== TEST 3: a peer that closes before answering
--- stream_config
    upstream u {
        lb_upstream;
        lb_check type=tcp expect=PONG interval=100ms rise=1 fall=1;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
    }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1; return ""; }
--- config
    location /status { lb_status; }
--- init
Time::HiRes::sleep(0.6);
--- request
GET /status
--- response_body_like
"state": "unhealthy",.*"last_reason": "closed before the expected answer",



=== TEST 4: UDP: a datagram answered by a UDP server is up, a closed port is down at once (port unreachable)
timeout=1s, but the closed port's failure comes from ICMP at once: the first probes (spread
over a quarter interval from the start: within 0.5 s) have their verdicts when the page is
read 1.2 s later.
--- stream_config
    upstream dns {
        lb_upstream;
        lb_check type=udp send=ping expect=pong interval=2s timeout=1s rise=1 fall=1;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
    }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1 udp; return "pong"; }
--- config
    location /status { lb_status; }
--- init
Time::HiRes::sleep(1.2);
--- request
GET /status
--- response_body_like
"checks": \{\s*"type": "udp",.*"state": "up",.*"last_reason": "passed",.*"state": "unhealthy",.*"last_reason": "port unreachable",
--- error_log eval
qr/lb: peer 127\.0\.0\.1:\d+ in stream upstream "dns" is down after 1 failed check\(s\): port unreachable/



=== TEST 6: TLS: a handshake with a trusted certificate is up, an untrusted one is down
--- stream_config
    upstream tls {
        lb_upstream;
        lb_check type=tls verify=on ca=$TEST_NGINX_CERT_DIR/ca.crt host=localhost expect=ok interval=100ms rise=1 fall=1;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1 ssl;
        ssl_certificate $TEST_NGINX_CERT_DIR/localhost.crt;
        ssl_certificate_key $TEST_NGINX_CERT_DIR/localhost.key;
        return "ok";
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2 ssl;
        ssl_certificate $TEST_NGINX_CERT_DIR/untrusted.crt;
        ssl_certificate_key $TEST_NGINX_CERT_DIR/untrusted.key;
        return "ok";
    }
--- config
    location /status { lb_status; }
--- init
Time::HiRes::sleep(0.8);
--- request
GET /status
--- response_body_like
"checks": \{\s*"type": "tls",.*"state": "up",.*"last_reason": "passed",.*"state": "unhealthy",.*"last_reason": "certificate not trusted \(verify error \d+\)",
--- error_log eval
qr/lb: peer 127\.0\.0\.1:\d+ in stream upstream "tls" is down after 1 failed check\(s\): certificate not trusted/



=== TEST 7: send without expect
--- stream_config
    upstream u { lb_upstream; lb_check type=tcp send=PING; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log
lb_check: "send" needs "expect" (what the answer must start with)



=== TEST 8: bad hex escape
--- stream_config
    upstream u { lb_upstream; lb_check type=tcp send=\x0G expect=x; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log
lb_check: invalid value "\\x0G" for "send": bad hex escape



=== TEST 9: type=udp without send
--- stream_config
    upstream u { lb_upstream; lb_check type=udp; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log
lb_check: type=udp needs "send"



=== TEST 10: type=udp in an http upstream
--- http_config
    upstream u { lb_upstream; lb_check type=udp send=x expect=y; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log
lb_check: "type=udp" is not allowed in an http upstream



=== TEST 11: send/expect on an http check
--- http_config
    upstream u { lb_upstream; lb_check type=http send=x expect=y; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log
lb_check: "send" needs type=tcp, udp or tls



=== TEST 12: a bad expect regex
--- stream_config
    upstream u { lb_upstream; lb_check type=tcp send=x expect=~"(unclosed"; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log
lb_check: invalid regex in "expect"



=== TEST 13: TLS parameters on a tcp check
--- stream_config
    upstream u { lb_upstream; lb_check type=tcp sni=on; server 127.0.0.1:1; }
--- config
--- must_die
--- error_log
lb_check: "sni" needs type=https or type=tls
