# lb_upstream with two workers: the split over all workers follows the weights.
use lib 't/lib';
use Test::Nginx::LB 'no_plan';

# `--- peer_share: a 600 b 400 tolerance 2%`: counts the response bodies of the block's
# requests and checks each share when the last response has arrived.
my %seen;
add_response_body_check(sub {
    my ($block, $body, $req_idx, $repeated_req_idx, $dry_run) = @_;
    my $spec = $block->peer_share or return;
    return if $dry_run;
    my $name = $block->name;
    $seen{$name}{$body}++;
    my $n = ref $block->request eq 'ARRAY' ? scalar @{ $block->request } : 1;
    return unless $req_idx == $n - 1;
    my ($pairs, $tol) = $spec =~ /^(.*?)\s+tolerance\s+(\d+)%\s*$/ or die "bad peer_share: $spec";
    my %want = split ' ', $pairs;
    for my $peer (sort keys %want) {
        my $got = $seen{$name}{$peer} // 0;
        my $slack = $want{$peer} * $tol / 100;
        ok(abs($got - $want{$peer}) <= $slack,
           "$name - peer $peer got $got of $n (want $want{$peer} ± $tol%)");
    }
});

workers(2);
master_on();
# Log checks see the whole block's log, so "exactly once" holds after every request.
check_accum_error_log();
repeat_each(1);
no_shuffle();
run_tests();

__DATA__

=== TEST 1: weights 3/2 through two workers over 1,000 requests: 600/400 within 2%
--- http_config
    upstream backend {
        lb_upstream;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1 weight=3;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2 weight=2;
    }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1; return 200 "a"; }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2; return 200 "b"; }
--- config
    location /t { proxy_pass http://backend; }
--- request eval
[("GET /t") x 1000]
--- response_body_like eval
[(qr/^[ab]$/) x 1000]
--- peer_share: a 600 b 400 tolerance 2%
--- timeout: 60



=== TEST 2: a failed peer is skipped by every worker (failures are shared)
--- http_config
    upstream backend {
        lb_upstream;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_4 max_fails=1 fail_timeout=30s;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
    }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1; return 200 "ok"; }
--- config
    location /t { proxy_pass http://backend; }
--- request eval
[("GET /t") x 40]
--- response_body eval
[("ok") x 40]
--- grep_error_log: connect() failed
--- grep_error_log_out
connect() failed



=== TEST 3: least_conn with weights 3/1 through two workers (idle peers: ties rotate by weight)
--- http_config
    upstream backend {
        lb_upstream least_conn;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1 weight=3;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
    }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1; return 200 "a"; }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2; return 200 "b"; }
--- config
    location /t { proxy_pass http://backend; }
--- request eval
[("GET /t") x 400]
--- response_body_like eval
[(qr/^[ab]$/) x 400]
--- peer_share: a 300 b 100 tolerance 2%
--- timeout: 30



=== TEST 4: p2c with weights 3/1 through two workers (equal peers: draws follow the weights)
# Ties go to the first draw, which follows the weights; a comparison is a tie while both
# response-time averages are below nginx's 1 ms clock tick. On a busy machine one slow
# response (a few ms) makes a peer lose every comparison until its average fades, which with
# the default decay=5s outlasts the test (CI once saw a 50/50 split). decay=1ms lets such a
# hiccup fade within a few ms, so the split shows the weights; t/070 covers slow peers.
--- http_config
    upstream backend {
        lb_upstream p2c decay=1ms;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1 weight=3;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
    }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1; return 200 "a"; }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2; return 200 "b"; }
--- config
    location /t { proxy_pass http://backend; }
--- request eval
[("GET /t") x 400]
--- response_body_like eval
[(qr/^[ab]$/) x 400]
--- peer_share: a 300 b 100 tolerance 50%
--- timeout: 30
