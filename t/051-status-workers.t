# lb_status with two workers: counters are shared, so the sums match the traffic exactly.
use lib 't/lib';
use Test::Nginx::LB 'no_plan';
use JSON::PP ();

add_response_body_check(sub {
    my ($block, $body, $req_idx, $repeated_req_idx, $dry_run) = @_;
    return if $dry_run;
    my $code = $block->json_check or return;
    return unless $req_idx == @{ $block->request } - 1;
    my $json = eval { JSON::PP::decode_json($body) };
    ok(defined $json, $block->name . " - body is valid JSON") or return diag($@);
    my @checks = eval $code;
    die "json_check: $@" if $@;
    ok($_->[0], $block->name . " - $_->[1]") for @checks;
});

workers(2);
master_on();
repeat_each(1);
no_shuffle();
run_tests();

__DATA__

=== TEST 1: 60 requests through two workers: requests and responses by class add up
--- http_config
    upstream backend {
        lb_upstream;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1 weight=2;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
        location /ok { return 200 "ok"; }
        location /nf { return 404; }
        location /err { return 503; }
    }
--- config
    location /t/ { proxy_pass http://backend/; }
    location /status { lb_status; }
--- request eval
[(map { ("GET /t/ok", "GET /t/ok", "GET /t/nf", "GET /t/err") } 1 .. 15), "GET /status"]
--- error_code eval
[(map { (200, 200, 404, 503) } 1 .. 15), 200]
--- json_check
my @peers = @{ $json->{upstreams}[0]{peers} };
my %sum;
for my $p (@peers) {
    $sum{requests} += $p->{requests};
    $sum{$_} += $p->{responses}{$_} for qw(1xx 2xx 3xx 4xx 5xx);
    $sum{active} += $p->{active};
}
(
  [$sum{requests} == 60, "requests add up to 60 (got $sum{requests})"],
  [$sum{'2xx'} == 30, "30 2xx (got $sum{'2xx'})"],
  [$sum{'4xx'} == 15, "15 4xx (got $sum{'4xx'})"],
  [$sum{'5xx'} == 15, "15 5xx (got $sum{'5xx'})"],
  [$sum{'1xx'} + $sum{'3xx'} == 0, 'no 1xx or 3xx'],
  [$sum{active} == 0, 'no connection left active'],
  [abs($peers[0]{requests} - 40) <= 2, "weight 2 peer got about 40 ($peers[0]{requests})"],
)
--- timeout: 20
