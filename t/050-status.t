# lb_status: JSON, Prometheus and HTML views of the shared per-peer state.
use lib 't/lib';
use Test::Nginx::LB 'no_plan';
use JSON::PP ();
use File::Temp ();

# `--- json_check`: Perl code run with $json (the decoded body of the block's last response)
# and $body (raw); it returns a list of [ok, name] pairs, each reported as one test.
# `--- prometheus_check`: the body is parsed by Debian's python3-prometheus-client; the code
# gets $families ({ name => { "label=value,..." => value } }) and returns pairs likewise.
# `--- json_vs_prometheus`: the body holds "JSON-----PROM" (two SSI includes); every counter in
# the JSON must equal the Prometheus sample for the same upstream and peer.
add_response_body_check(sub {
    my ($block, $body, $req_idx, $repeated_req_idx, $dry_run) = @_;
    return if $dry_run;
    my $n = ref $block->request eq 'ARRAY' ? scalar @{ $block->request } : 1;
    return unless $req_idx == $n - 1;
    my $name = $block->name;
    if (defined(my $code = $block->json_check)) {
        my $json = eval { JSON::PP::decode_json($body) };
        ok(defined $json, "$name - body is valid JSON") or diag($@);
        return unless $json;
        my @checks = eval $code;
        die "json_check: $@" if $@;
        ok($_->[0], "$name - $_->[1]") for @checks;
    }
    if (defined(my $code = $block->prometheus_check)) {
        my $families = parse_prometheus($body);
        ok($families, "$name - body parses as Prometheus text");
        return unless $families;
        my @checks = eval $code;
        die "prometheus_check: $@" if $@;
        ok($_->[0], "$name - $_->[1]") for @checks;
    }
    if (defined $block->json_vs_prometheus) {
        my ($j, $p) = split /-----/, $body, 2;
        my $json = JSON::PP::decode_json($j);
        my $fam = parse_prometheus($p) or return fail("$name - prometheus part parses");
        my $compared = 0;
        for my $u (@{ $json->{upstreams} }) {
            for my $peer (@{ $u->{peers} }) {
                my $key = "kind=$u->{kind},peer=$peer->{address},upstream=$u->{name}";
                my %want = (
                    nginx_lb_peer_requests => $peer->{requests},
                    nginx_lb_peer_fails => $peer->{fails},
                    nginx_lb_peer_active => $peer->{active},
                    nginx_lb_peer_weight => $peer->{weight},
                );
                for my $m (sort keys %want) {
                    is($fam->{$m}{$key}, $want{$m}, "$name - $m for $peer->{address}");
                    $compared++;
                }
                my $h = $peer->{response_time_histogram};
                is($fam->{nginx_lb_peer_response_time_seconds_count}{$key}, $h->{count},
                   "$name - histogram count for $peer->{address}");
                is($h->{count}, $peer->{requests}, "$name - histogram counts every request to $peer->{address}");
                is($h->{counts}[-1], $h->{count}, "$name - JSON: the last cumulative count is the total");
                is($fam->{nginx_lb_peer_response_time_seconds_bucket}{"kind=$u->{kind},le=0.005,peer=$peer->{address},upstream=$u->{name}"}, $h->{counts}[0],
                   "$name - first bucket for $peer->{address}");
                $compared += 4;
                for my $class (qw(1xx 2xx 3xx 4xx 5xx)) {
                    is($fam->{nginx_lb_peer_responses}{"code=$class,$key"},
                       $peer->{responses}{$class}, "$name - responses $class for $peer->{address}");
                    $compared++;
                }
            }
        }
        ok($compared > 0, "$name - compared $compared values");
    }
});

# Parses Prometheus text with the real client library; returns
# { family => { "k=v,k=v" (sorted labels) => value } } or undef.
sub parse_prometheus {
    my ($text) = @_;
    my $tmp = File::Temp->new;
    print $tmp $text;
    close $tmp;
    my $py = <<'PY';
import sys, json
from prometheus_client.parser import text_string_to_metric_families
out = {}
for fam in text_string_to_metric_families(open(sys.argv[1]).read()):
    for s in fam.samples:
        key = ",".join("%s=%s" % kv for kv in sorted(s.labels.items()))
        # Samples of a histogram by their own names: _bucket, _sum, _count.
        name = s.name if fam.type == "histogram" else fam.name
        out.setdefault(name, {})[key] = s.value
print(json.dumps(out))
PY
    # Debian's interpreter: python3-prometheus-client is installed for it, whatever python3
    # comes first on PATH.
    my $out = `/usr/bin/python3 -c '$py' $tmp 2>&1`;
    if ($? != 0) {
        diag("prometheus parse failed: $out");
        return undef;
    }
    return JSON::PP::decode_json($out);
}

repeat_each(1);
no_shuffle();
run_tests();

