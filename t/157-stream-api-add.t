# lb_api adds and removes peers of a stream {} upstream (`lb_upstream max_added=N` with `zone`):
# POST/DELETE with ?kind=stream beside an http upstream of the same name, which stays untouched;
# an added peer is checked (a refusing one is kept out) and takes TCP connections, a removed
# one gets none; added peers come back from lb_state after a restart, each to its own kind.
# Scripted (TCP clients, a restart). Runs on nginx 1.22 too (no resolve needed). KEEP=1 keeps
# t/servroot_stream_api_add_PID.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use IO::Socket::INET;
use File::Path qw(make_path);
use Time::HiRes qw(sleep time);
use Test::LB::Server;

my $s = Test::LB::Server->new(name => 'stream_api_add', workers => 2, stream => <<'STREAM');
    upstream backend {
        lb_upstream max_added=2;
        zone backend 64k;
        lb_check type=tcp interval=200ms timeout=150ms rise=1 fall=1;
        server 127.0.0.1:__PORT3__;
    }
    server { listen 127.0.0.1:__PORT2__ reuseport; proxy_pass backend; proxy_connect_timeout 1s; }
    server { listen 127.0.0.1:__PORT3__; return "a"; }
    server { listen 127.0.0.1:__PORT4__; return "b"; }
STREAM
make_path($s->dir . '/state');
chmod 0777, $s->dir . '/state';    # workers run as nobody when nginx starts as root
my $conf = <<'CONF';
    lb_state __DIR__/state/lb.state;
    upstream backend {
        lb_upstream max_added=2;
        zone backend_http 64k;
        server 127.0.0.1:__PORT5__;
    }
    server { listen 127.0.0.1:__PORT5__; return 200 "h"; }
    server { listen 127.0.0.1:__PORT6__; return 200 "i"; }
    server {
        listen 127.0.0.1:__PORT1__;
        location /lb-api/ { lb_api write=on; }
        location /status { lb_status; }
        location / { proxy_pass http://backend; }
    }
CONF
$s->start($conf);

my ($A, $B) = map { '127.0.0.1:' . $s->port($_) } 3, 4;
my ($H, $I) = map { '127.0.0.1:' . $s->port($_) } 5, 6;
my $DEAD = '127.0.0.1:' . $s->port(7);    # nothing listens there

sub api { $s->json_request(@_) }

sub tcp {
    my $c = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $s->port(2), Timeout => 3)
        or return "connect: $!";
    local $/;
    my $got = <$c> // '';
    return length $got ? $got : '-';
}

# $n connections through the stream front: the answers seen, e.g. "a b" (two workers, each
# alternating on its own: each of them answers at least a fifth of the connections, or the
# answer says "(few X)").
sub tcps {
    my ($n) = @_;
    my %seen;
    $seen{ tcp() }++ for 1 .. $n;
    return join ' ', map { $seen{$_} * 5 >= $n ? $_ : "(few $_)" } sort keys %seen;
}

sub addresses {
    my ($kind) = @_;
    my ($code, $u) = api('GET', "/lb-api/upstreams/backend?kind=$kind");
    return "status $code" unless $code == 200;
    return join ' ', map { "$_->{address}/$_->{source}" } @{ $u->{peers} };
}

sub peer_state {
    my ($addr, $state, $seconds) = @_;
    my $until = time + $seconds;
    my $got = '';
    while (time < $until) {
        my ($code, $p) = api('GET', "/lb-api/upstreams/backend/peers/$addr?kind=stream");
        $got = $code == 200 ? $p->{state} : "status $code";
        return 1 if $got eq $state;
        sleep 0.05;
    }
    diag("peer $addr is $got, not $state");
    return 0;
}

# The start-up notice is in the error log, or on stderr where that is nginx's error log
# (Debian's nginx: --error-log-path=stderr).
like($s->error_log . $s->startup_output, qr/lb: stream upstream "backend": method round_robin, 1 peers \(0 backup, 0 down\), up to 2 added by lb_api/,
     'the start-up notice says how many peers lb_api may add');
is(tcps(4), 'a', 'before: connections go to a');

