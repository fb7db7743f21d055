# lb_upstream least_conn and p2c: behaviour under concurrency and with a slow peer (one worker).
use lib 't/lib';
use Test::Nginx::LB 'no_plan';

my %seen;
# `--- slow_share: S at most 20%`: the share of response bodies equal to S over the block.
add_response_body_check(sub {
    my ($block, $body, $req_idx, $repeated_req_idx, $dry_run) = @_;
    my $spec = $block->slow_share or return;
    return if $dry_run;
    my $name = $block->name;
    $seen{$name}{$body}++;
    my $n = @{ $block->request };
    return unless $req_idx == $n - 1;
    my ($peer, $max) = $spec =~ /^(\S+) at most (\d+)%$/ or die "bad slow_share: $spec";
    my $got = $seen{$name}{$peer} // 0;
    ok($got * 100 <= $max * $n, "$name - $peer got $got of $n (at most $max%)");
});

repeat_each(1);
no_shuffle();
run_tests();

__DATA__

=== TEST 1: p2c moves traffic away from a slow peer
Peer s answers only ten requests a second (limit_req queues the rest), peer f at once.
--- http_config
    limit_req_zone $server_port zone=slow:1m rate=10r/s;
    upstream backend {
        lb_upstream p2c decay=2s;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        root $TEST_NGINX_SERVER_ROOT/html;
        location / { limit_req zone=slow burst=100; try_files /s.txt =404; }
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
        location / { return 200 "f"; }
    }
--- config
    location /t { proxy_pass http://backend; }
--- user_files
>>> s.txt
s
--- request eval
[("GET /t") x 120]
--- response_body_like eval
[(qr/^[sf]\n?$/) x 120]
--- slow_share: s at most 20%
--- timeout: 30



=== TEST 2: round_robin gives the slow peer half the traffic (what p2c avoids)
--- http_config
    limit_req_zone $server_port zone=slow:1m rate=50r/s;
    upstream backend {
        lb_upstream;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        root $TEST_NGINX_SERVER_ROOT/html;
        location / { limit_req zone=slow burst=100; try_files /s.txt =404; }
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
        location / { return 200 "f"; }
    }
--- config
    location /t { proxy_pass http://backend; }
--- user_files
>>> s.txt
s
--- request eval
[("GET /t") x 20]
--- response_body eval
[("s\n", "f") x 10]
--- timeout: 10
