# lb_api adds and removes peers (POST upstreams/NAME/peers, DELETE .../peers/ADDRESS) of an
# upstream with `zone`, with two workers: an added peer is checked and takes traffic on every
# worker, a removed one finishes the requests it has and gets no more, nothing fails under
# load; added peers stay over a reload and, with lb_state, over a restart. Scripted
# (Test::LB::Server).
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Time::HiRes qw(sleep time);
use JSON::PP ();
use POSIX ();
use Test::LB::Server;

my $s = Test::LB::Server->new(name => 'api_members', workers => 2);
my ($A, $B, $C) = map { "127.0.0.$_:" . $s->port(2) } 1, 2, 3;

# Backends answer their address; /slow on 127.0.0.3 sends 6 KiB at 2 KiB/s; probes of /health
# are logged with the address probed.
my $backends = <<'CONF';
    log_format probed '$server_addr';
    map $server_addr $slow_rate { 127.0.0.3 2k; default 0; }
    server {
        listen 127.0.0.1:__PORT2__; listen 127.0.0.2:__PORT2__; listen 127.0.0.3:__PORT2__;
        root html;
        location /health { access_log logs/health.log probed; return 200 "ok"; }
        location /slow { limit_rate $slow_rate; try_files /slow =404; }
        location / { return 200 "$server_addr:$server_port"; }
    }
CONF