my ($code, $p, $text) = api('POST', '/lb-api/upstreams/backend/peers?kind=stream',
                            qq({"address": "$B"}));
is($code, 201, 'POST ?kind=stream: 201') or diag($text);
is("$p->{address} $p->{source}", "$B api", 'the answer is the new peer');
ok(peer_state($B, 'up', 3), 'the added stream peer is checked and up');
is(tcps(10), 'a b', 'connections are shared by a and the added b');
is(addresses('stream'), "$A/config $B/api", 'the stream upstream lists it');
is(addresses('http'), "$H/config", 'the http upstream of the same name is untouched');
like($s->error_log, qr/lb: api: peer \Q$B\E added to stream upstream "backend" \(weight 1\)/,
     'the addition is logged, naming the stream upstream');

($code, $p) = api('POST', '/lb-api/upstreams/backend/peers', qq({"address": "$I"}));
is($code, 201, 'POST without kind: the http upstream');
is(addresses('http'), "$H/config $I/api", 'the http upstream has its added peer');
is(addresses('stream'), "$A/config $B/api", 'the stream upstream does not');
my %http;
for (1 .. 8) { my (undef, $body) = $s->get('/'); $http{$body}++ }
is(join(' ', sort keys %http), 'h i', 'http requests use h and i') or diag(explain \%http);

($code, $p) = api('POST', '/lb-api/upstreams/backend/peers?kind=stream', qq({"address": "$DEAD"}));
is($code, 201, 'a refusing peer is added too');
ok(peer_state($DEAD, 'unhealthy', 3), 'its check fails');
my ($code2, $before) = api('GET', "/lb-api/upstreams/backend/peers/$DEAD?kind=stream");
is(tcps(10), 'a b', 'it gets no connection');
my ($code3, $after) = api('GET', "/lb-api/upstreams/backend/peers/$DEAD?kind=stream");
is($after->{requests}, $before->{requests}, 'not even an attempt');
($code, my $e) = api('POST', '/lb-api/upstreams/backend/peers?kind=stream', '{"address": "127.0.0.1:1"}');
is($code, 507, 'a third added peer: 507 (max_added=2)');

($code) = api('DELETE', "/lb-api/upstreams/backend/peers/$DEAD?kind=stream");
is($code, 204, 'DELETE ?kind=stream: 204');
($code) = api('DELETE', "/lb-api/upstreams/backend/peers/$A?kind=stream");
is($code, 409, 'a configured stream peer cannot be deleted');
($code) = api('DELETE', "/lb-api/upstreams/backend/peers/$B");
is($code, 404, 'without kind the http upstream is meant: it has no such peer');
is(addresses('stream'), "$A/config $B/api", 'the stream upstream kept b');

my $state = $s->slurp('state/lb.state') // '';
like($state, qr/"address": "\Q$B\E",\s*"kind": "stream"|"kind": "stream",[^}]*"address": "\Q$B\E"/s,
     'lb_state files the stream peer with its kind') or diag($state);

# A restart with a fresh zone: the added peers come back from the file, each to its kind.
$s->stop;
$s->start($conf);
like($s->error_log, qr/lb_state: restored \d+ peer change\(s\) and 2 added peer\(s\)/, 'restored at the start')
    or diag(join '', grep { /lb_state/ } split /^/, $s->error_log);
is(addresses('stream'), "$A/config $B/api", 'the stream upstream has b again');
is(addresses('http'), "$H/config $I/api", 'the http upstream has i again, and not b');
ok(peer_state($B, 'up', 3), 'b is checked and up');
is(tcps(10), 'a b', 'and takes connections');

($code) = api('DELETE', "/lb-api/upstreams/backend/peers/$B?kind=stream");
is($code, 204, 'b removed');
is(tcps(6), 'a', 'no connection goes to b any more');
is(addresses('http'), "$H/config $I/api", 'the http upstream still has i');

unlike($s->error_log, qr/\[(?:alert|crit|emerg)\]/, 'no alert, crit or emerg in the error log');
if ($ENV{KEEP}) {
    diag("kept " . $s->dir);
    $s->stop;
} else {
    $s->cleanup;
}
done_testing;