__DATA__

=== TEST 1: JSON by default, with the documented fields, after some traffic
--- http_config
    upstream backend {
        lb_upstream;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1 weight=2;
        server localhost:$TEST_NGINX_RAND_PORT_2;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_3 backup;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_4 down;
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
        location / { return 200 "ok"; }
        location /missing { return 404; }
    }
--- config
    location /t/ { proxy_pass http://backend/; }
    location /status { lb_status; }
--- request eval
["GET /t/", "GET /t/", "GET /t/missing", "GET /status"]
--- error_code eval
[200, 200, 404, 200]
--- response_headers_like eval
["", "", "", "Content-Type: application/json"]
--- json_check
# Peers come in configuration order, primaries (down ones included) before backups; the
# real Test::Nginx keeps random ports out of the environment, so go by position.
my ($u) = @{ $json->{upstreams} };
my ($a, $b, $down, $backup) = @{ $u->{peers} };
(
  [$u->{name} eq 'backend' && $u->{method} eq 'round_robin', 'upstream name and method'],
  [@{ $u->{peers} } == 4, 'four peers'],
  [$a->{requests} == 2 && $b->{requests} == 1, "requests 2 and 1 (got $a->{requests}, $b->{requests})"],
  [$a->{responses}{'2xx'} + $b->{responses}{'2xx'} == 2, 'two 2xx responses'],
  [$a->{responses}{'4xx'} + $b->{responses}{'4xx'} == 1, 'one 4xx response'],
  [$b->{name} =~ /^localhost:\d+$/ && $b->{address} =~ /^127\.0\.0\.1:\d+$/, 'name as written in server, address resolved'],
  [$a->{weight} == 2 && !$a->{backup}, 'weight and backup'],
  [$backup->{backup}, 'backup flagged'],
  [$down->{state} eq 'down', 'configured down'],
  [$a->{state} eq 'up' && $a->{active} == 0, 'up, no active connection'],
  [!defined $a->{health_checks}, 'no health_checks without lb_check'],
  [defined $a->{response_time_ms}, 'response time present'],
  [exists $a->{fails} && exists $a->{unavail}, 'fails and unavail present'],
)



=== TEST 2: states unhealthy (checks) and unavailable (passive), with the reason
--- http_config
    limit_req_zone $server_port zone=pace:1m rate=4r/s;
    upstream backend {
        lb_upstream;
        lb_check type=http interval=200ms timeout=200ms rise=1 fall=1 uri=/health;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
    }
    upstream passive {
        lb_upstream;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_5 max_fails=1 fail_timeout=30s;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        location / { return 200 "a"; }
        location /empty { return 204; }
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
        location / { return 500 "b is sick"; }
    }
--- config
    location /sleep { limit_req zone=pace burst=20; try_files /slept.txt =404; }
    location /p/ { proxy_pass http://passive/empty; }
    location /status { lb_status; }
--- user_files
>>> slept.txt
slept
--- request eval
["GET /sleep", "GET /sleep", "GET /sleep", "GET /p/", "GET /status"]
--- error_code eval
[200, 200, 200, 204, 200]
--- timeout: 10
--- json_check
my %u = map { $_->{name} => $_ } @{ $json->{upstreams} };
my ($fine, $sick) = @{ $u{backend}{peers} };
my ($dead) = @{ $u{passive}{peers} };
(
  [$sick->{state} eq 'unhealthy', "sick peer unhealthy (got $sick->{state})"],
  [$sick->{health_checks}{last_reason} eq 'HTTP 500', "last_reason HTTP 500 (got $sick->{health_checks}{last_reason})"],
  [$sick->{health_checks}{unhealthy} == 1, 'made unhealthy once'],
  [JSON::PP::is_bool($sick->{health_checks}{last_passed}) && !$sick->{health_checks}{last_passed}, 'last_passed false'],
  [$sick->{health_checks}{last_change} > 1_600_000_000_000, 'last_change is a wall-clock time in ms'],
  [$sick->{health_checks}{downtime} > 0, 'downtime counts the current down period'],
  [$fine->{state} eq 'up' && $fine->{health_checks}{last_passed}, 'fine peer up, last check passed'],
  [$fine->{health_checks}{checks} >= 2, "fine peer checked several times ($fine->{health_checks}{checks})"],
  [$u{backend}{checks}{type} eq 'http' && $u{backend}{checks}{interval_ms} == 200, 'check summary'],
  [JSON::PP::is_bool($u{backend}{checks}{keepalive}) && $u{backend}{checks}{keepalive}, 'checks keep their connections (the default)'],
  [$dead->{state} eq 'unavailable', "passively failed peer unavailable (got $dead->{state})"],
  [$dead->{fails} == 1 && $dead->{unavail} == 1, 'fails and unavail counted'],
)



=== TEST 3: ?upstream= filters, and the output stays valid JSON
--- http_config
    upstream one { lb_upstream; server 127.0.0.1:$TEST_NGINX_RAND_PORT_1; }
    upstream two { lb_upstream; server 127.0.0.1:$TEST_NGINX_RAND_PORT_2; }
--- config
    location /status { lb_status; }
--- request
GET /status?upstream=two
--- json_check
(
  [@{ $json->{upstreams} } == 1, 'one upstream'],
  [$json->{upstreams}[0]{name} eq 'two', 'the one asked for'],
)



=== TEST 4: unknown upstream: 404 with a JSON error
--- http_config
    upstream one { lb_upstream; server 127.0.0.1:$TEST_NGINX_RAND_PORT_1; }
--- config
    location /status { lb_status; }
--- request
GET /status?upstream=nope
--- error_code: 404
--- response_headers
Content-Type: application/json
--- json_check
([$json->{error} eq 'unknown upstream "nope"', 'error names the upstream'])



=== TEST 5: unknown format: 400 with a JSON error
--- http_config
    upstream one { lb_upstream; server 127.0.0.1:$TEST_NGINX_RAND_PORT_1; }
--- config
    location /status { lb_status; }
--- request
GET /status?format=yaml
--- error_code: 400
--- json_check
([$json->{error} =~ /unknown format "yaml"/, 'error names the format'])



=== TEST 6: a client that allow/deny rejects gets 403
--- http_config
    upstream one { lb_upstream; server 127.0.0.1:$TEST_NGINX_RAND_PORT_1; }
--- config
    location /status { lb_status; allow 10.255.255.1; deny all; }
--- request
GET /status
--- error_code: 403
--- response_body_unlike
upstreams



=== TEST 7: HTML page: text/html, every peer, refreshes itself
--- http_config
    upstream one {
        lb_upstream;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2 down;
    }
    upstream two { lb_upstream; server 127.0.0.1:$TEST_NGINX_RAND_PORT_3 backup; server 127.0.0.1:$TEST_NGINX_RAND_PORT_4; }
--- config
    location /status { lb_status; }
--- request
GET /status?format=html
--- response_headers
Content-Type: text/html; charset=utf-8
--- response_body_like eval
qr{^<!DOCTYPE html>.*http-equiv="refresh".*upstream one.*<tr><td class="l">127\.0\.0\.1:\d+</td>.*<tr><td class="l">127\.0\.0\.1:\d+</td>.*>down</span>.*upstream two.*<tr><td class="l">127\.0\.0\.1:\d+</td>.*<tr><td class="l">127\.0\.0\.1:\d+ \(backup\)</td>}s



=== TEST 8: Prometheus text parses with prometheus_client
--- http_config
    upstream "backend" {
        lb_upstream;
        lb_check type=tcp interval=200ms;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
    }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1; return 200 "ok"; }
--- config
    location /t { proxy_pass http://backend; }
    location /status { lb_status; }
--- request eval
["GET /t", "GET /t", "GET /status?format=prometheus"]
--- wait: 0.1
--- response_headers_like eval
["", "", "Content-Type: text/plain; version=0\\.0\\.4; charset=utf-8"]
--- prometheus_check
my ($key) = keys %{ $families->{nginx_lb_peer_requests} };
(
  [$families->{nginx_lb_peer_requests}{$key} == 2, 'requests_total is 2'],
  [$families->{nginx_lb_peer_responses}{"code=2xx,$key"} == 2, 'responses_total 2xx is 2'],
  [$key =~ /^kind=http,peer=127\.0\.0\.1:\d+,upstream=backend$/, "one peer in upstream backend ($key)"],
  [(grep { /state=up,upstream=backend$/ && $families->{nginx_lb_peer_state}{$_} == 1 } keys %{ $families->{nginx_lb_peer_state} }) == 1, 'state up is 1'],
  [exists $families->{nginx_lb_peer_health_checks}{$key}, 'health check counter present'],
  [defined $families->{nginx_lb_peer_up}{$key}, 'peer_up gauge present'],
  [$families->{nginx_lb_peer_response_time_seconds_count}{$key} == 2,
   'the response-time histogram counted both responses'],
  [$families->{nginx_lb_peer_response_time_seconds_bucket}{$key =~ s/^kind=http,/kind=http,le=+Inf,/r} == 2, 'its +Inf bucket too'],
  [$families->{nginx_lb_peer_response_time_seconds_bucket}{$key =~ s/^kind=http,/kind=http,le=0.005,/r} <= 2, 'and its first bucket at most'],
  [defined $families->{nginx_lb_peer_response_time_seconds_sum}{$key}, 'and its sum'],
)



=== TEST 9: Accept: text/plain; version=0.0.4 selects Prometheus
--- http_config
    upstream one { lb_upstream; server 127.0.0.1:$TEST_NGINX_RAND_PORT_1; }
--- config
    location /status { lb_status; }
--- request
GET /status
--- more_headers
Accept: text/plain; version=0.0.4
--- response_body_like eval
qr/^# HELP nginx_lb_/



=== TEST 10: Prometheus carries the same numbers as the JSON (filtered, awkward names escaped)
--- http_config
    upstream "we\"ird" {
        lb_upstream;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_1 weight=3;
        server 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
    }
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_2;
        location / { return 200 "ok"; }
        location /boom { return 503; }
    }
--- config
    location /t/ { proxy_pass http://we"ird/; }
    location /page.html { ssi on; }
    location /status { lb_status; }
--- user_files
>>> page.html
<!--# include virtual="/status?upstream=we%22ird" wait="yes" -->-----<!--# include virtual="/status?upstream=we%22ird&format=prometheus" wait="yes" -->
--- request eval
["GET /t/", "GET /t/", "GET /t/boom", "GET /t/", "GET /page.html"]
--- error_code eval
[200, 200, 503, 200, 200]
--- json_vs_prometheus



=== TEST 11: $lb_peer, $lb_peer_state and $lb_upstream in an access log line and a header
--- http_config
    log_format lb '$request lb_upstream=$lb_upstream lb_peer=$lb_peer lb_peer_state=$lb_peer_state';
    upstream backend {
        lb_upstream;
        server localhost:$TEST_NGINX_RAND_PORT_1;
    }
    server { listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1; return 200 "ok"; }
--- config
    access_log logs/access.log lb;
    location /t {
        lb_add_header X-LB "$lb_upstream/$lb_peer/$lb_peer_state";
        proxy_pass http://backend;
    }
--- request
GET /t
--- response_headers_like
X-LB: backend/localhost:\d+/up
--- access_log eval
qr{GET /t HTTP/1\.1 lb_upstream=backend lb_peer=localhost:\d+ lb_peer_state=up}



=== TEST 12: the variables are empty ("-" in the log) for a request that used no lb upstream
--- http_config
    log_format lb '$request lb_upstream=$lb_upstream lb_peer=$lb_peer lb_peer_state=$lb_peer_state';
    upstream backend { lb_upstream; server 127.0.0.1:$TEST_NGINX_RAND_PORT_1; }
--- config
    access_log logs/access.log lb;
    location /plain { return 200 "plain"; }
--- request
GET /plain
--- access_log eval
qr{GET /plain HTTP/1\.1 lb_upstream=- lb_peer=- lb_peer_state=-}



=== TEST 13: HTML: a strict Content-Security-Policy, the api= path as an escaped attribute, the table for browsers without JavaScript
--- http_config
    upstream one { lb_upstream; server 127.0.0.1:$TEST_NGINX_RAND_PORT_1; }
--- config
    location /status { lb_status api=/lb-api/; }
--- request
GET /status?format=html
--- response_headers_like
Content-Security-Policy: default-src 'none'; script-src 'sha256-[A-Za-z0-9+/]{43}='; style-src 'sha256-[A-Za-z0-9+/]{43}='; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'
--- response_body_like eval
qr{^<!DOCTYPE html>.*<noscript><meta http-equiv="refresh" content="5"></noscript>.*<body data-api="/lb-api/">.*<main id="tables">.*<tr><td class="l">127\.0\.0\.1:\d+</td>.*</main>\n<div id="dash"></div>\n<script>.*</script>\n</body></html>\n\z}s



=== TEST 14: lb_status api= without a final slash gets one; the JSON has no policy header
--- http_config
    upstream one { lb_upstream; server 127.0.0.1:$TEST_NGINX_RAND_PORT_1; }
--- config
    location /status { lb_status api=/admin/lb; }
--- request eval
["GET /status?format=html", "GET /status"]
--- response_body_like eval
[qr{<body data-api="/admin/lb/">}, qr{"upstreams"}]
--- response_headers eval
["", "!Content-Security-Policy"]



=== TEST 15: lb_status api= must be a path on this server
--- http_config
    upstream one { lb_upstream; server 127.0.0.1:$TEST_NGINX_RAND_PORT_1; }
--- config
    location /status { lb_status api=//elsewhere.example/lb-api/; }
--- must_die
--- error_log
lb_status: invalid api="//elsewhere.example/lb-api/": expected a path on this server, starting with one "/"



=== TEST 16: lb_status takes api= only
--- http_config
    upstream one { lb_upstream; server 127.0.0.1:$TEST_NGINX_RAND_PORT_1; }
--- config
    location /status { lb_status refresh=1s; }
--- must_die
--- error_log
lb_status: invalid parameter "refresh=1s" (expected api=/path/ of an lb_api location)
