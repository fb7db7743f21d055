# lb_status and lb_api's lists with a few thousand peers: answers that take more than one piece
# are streamed (chunked, made a piece per event, shell/stream.rs). Every format parses and is
# complete, several upstreams and repeated addresses come out right across piece boundaries,
# a client that reads slowly gets the same bytes as a fast one while the worker keeps serving
# others, a client that leaves half-way leaves nothing behind, and small answers keep their
# Content-Length. Scripted (Test::LB::Server), one worker.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Time::HiRes qw(sleep time);
use IO::Socket::INET;
use Socket qw(SOL_SOCKET SO_RCVBUF);
use JSON::PP ();
use File::Temp ();
use POSIX ();
use Test::LB::Server;

my $s = Test::LB::Server->new(name => 'status_large', workers => 1);

# Upstream "a": 2,000 peers on addresses nothing listens on (no traffic goes there, so their
# values stay put), one address three times, every 50th a backup; "b": 700 peers and lb_panic;
# "c": one real peer with checks (a small answer); "d": two peers without checks after it.
my ($NA, $NB) = (2000, 700);
my @a = map { sprintf '127.1.%d.%d:%d', int($_ / 250), $_ % 250 + 1, 9000 + $_ % 7 } 0 .. $NA - 1;
$a[1500] = $a[1000] = $a[10];
my @b = map { sprintf '127.2.%d.%d:81', int($_ / 250), $_ % 250 + 1 } 0 .. $NB - 1;
my $servers_a = join '', map {
    "        server $a[$_]" . ($_ % 50 == 49 ? ' backup' : '') . ";\n"
} 0 .. $#a;
my $servers_b = join '', map { "        server $_;\n" } @b;

$s->start(<<"CONF");
    upstream a {
        lb_upstream;
$servers_a    }
    upstream b {
        lb_upstream least_conn;
        lb_panic 50%;
$servers_b    }
    upstream c {
        lb_upstream;
        server 127.0.0.1:__PORT2__;
        lb_check type=http uri=/ interval=200ms;
    }
    upstream d {
        lb_upstream;
        server 127.3.0.1:80;
        server 127.3.0.2:80;
    }
    server {
        listen 127.0.0.1:__PORT2__;
        location / { return 200 "backend"; }
    }
    server {
        # Small socket buffers: a client that reads slowly holds nginx back at once.
        listen 127.0.0.1:__PORT1__ sndbuf=32k;
        location = /ok { return 200 "ok"; }
        location = /status { lb_status; }
        location /api/ { lb_api; }
    }
CONF

