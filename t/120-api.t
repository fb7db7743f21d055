# lb_api: reading upstreams and peers, draining, taking down, re-weighting through PATCH, with
# two workers and traffic; changes kept over a reload until the configuration changes the
# peer's server line. Scripted (Test::LB::Server): requests with bodies, requests held in flight
# and reloads in the middle.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Time::HiRes qw(sleep time);
use JSON::PP ();
use IO::Socket::INET;
use Test::LB::Server;

my $s = Test::LB::Server->new(name => 'api', workers => 2);
my ($A, $B) = map { "127.0.0.$_:" . $s->port(2) } 1, 2;

# Backends answer their address; /slow on 127.0.0.2 sends 6 KiB at 2 KiB/s; probes of /health
# are logged with the address probed.
my $backends = <<'CONF';
    log_format probed '$server_addr';
    map $server_addr $slow_rate { 127.0.0.2 2k; default 0; }
    server {
        listen 127.0.0.1:__PORT2__; listen 127.0.0.2:__PORT2__;
        root html;
        location /health { access_log logs/health.log probed; return 200 "ok"; }
        location /slow { limit_rate $slow_rate; try_files /slow =404; }
        location / { return 200 "$server_addr:$server_port"; }
    }
CONF

sub conf {
    my ($b_line, $state) = @_;
    $b_line //= 'server 127.0.0.2:__PORT2__;';
    $state = $state ? 'lb_state __DIR__/state/lb.state;' : '';
    return <<"CONF" . $backends;
    $state
    upstream u {
        lb_upstream;
        server 127.0.0.1:__PORT2__;
        $b_line
        lb_check type=http uri=/health interval=200ms timeout=150ms rise=1 fall=1;
    }
    server {
        listen 127.0.0.1:__PORT1__ reuseport;
        location / { proxy_pass http://u; }
        location /lb-api/ { lb_api write=on; }
        location /lb-ro/ { lb_api; }
        location /status { lb_status; }
    }
CONF
}

sub api { $s->json_request(@_) }

sub patch { api('PATCH', "/lb-api/upstreams/u/peers/$_[0]", $_[1]) }

sub count {
    my ($n) = @_;
    my %seen;
    for (1 .. $n) {
        my ($code, $body) = $s->get('/');
        $seen{$code == 200 ? $body : "status $code"}++;
    }
    return \%seen;
}

sub probes_of {
    my ($addr) = @_;
    my $n = () = ($s->slurp('logs/health.log') // '') =~ /^\Q$addr\E$/mg;
    return $n;
}

$s->start(conf());
$s->wait_state('u', $_, 'up', 3) for $A, $B;

subtest 'reading' => sub {
    my ($code, $all) = api('GET', '/lb-api/upstreams');
    is($code, 200, 'GET upstreams');
    my ($u) = grep { $_->{name} eq 'u' } @$all;
    ok($u, 'lists upstream u') or diag(explain $all);
    is(join(' ', map { "$_->{address}=$_->{admin}/$_->{weight}/$_->{source}" } @{ $u->{peers} }),
       "$A=up/1/config $B=up/1/config", 'peers with their admin state, weight and source');
    ($code, my $one) = api('GET', '/lb-ro/upstreams/u');
    is($code, 200, 'GET upstreams/u on the read-only API');
    is($one->{name}, 'u', 'the upstream object');
    ($code, my $p) = api('GET', "/lb-ro/upstreams/u/peers/$B");
    is("$code $p->{address} $p->{state}", "200 $B up", 'GET one peer');
    is((api('GET', '/lb-api/upstreams/nope'))[0], 404, 'unknown upstream: 404');
    is((api('GET', '/lb-api/upstreams/u/peers/127.0.0.9:1'))[0], 404, 'unknown peer: 404');
    is((api('GET', '/lb-api/whatever'))[0], 404, 'unknown resource: 404');
};

subtest 'bad requests' => sub {
    my @cases = (
        [ 'PATCH', "/lb-ro/upstreams/u/peers/$B", '{"admin":"drain"}', 405, 'read-only' ],
        [ 'PUT', "/lb-api/upstreams/u/peers/$B", '{}', 405, 'a method the resource does not take' ],
        [ 'DELETE', "/lb-api/upstreams/u/peers/$B", '', 409, 'removing a configured peer' ],
        [ 'PATCH', "/lb-api/upstreams/u/peers/$B", '{"admin":', 400, 'malformed JSON' ],
        [ 'PATCH', "/lb-api/upstreams/u/peers/$B", '{"colour":"red"}', 400, 'unknown field' ],
        [ 'PATCH', "/lb-api/upstreams/u/peers/$B", '{"weight":"3"}', 400, 'wrong type' ],
        [ 'PATCH', "/lb-api/upstreams/u/peers/$B", '{"weight":0}', 400, 'weight out of range' ],
        [ 'PATCH', "/lb-api/upstreams/u/peers/$B", '{"admin":"maint"}', 400, 'unknown state' ],
        [ 'PATCH', '/lb-api/upstreams/nope/peers/1.2.3.4:80', '{"admin":"down"}', 404, 'unknown upstream' ],
        [ 'PATCH', '/lb-api/upstreams/u/peers/1.2.3.4:80', '{"admin":"down"}', 404, 'unknown peer' ],
        [ 'PATCH', "/lb-api/upstreams/u/peers/$B", '{"weight":1' . (' ' x 5000) . '}', 413, 'body too large' ],
    );
    for my $c (@cases) {
        my ($method, $path, $body, $want, $what) = @$c;
        my ($code, $json, $text) = api($method, $path, $body);
        is($code, $want, "$what: $want");
        ok(defined $json && length($json->{error} // ''), "$what: a JSON error") or diag($text);
    }
    my $p = $s->peers('u');
    is("$p->{$B}{admin} $p->{$B}{weight}", 'up 1', 'nothing changed');
};

# A request with headers of our own (Origin), as a browser sends it.
sub browser_request {
    my ($method, $path, $body, @headers) = @_;
    my $port = $s->port(1);
    my $c = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp',
                                  Timeout => 5) or die "connect: $!";
    print $c "$method $path HTTP/1.0\r\nHost: 127.0.0.1:$port\r\n"
        . join('', map { "$_\r\n" } @headers)
        . 'Content-Length: ' . length($body) . "\r\n\r\n$body";
    local $/;
    my $resp = <$c> // '';
    my ($head, $rest) = split /\r\n\r\n/, $resp, 2;
    my ($code) = ($head // '') =~ m{^HTTP/1\.\d (\d+)};
    return ($code // 0, $rest // '');
}

subtest 'writes from a page of another site are refused' => sub {
    my $port = $s->port(1);
    for my $c (
        [ 'PATCH', "/lb-api/upstreams/u/peers/$B", '{"admin":"drain"}', 'Origin: http://evil.example' ],
        [ 'PATCH', "/lb-api/upstreams/u/peers/$B", '{"admin":"drain"}', "Origin: http://127.0.0.1:" . $s->port(2) ],
        # What a form or a no-cors fetch of another site can send without asking.
        [ 'POST', '/lb-api/upstreams/u/peers', '{"address":"127.0.0.9:80"}', 'Origin: null',
          'Content-Type: text/plain' ],
        [ 'DELETE', "/lb-api/upstreams/u/peers/$B", '', 'Origin: https://127.0.0.1' ],
    ) {
        my ($method, $path, $body, @h) = @$c;
        my ($code, $text) = browser_request($method, $path, $body, @h);
        is($code, 403, "$method with $h[0]: 403");
        like($text, qr/"error":"a write from a page of another site \(Origin: /, 'with the reason');
    }
    my $p = $s->peers('u');
    is("$p->{$B}{admin} " . scalar(keys %$p), 'up 2', 'nothing changed, nothing added');
    my ($code) = browser_request('GET', '/lb-api/upstreams/u', '', 'Origin: http://evil.example');
    is($code, 200, 'reading is not a write (and a browser keeps the answer from the other site)');
    # The dashboard's own requests: from a page of this server.
    ($code) = browser_request('PATCH', "/lb-api/upstreams/u/peers/$B", '{"admin":"drain"}',
                              "Origin: http://127.0.0.1:$port", 'Content-Type: application/json');
    is($code, 200, 'the same origin may write');
    ($code) = browser_request('PATCH', "/lb-api/upstreams/u/peers/$B", '{"admin":"up"}');
    is($code, 200, 'no Origin (curl, scripts): as before');
    is($s->peers('u')->{$B}{admin}, 'up', 'back up');
};

subtest 'drain: requests in flight finish, nothing new arrives' => sub {
    open(my $fh, '>', $s->dir . '/html/slow') or die $!;
    print $fh 'x' x 6144;
    close $fh;
    my $finished = $s->in_background(4, '/slow');
    sleep 0.5;
    my ($code, $p) = patch($B, '{"admin":"drain"}');
    is("$code $p->{admin} $p->{state}", '200 drain draining', 'PATCH drain answers the peer');
    cmp_ok($p->{active}, '>', 0, 'with requests still in flight on it') or diag(explain $p);
    my $seen = count(40);
    is_deeply($seen, { $A => 40 }, 'the next requests, on both workers, avoid the drained peer');
    my @slow = $finished->();
    is(join(',', map { join ' ', (split ' ')[0, 1] } @slow), join(',', ('200 6144') x 4),
       'the requests in flight finished, complete');
    ok((grep { (split ' ')[2] >= 2 } @slow), 'some of them were on the drained peer')
        or diag(explain \@slow);
    my $after = $s->peers('u')->{$B};
    is("$after->{state} $after->{active}", 'draining 0', 'status: draining, active fell to 0');
    my ($hc, $html) = $s->get('/status?format=html');
    like($html, qr/\Q$B\E.*?>draining</s, 'the HTML page shows it draining');
    like($s->error_log, qr/lb: api: peer \Q$B\E in upstream "u" set to drain by 127\.0\.0\.1/,
         'the change is logged with the client address');
};

subtest 'down stops checks; up brings the peer back' => sub {
    my ($code, $p) = patch($B, '{"admin":"down"}');
    is("$code $p->{admin} $p->{state}", '200 down down', 'PATCH down');
    sleep 0.5;
    my $before = probes_of('127.0.0.2');
    sleep 1.2;
    is(probes_of('127.0.0.2'), $before, 'no probe of a peer taken down');
    is_deeply(count(20), { $A => 20 }, 'and no request');
    ($code, $p) = patch($B, '{"admin":"up"}');
    is("$code $p->{admin}", '200 up', 'PATCH up');
    my $seen = count(40);
    cmp_ok($seen->{$B} // 0, '>=', 10, 'the peer serves again') or diag(explain $seen);
    sleep 0.6;
    cmp_ok(probes_of('127.0.0.2'), '>', $before, 'and is probed again');
};

subtest 'weight 1 -> 3 gives 1:3, on both workers' => sub {
    my ($code, $p) = patch($B, '{"weight":3}');
    is("$code $p->{weight}", '200 3', 'PATCH weight');
    my $seen = count(400);
    my ($a, $b) = ($seen->{$A} // 0, $seen->{$B} // 0);
    ok($a + $b == 400 && $b >= 2.5 * $a && $b <= 3.5 * $a, "1:3 over 400 requests ($a:$b)")
        or diag(explain $seen);
};

subtest 'a reload keeps the changes; a changed server line drops them' => sub {
    patch($A, '{"admin":"drain"}');
    $s->reload(conf());
    my $p = $s->peers('u');
    is("$p->{$A}{admin} $p->{$B}{weight}", 'drain 3', 'drain and weight kept over a reload');
    is_deeply(count(20), { $B => 20 }, 'and in effect');
    patch($A, '{"admin":"up"}');
    $s->reload(conf('server 127.0.0.2:__PORT2__ weight=2;'));
    $p = $s->peers('u');
    is("$p->{$B}{admin} $p->{$B}{weight}", 'up 2', 'the configuration changed the line: its weight wins');
};

subtest '"weight": null goes back to the configured weight' => sub {
    my ($code, $p) = patch($B, '{"weight":5}');
    is("$code $p->{weight}", '200 5', 'PATCH weight 5');
    ($code, $p) = patch($B, '{"weight":null}');
    is("$code $p->{weight}", '200 2', 'PATCH weight null: the configured 2 again');
    my $seen = count(300);
    my ($a, $b) = ($seen->{$A} // 0, $seen->{$B} // 0);
    ok($b >= 1.6 * $a && $b <= 2.4 * $a, "1:2 over 300 requests ($a:$b)") or diag(explain $seen);
};

subtest 'lb_state keeps changes over a restart; a damaged file is reported and ignored' => sub {
    # Workers write the file: its directory must be writable by nginx's user.
    mkdir $s->dir . '/state';
    chmod 0777, $s->dir . '/state';
    my $file = $s->dir . '/state/lb.state';
    $s->reload(conf(undef, 1));
    my ($code, $p) = patch($A, '{"admin":"drain"}');
    is($code, 200, 'PATCH drain');
    ($code, $p) = patch($B, '{"weight":4}');
    is("$code $p->{weight}", '200 4', 'PATCH weight');
    my $saved = eval { JSON::PP::decode_json($s->slurp('state/lb.state') // '') };
    is(join(' ', map { "$_->{address}=" . ($_->{admin} // 'up') . '/' . ($_->{weight} // '-') }
                 @{ $saved->{peers} // [] }),
       "$A=drain/- $B=up/4", 'the state file holds both changes') or diag($s->slurp('state/lb.state'));
    $s->stop;
    my $log = length $s->error_log;
    $s->start(conf(undef, 1));
    $p = $s->peers('u');
    is("$p->{$A}{admin} $p->{$B}{weight}", 'drain 4', 'after a restart (a fresh zone): both back');
    like(substr($s->error_log, $log), qr/lb_state: restored 2 peer change\(s\)/, 'and said so');
    is_deeply(count(20), { $B => 20 }, 'and in effect');
    for my $damage ('truncated', 'garbage') {
        $s->stop;
        my $text = $s->slurp('state/lb.state');
        open(my $fh, '>', $file) or die $!;
        print $fh $damage eq 'truncated' ? substr($text, 0, length($text) / 2) : "\x00\xffnot json";
        close $fh;
        $log = length $s->error_log;
        $s->start(conf(undef, 1));
        like(substr($s->error_log, $log), qr/\[warn\].*lb_state: ignoring "\Q$file\E": not a state file/,
             "$damage file: a warning naming it");
        $p = $s->peers('u');
        is("$p->{$A}{admin} $p->{$B}{weight}", 'up 1', "$damage file: nginx starts with the configuration");
        patch($A, '{"admin":"drain"}');
    }
};

unlike($s->error_log, qr/\[(?:alert|crit|emerg)\]/, 'no alert, crit or emerg in the error log');
$s->cleanup;
done_testing;