sub conf {
    my (%o) = @_;
    my $state = $o{state} ? 'lb_state __DIR__/state/lb.state;' : '';
    my $extra = $o{extra} // '';
    return <<"CONF" . $backends;
    $state
    upstream u {
        zone u 64k;
        lb_upstream max_added=2;
        server 127.0.0.1:__PORT2__;
        $extra
        lb_check type=http uri=/health interval=200ms timeout=150ms rise=1 fall=1;
    }
    upstream plain {
        lb_upstream;
        server 127.0.0.1:__PORT2__;
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

sub add { api('POST', '/lb-api/upstreams/u/peers', $_[0]) }
sub del { api('DELETE', "/lb-api/upstreams/u/peers/$_[0]") }

sub probes_of {
    my ($addr) = @_;
    my $n = () = ($s->slurp('logs/health.log') // '') =~ /^\Q$addr\E$/mg;
    return $n;
}

# Requests for / from a forked child until the returned function is called; it gives
# { answers => N, failed => N }.
sub load {
    my $file = $s->dir . '/load.out';
    unlink $file;
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        my ($n, $failed) = (0, 0);
        my $stop = 0;
        local $SIG{TERM} = sub { $stop = 1 };
        until ($stop) {
            my ($code) = $s->get('/');
            $n++;
            $failed++ if $code != 200;
        }
        open(my $out, '>', $file) or POSIX::_exit(1);
        print $out "$n $failed\n";
        close $out;
        POSIX::_exit(0);
    }
    return sub {
        kill 'TERM', $pid;
        waitpid($pid, 0);
        my ($n, $failed) = split ' ', ($s->slurp('load.out') // '0 -1');
        return { answers => $n, failed => $failed };
    };
}

$s->start(conf());
$s->wait_state('u', $A, 'up', 3);

subtest 'POST adds a peer: checked, then traffic on every worker' => sub {
    my $before = probes_of('127.0.0.2');
    my ($code, $p, $text) = add(qq({"address": "$B", "weight": 2}));
    is($code, 201, 'POST: 201') or diag($text);
    is("$p->{address} $p->{weight} $p->{source} $p->{admin}", "$B 2 api up",
       'the answer is the new peer');
    ok($s->wait_state('u', $B, 'up', 3), 'it is up on the status page');
    sleep 0.5;
    cmp_ok(probes_of('127.0.0.2'), '>', $before, 'and probed');
    my $seen = $s->bodies(60);
    my ($a, $b) = ($seen->{$A} // 0, $seen->{$B} // 0);
    ok($a + $b == 60 && $b >= 1.5 * $a && $b <= 2.5 * $a, "weights 1:2 over 60 requests ($a:$b)")
        or diag(explain $seen);
    like($s->error_log, qr/lb: api: peer \Q$B\E added to upstream "u" \(weight 2\) by 127\.0\.0\.1/,
         'the change is logged with the client address');
    my ($hc, $html) = $s->get('/status?format=html');
    like($html, qr/\Q$B\E \(added\)/, 'the HTML page marks it added');
};

subtest 'refused additions and removals' => sub {
    my @cases = (
        [ 'POST', '/lb-api/upstreams/u/peers', qq({"address": "$B"}), 409, 'an address it has' ],
        [ 'POST', '/lb-api/upstreams/u/peers', qq({"address": "$A"}), 409, 'a configured address' ],
        [ 'POST', '/lb-api/upstreams/plain/peers', qq({"address": "$C"}), 409, 'an upstream without zone' ],
        [ 'POST', '/lb-api/upstreams/nope/peers', qq({"address": "$C"}), 404, 'an unknown upstream' ],
        [ 'POST', '/lb-api/upstreams/u/peers', '{"address": "backend.local:80"}', 400, 'a name' ],
        [ 'POST', '/lb-api/upstreams/u/peers', qq({"address": "$C", "weight": 0}), 400, 'weight 0' ],
        [ 'POST', '/lb-api/upstreams/u/peers', qq({"address": "$C", "colour": 1}), 400, 'an unknown field' ],
        [ 'POST', '/lb-api/upstreams/u/peers', qq({"address": "$C", "backup": "no"}), 400, 'a wrong type' ],
        [ 'POST', '/lb-api/upstreams/u/peers', '{"address": ', 400, 'malformed JSON' ],
        [ 'POST', '/lb-ro/upstreams/u/peers', qq({"address": "$C"}), 405, 'the read-only API' ],
        [ 'DELETE', "/lb-api/upstreams/u/peers/$A", '', 409, 'a configured peer' ],
        [ 'DELETE', '/lb-api/upstreams/u/peers/127.0.0.9:1', '', 404, 'an unknown peer' ],
        [ 'DELETE', '/lb-api/upstreams/u', '', 405, 'an upstream' ],
    );
    for my $c (@cases) {
        my ($method, $path, $body, $want, $what) = @$c;
        my ($code, $json, $text) = api($method, $path, $body);
        is($code, $want, "$what: $want");
        ok(defined $json && length($json->{error} // ''), "$what: a JSON error") or diag($text);
    }
    my (undef, undef, undef, $head) = api('POST', '/lb-ro/upstreams/u/peers', '{}');
    like($head, qr/^Allow: GET, HEAD\r?$/mi, '405 says what is allowed');
    my ($code) = add(qq({"address": "$C", "backup": true}));
    is($code, 201, 'a second added peer (max_added=2)');
    my ($full, $json) = add('{"address": "127.0.0.4:1"}');
    is($full, 507, 'a third: 507');
    like($json->{error} // '', qr/max_added/, 'saying why');
    is(join(' ', sort keys %{ $s->peers('u') }), join(' ', sort $A, $B, $C), 'peers as before');
};

subtest 'DELETE: the requests in flight finish, nothing new arrives' => sub {
    open(my $fh, '>', $s->dir . '/html/slow') or die $!;
    print $fh 'x' x 6144;
    close $fh;
    # C is a backup: take A and B down so that the slow requests go to C.
    api('PATCH', "/lb-api/upstreams/u/peers/$_", '{"admin": "down"}') for $A, $B;
    my $finished = $s->in_background(3, '/slow');
    sleep 0.5;
    my ($code, undef, $text) = del($C);
    is($code, 204, 'DELETE: 204') or diag($text);
    ok(!exists $s->peers('u')->{$C}, 'gone from the status page');
    api('PATCH', "/lb-api/upstreams/u/peers/$_", '{"admin": "up"}') for $A, $B;
    my @slow = $finished->();
    is(join(',', map { join ' ', (split ' ')[0, 1] } @slow), join(',', ('200 6144') x 3),
       'the requests in flight on it finished, complete');
    my $seen = $s->bodies(40);
    ok(!exists $seen->{$C} && ($seen->{$A} // 0) + ($seen->{$B} // 0) == 40,
       'the next requests, on both workers, avoid it') or diag(explain $seen);
    my $before = probes_of('127.0.0.3');
    sleep 0.6;
    is(probes_of('127.0.0.3'), $before, 'and it is no longer probed');
    like($s->error_log, qr/lb: api: peer \Q$C\E removed from upstream "u" by 127\.0\.0\.1/,
         'the removal is logged');
};

subtest 'add and remove under load: no failed request' => sub {
    my $stop = load();
    for (1 .. 5) {
        my ($code) = add(qq({"address": "$C"}));
        is($code, 201, "round $_: added");
        sleep 0.2;
        ($code) = del($C);
        is($code, 204, "round $_: removed");
        sleep 0.2;
    }
    my $r = $stop->();
    cmp_ok($r->{answers}, '>', 100, "requests ran meanwhile ($r->{answers})");
    is($r->{failed}, 0, 'none failed');
};

subtest 'a reload keeps added peers; one the configuration now has is dropped' => sub {
    add(qq({"address": "$C", "weight": 3}));
    $s->reload(conf());
    my $p = $s->peers('u');
    is(join(' ', map { "$_=" . ($p->{$_}{source} // 'absent') . "/" . ($p->{$_}{weight} // '-') } $A, $B, $C),
       "$A=config/1 $B=api/2 $C=api/3", 'both added peers kept, with their weights');
    my $seen = $s->bodies(60);
    ok(($seen->{$C} // 0) > 0, 'and in use') or diag(explain $seen);
    $s->reload(conf(extra => "server $C;"));
    $p = $s->peers('u');
    is(join(' ', map { "$_=" . ($p->{$_}{source} // 'absent') } $B, $C), "$B=api $C=config",
       'the configuration has C now: it is a configured peer');
    like($s->error_log, qr/lb: 1 peer\(s\) added by lb_api dropped/, 'and the added entry is dropped');
    my ($code) = del($C);
    is($code, 409, 'it cannot be deleted through the API any more');
    $s->reload(conf());
    ok(!exists $s->peers('u')->{$C}, 'gone with its server line');
};

subtest 'lb_state keeps added peers over a restart' => sub {
    mkdir $s->dir . '/state';
    chmod 0777, $s->dir . '/state';
    $s->reload(conf(state => 1));
    my ($code) = add(qq({"address": "$C", "backup": true, "max_fails": 3, "fail_timeout": "30s"}));
    is($code, 201, 'added C');
    api('PATCH', "/lb-api/upstreams/u/peers/$B", '{"admin": "drain"}');
    my $saved = eval { JSON::PP::decode_json($s->slurp('state/lb.state') // '') };
    is(join(' ', map { "$_->{address}/$_->{weight}/" . ($_->{backup} ? 'backup' : '-') . "/$_->{fail_timeout_ms}" }
                 @{ $saved->{added} // [] }),
       "$B/2/-/10000 $C/1/backup/30000", 'the state file lists the added peers')
        or diag($s->slurp('state/lb.state'));
    $s->stop;
    my $log = length $s->error_log;
    $s->start(conf(state => 1));
    my $p = $s->peers('u');
    is(join(' ', map { "$_=" . ($p->{$_}{source} // 'absent') . '/' . ($p->{$_}{admin} // '-')
                       . '/' . ($p->{$_}{backup} ? 'backup' : '-') } $B, $C),
       "$B=api/drain/- $C=api/up/backup", 'after a restart: both back, B still draining');
    like(substr($s->error_log, $log), qr/lb_state: restored 1 peer change\(s\) and 2 added peer\(s\)/,
         'and said so');
    ok($s->wait_state('u', $C, 'up', 3), 'C is checked again');
    # The configuration gained C meanwhile: its saved entry is not filed again (nor does it
    # count against max_added), and B comes back.
    $s->stop;
    $log = length $s->error_log;
    $s->start(conf(state => 1, extra => "server $C;"));
    $p = $s->peers('u');
    is(join(' ', map { "$_=" . ($p->{$_}{source} // 'absent') } $B, $C), "$B=api $C=config",
       'a restart with C configured: C from the configuration, B added');
    like(substr($s->error_log, $log), qr/lb_state: restored \d+ peer change\(s\) and 1 added peer\(s\)/,
         'one added peer restored');
    ($code) = add('{"address": "127.0.0.4:1"}');
    is($code, 201, 'and room for another (max_added=2)');
};

unlike($s->error_log, qr/\[(?:alert|crit|emerg)\]/, 'no alert, crit or emerg in the error log');
$s->cleanup;
done_testing;