# One HTTP/1.1 request, its answer read $chunk bytes at a time (sleeping $pause s between
# reads, with a small receive buffer when $pause > 0). Returns (status, headers, body decoded,
# number of chunks, seconds).
sub get11 {
    my ($path, %o) = @_;
    my $t0 = time;
    my $c = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $s->port(1),
                                  Proto => 'tcp', Timeout => 10)
        or die "connect: $!";
    setsockopt($c, SOL_SOCKET, SO_RCVBUF, 65536) if $o{pause};
    my $method = $o{method} // 'GET';
    print $c "$method $path HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    my $raw = '';
    while (1) {
        my $n = sysread($c, my $buf, $o{chunk} // 65536);
        last unless $n;
        $raw .= $buf;
        last if defined $o{upto} && length($raw) >= $o{upto};
        sleep $o{pause} if $o{pause};
    }
    close $c;
    my ($head, $rest) = split /\r\n\r\n/, $raw, 2;
    $rest //= '';
    my ($code) = ($head // '') =~ m{^HTTP/1\.1 (\d+)};
    # Chunks: their number if the framing is right and the last chunk came, else -1.
    my ($body, $chunks) = ($rest, 0);
    if (($head // '') =~ /^Transfer-Encoding: chunked/mi) {
        ($body, $chunks) = ('', -1);
        my $n = 0;
        while ($rest =~ s/^([0-9a-fA-F]+)\r\n//) {
            my $len = hex $1;
            if ($len == 0) { $chunks = $n if $rest eq "\r\n"; last }
            $body .= substr($rest, 0, $len, '');
            $rest =~ s/^\r\n// or last;
            $n++;
        }
    }
    return ($code // 0, $head // '', $body, $chunks, time - $t0);
}

sub json_of { my $j = eval { JSON::PP::decode_json($_[0]) }; diag($@) if $@; $j }

# Prometheus text parsed by Debian's python3-prometheus-client (as in t/050):
# { family => { "label=value,..." => value } }, or undef.
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
        name = s.name if fam.type == "histogram" else fam.name
        out.setdefault(name, {})[key] = s.value
print(json.dumps(out))
PY
    my $out = `/usr/bin/python3 -c '$py' $tmp 2>&1`;
    if ($? != 0) {
        diag("prometheus parse failed: " . substr($out, 0, 2000));
        return undef;
    }
    return JSON::PP::decode_json($out);
}

# --- JSON, chunked, every upstream and peer in order.
my ($code, $head, $body, $chunks) = get11('/status');
is($code, 200, 'JSON: 200');
like($head, qr/^Transfer-Encoding: chunked/mi, 'JSON: chunked');
unlike($head, qr/^Content-Length/mi, 'JSON: no Content-Length');
cmp_ok($chunks, '>', 10, "JSON: sent in pieces ($chunks chunks, well framed, last chunk)");
my $st = json_of($body);
ok($st, 'JSON: parses');
is_deeply([ map { $_->{name} } @{ $st->{upstreams} } ], [qw(a b c d)], 'JSON: upstreams in order');
my %u = map { $_->{name} => $_ } @{ $st->{upstreams} };
my @want_a = ((map { $a[$_] } grep { $_ % 50 != 49 } 0 .. $#a),
              (map { $a[$_] } grep { $_ % 50 == 49 } 0 .. $#a));
is_deeply([ map { $_->{address} } @{ $u{a}{peers} } ], \@want_a,
          'JSON: every peer of a, primaries then backups, repeats included');
is_deeply([ map { $_->{address} } @{ $u{b}{peers} } ], \@b, 'JSON: every peer of b');
is(scalar @{ $u{c}{peers} }, 1, 'JSON: c has its peer');
ok(defined $u{c}{peers}[0]{health_checks}, 'JSON: c\'s peer has its checks');
is_deeply([ map { $_->{health_checks} } @{ $u{d}{peers} } ], [undef, undef],
          'JSON: the peers of d after it have none');
ok(!grep({ defined $_->{health_checks} } @{ $u{a}{peers} }, @{ $u{b}{peers} }),
   'JSON: nor have those of a and b');
is($u{b}{panic}, JSON::PP::false, 'JSON: b is not in panic (upstream fields kept)');
ok(exists $u{a}{peers}[0]{response_time_histogram}{counts}, 'JSON: peers have every field');
like($body, qr/\A\{\n  "module_version": ".*?",\n  "nginx_version"/, 'JSON: pretty, as before');
like($body, qr/\n  \]\n\}\n\z/, 'JSON: ends as before');

# --- The same bytes over HTTP/1.0 (no chunks), for the upstreams whose values stay put.
my ($c10, $b10) = $s->get('/status?upstream=a');
my (undef, undef, $b11) = get11('/status?upstream=a');
s/\n  "time": \d+,\n/\n  "time": T,\n/ for $b10, $b11;
is($c10, 200, 'HTTP/1.0: 200');
ok($b10 eq $b11, 'HTTP/1.0 and chunked HTTP/1.1 answers are the same bytes');

# --- Prometheus: parses, every series once, repeated addresses numbered.
my ($pc, $ph, $prom) = get11('/status?format=prometheus');
is($pc, 200, 'Prometheus: 200');
like($ph, qr/^Transfer-Encoding: chunked/mi, 'Prometheus: chunked');
my $fam = parse_prometheus($prom);
ok($fam, 'Prometheus: parses');
my $states = $fam->{nginx_lb_peer_state} // {};
is(scalar keys %$states, 7 * ($NA + $NB + 3), 'Prometheus: 7 state series per peer, each once');
is(scalar keys %{ $fam->{nginx_lb_peer_weight} // {} }, $NA + $NB + 3, 'Prometheus: a weight per peer');
is_deeply([ keys %{ $fam->{nginx_lb_peer_health_checks} // {} } ], ["kind=http,peer=127.0.0.1:" . $s->port(2) . ",upstream=c"],
          'Prometheus: health checks only for the checked peer');
ok(exists $fam->{nginx_lb_peer_weight}{"kind=http,peer=$a[10]#3,upstream=a"}, 'Prometheus: the third line of one address is #3');
ok(!exists $fam->{nginx_lb_peer_weight}{"kind=http,peer=$a[10]#4,upstream=a"}, 'Prometheus: and there is no #4');
is($fam->{nginx_lb_upstream_panic}{'kind=http,upstream=b'}, 0, 'Prometheus: panic of b');
my %families;
my $last = '';
my $regrouped = 0;
for (split /\n/, $prom) {
    next if /^#/;
    my ($name) = /^(\w+?)(?:_bucket|_sum|_count)?\{/ or next;
    $regrouped++ if $name ne $last && $families{$name}++;
    $last = $name;
}
is($regrouped, 0, 'Prometheus: each family in one group');
my ($hc, $hh, $html) = get11('/status?format=html');
is($hc, 200, 'HTML: 200');
my $rows = () = $html =~ /<tr><td class="l">/g;
is($rows, $NA + $NB + 3, 'HTML: a row per peer');
like($html, qr{</table></div>\n</main>\n<div id="dash"></div>\n<script>.*</script>\n</body></html>\n\z}s, 'HTML: complete');

# --- lb_api's lists: compact JSON, streamed.
my ($ac, $ah, $api) = get11('/api/upstreams');
like($ah, qr/^Transfer-Encoding: chunked/mi, 'API list: chunked');
my $list = json_of($api);
is_deeply([ map { scalar @{ $_->{peers} } } @{ $list // [] } ], [$NA, $NB, 1, 2], 'API list: every peer');
unlike($api, qr/\n/, 'API list: compact');
my (undef, undef, $peers) = get11('/api/upstreams/b/peers');
is_deeply([ map { $_->{address} } @{ json_of($peers) // [] } ], \@b, 'API peers of b: all, in order');
my (undef, undef, $one) = get11('/api/upstreams/b');
is(scalar @{ (json_of($one) // {})->{peers} // [] }, $NB, 'API upstream b: all its peers');
my (undef, undef, $peer) = get11("/api/upstreams/a/peers/$a[5]");
is((json_of($peer) // {})->{address}, $a[5], 'API one peer');

# --- A client that reads slowly gets all of it, and meanwhile the worker serves others.
my $fast = (get11('/status?upstream=a&format=prometheus'))[2];
my $pid = fork // die "fork: $!";
if (!$pid) {
    my (undef, undef, $slow, undef, $secs) =
        get11('/status?upstream=a&format=prometheus', chunk => 65536, pause => 0.005);
    open my $out, '>', $s->dir . '/slow' or POSIX::_exit(1);
    print $out $slow;
    close $out;
    open $out, '>', $s->dir . '/slow.secs' or POSIX::_exit(1);
    print $out $secs;
    close $out;
    POSIX::_exit(0);
}
sleep 0.3;
my $worst = 0;
for (1 .. 10) {
    my $t0 = time;
    my ($okc) = $s->get('/ok');
    $worst = time - $t0 if time - $t0 > $worst;
    is($okc, 200, 'another request while the slow client reads') if $_ == 1;
    sleep 0.05;
}
cmp_ok($worst, '<', 0.5, sprintf('other requests are answered at once (slowest %.3f s)', $worst));
waitpid($pid, 0);
my $slow = $s->slurp('slow') // '';
my $secs = $s->slurp('slow.secs') // 0;
cmp_ok($secs, '>', 0.3, sprintf('the slow client was slow (%.1f s)', $secs));
is(length $slow, length $fast, 'the slow client got every byte');
ok($slow eq $fast, 'the slow client got the same bytes');

# --- Clients that leave half-way, and a HEAD request.
my $wpid = ($s->worker_pids)[0];
for my $upto (1, 30_000, 200_000) {
    my ($lc) = get11('/status?format=prometheus', chunk => 4096, upto => $upto);
    is($lc, 200, "a client that leaves after $upto bytes");
}
my ($headc, $headh, $headb) = get11('/status', method => 'HEAD');
is($headc, 200, 'HEAD: 200');
is($headb, '', 'HEAD: no body');
sleep 0.3;
my ($okc, $okb) = $s->get('/ok');
is("$okc $okb", '200 ok', 'the worker serves requests after them');
is(($s->worker_pids)[0], $wpid, 'the same worker (nothing crashed)');
my ($again) = get11('/status?upstream=a&format=prometheus');
is($again, 200, 'and streams again');

# --- A small answer is sent as before, whole, with Content-Length.
my ($sc, $sh, $sb) = get11('/status?upstream=c');
is($sc, 200, 'small answer: 200');
like($sh, qr/^Content-Length: (\d+)/mi, 'small answer: Content-Length');
unlike($sh, qr/^Transfer-Encoding/mi, 'small answer: not chunked');
ok(json_of($sb), 'small answer: parses');

my $log = $s->error_log;
unlike($log, qr/\[(alert|crit|emerg)\]/, 'no alert in the error log');
unlike($log, qr/zero size buf/, 'no empty buffer sent');

$s->cleanup if Test::More->builder->is_passing;
done_testing();
