# lb_slow_start TIME: a peer that becomes available again (health checks up, back from lb_api's
# drain) ramps its weight from 10% to 100% over TIME, for every method; not at a start. Two
# workers. Scripted (Test::LB::Server).
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Time::HiRes qw(sleep time);
use Test::LB::Server;

my $s = Test::LB::Server->new(name => 'slow_start', workers => 2);
my ($A, $B, @more) = map { "127.0.0.$_:" . $s->port(2) } 1 .. 5;

# Peers A and B, and with $n_more three more.
sub conf {
    my ($method, $n_more, $ramp) = @_;
    $ramp //= '4s';
    my $more = join '', map { "server $_;\n" } @more[0 .. ($n_more // 0) - 1];
    return <<"CONF";
    upstream u {
        lb_upstream $method;
        lb_slow_start $ramp;
        server $A;
        server $B;
        $more
        lb_check type=http uri=/health interval=100ms timeout=100ms rise=1 fall=1;
    }
    server {
        listen 127.0.0.1:__PORT2__; listen 127.0.0.2:__PORT2__; listen 127.0.0.3:__PORT2__;
        listen 127.0.0.4:__PORT2__; listen 127.0.0.5:__PORT2__;
        root html;
        location /health {
            if (-f \$document_root/sick_\$server_addr) { return 500; }
            return 200 "ok";
        }
        location / { return 200 "\$server_addr:\$server_port"; }
    }
    upstream z {
        zone z 64k;
        lb_upstream;
        lb_slow_start 4s;
        server $A;
    }
    server {
        listen 127.0.0.1:__PORT1__ reuseport;
        location / { proxy_pass http://u; }
        location /z/ { proxy_pass http://z/; }
        location /lb-api/ { lb_api write=on; }
        location /status { lb_status; }
    }
CONF
}

sub sick {
    my ($on) = @_;
    my $f = $s->dir . '/html/sick_127.0.0.2';
    if ($on) { open(my $fh, '>', $f) or die $!; close $fh } else { unlink $f }
}

# B's share of 100 requests in each of the four seconds after $t0, and the ramp factor the
# status shows at the start of each.
sub shares {
    my ($t0, $n) = @_;
    $n //= 100;
    my (@share, @factor);
    for my $sec (0 .. 3) {
        sleep(($t0 + $sec + 0.1) - time) if time < $t0 + $sec + 0.1;
        push @factor, $s->peers('u')->{$B}{slow_start};
        my $seen = $s->bodies($n);
        push @share, ($seen->{$B} // 0) / $n;
    }
    return (\@share, \@factor);
}

mkdir $s->dir . '/html';
# p2c ramps the draws of its two candidates, and then compares their load: with two peers both
# are drawn for nearly every request and the draws hardly matter, so p2c runs with five peers
# (B's full share 20%), and decay=1ms keeps response-time noise from deciding (see t/021).
# `most`: the part of its full share B must have at the start and in the last second. p2c's
# shares are draws, and they follow the peers' response times, which wander when the machine is
# busy (one CI run saw B at 0.12 of 0.2 before any ramp, the other peers at 0.18 to 0.26, and
# B going from 0.06 to 0.10 over the ramp): under half its share, and a smaller gain, still tell
# a ramp (its first second at 0.05 or less) from none. With two peers B's first second is about
# 0.1 (factor 0.1-0.3 over it); a worker that kept B at its full weight until its next look at
# the ramps (up to 200 ms here) gave it 0.23-0.32 (see Upstream::ramp_started).
my %case = (
    'round_robin'   => { peers => 0, n => 100, full => 0.5, first => 0.2, gain => 0.1, most => 0.6 },
    'least_conn'    => { peers => 0, n => 100, full => 0.5, first => 0.2, gain => 0.1, most => 0.6 },
    'p2c decay=1ms' => { peers => 3, n => 200, full => 0.2, first => 0.1, gain => 0.03, most => 0.45 },
);
for my $method ('round_robin', 'least_conn', 'p2c decay=1ms') {
    my $c = $case{$method};
    subtest "$method: B ramps back up over 4s after its checks pass again" => sub {
        my $conf = conf($method, $c->{peers});
        $s->{started} ? $s->reload($conf) : $s->start($conf);
        $s->wait_state('u', $_, 'up', 3) for $A, $B;
        my $start = $s->bodies($c->{n});
        cmp_ok(($start->{$B} // 0) / $c->{n}, '>=', $c->{full} * ($c->{most} + 0.1),
               'at the start, no ramp: B takes its share') or diag(explain $start);
        is($s->peers('u')->{$B}{slow_start}, undef, 'status: no ramp');
        sick(1);
        $s->wait_state('u', $B, 'unhealthy', 3);
        sick(0);
        $s->wait_state('u', $B, 'up', 3);
        my ($share, $factor) = shares(time, $c->{n});
        note("B's share per second: @$share; factor: @{[ map { $_ // 'null' } @$factor ]}");
        cmp_ok($share->[0], '<', $c->{first}, "first second: a small share ($share->[0])");
        cmp_ok($share->[3], '>', $share->[0] + $c->{gain}, "last second: clearly more ($share->[3])");
        cmp_ok($share->[3], '>', $c->{full} * $c->{most}, 'most of its share by then');
        ok(defined $factor->[0] && $factor->[0] < 0.4, 'status shows the ramp') or diag(explain $factor);
        sleep 1.0;
        is($s->peers('u')->{$B}{slow_start}, undef, 'and nothing once it ended');
    };
}

# A 20 s ramp: each worker looks at the ramps once a second. Both must hold B back from the
# first request after it is up, not from their next look (B at its full weight until then).
for my $method ('round_robin', 'least_conn') {
    subtest "$method, a 20s ramp: every worker holds B back at once" => sub {
        $s->reload(conf($method, 0, '20s'));
        $s->wait_state('u', $_, 'up', 3) for $A, $B;
        sick(1);
        $s->wait_state('u', $B, 'unhealthy', 3);
        sick(0);
        $s->wait_state('u', $B, 'up', 3);
        my $seen = $s->bodies(100);
        my $share = ($seen->{$B} // 0) / 100;
        # About 0.09 (0.1 / 1.1); with a worker that waited for its next look, 0.16-0.17.
        cmp_ok($share, '<', 0.13, "B's share of the first 100 requests: $share (factor about 0.1)");
    };
}

subtest 'back from lb_api drain: ramps too' => sub {
    $s->reload(conf('round_robin'));
    sleep 0.3;
    $s->request('PATCH', "/lb-api/upstreams/u/peers/$B", '{"admin": "drain"}');
    my ($code) = $s->request('PATCH', "/lb-api/upstreams/u/peers/$B", '{"admin": "up"}');
    is($code, 200, 'drained, then up');
    my ($share, $factor) = shares(time);
    note("B's share per second: @$share; factor: @{[ map { $_ // 'null' } @$factor ]}");
    cmp_ok($share->[0], '<', 0.3, "first second: a small share ($share->[0])");
    cmp_ok($share->[3], '>', $share->[0] + 0.1, "last second: clearly more ($share->[3])");
};

subtest 'a peer added through lb_api to a running upstream ramps up' => sub {
    my ($code) = $s->request('POST', '/lb-api/upstreams/z/peers', qq({"address": "$B"}));
    is($code, 201, 'added B to z');
    my $t0 = time;
    my @share;
    for my $sec (0 .. 3) {
        sleep(($t0 + $sec + 0.1) - time) if time < $t0 + $sec + 0.1;
        my $hit = 0;
        for (1 .. 100) {
            my ($c, $body) = $s->get('/z/');
            $hit++ if $c == 200 && $body eq $B;
        }
        push @share, $hit / 100;
    }
    note("B's share per second: @share");
    cmp_ok($share[0], '<', 0.3, "first second: a small share ($share[0])");
    cmp_ok($share[3], '>', $share[0] + 0.1, "last second: clearly more ($share[3])");
};

unlike($s->error_log, qr/\[(?:alert|crit|emerg)\]/, 'no alert, crit or emerg in the error log');
$s->cleanup;
done_testing;
