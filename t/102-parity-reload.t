# Parity with nginx's own round-robin balancer across `nginx -s reload`: `down` toggled and a
# weight changed by reloads. Scripted (Test::LB::Server), because the block format cannot
# rewrite the configuration in the middle of a block. One worker, so that the order of peers is
# deterministic. Each scenario runs with a plain upstream ("stock") and with `lb_upstream;`
# added; both runs must give the sequence stock nginx 1.28 gives (taken from stock runs).
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Test::LB::Server;

my @modes = (['stock', ''], ['lb_upstream', 'lb_upstream;']);
@modes = grep { $_->[0] eq $ENV{TEST_PARITY_MODE} || ($ENV{TEST_PARITY_MODE} eq 'lb'
                 && $_->[0] eq 'lb_upstream') } @modes if $ENV{TEST_PARITY_MODE};

sub conf {
    my (%o) = @_;
    return <<"CONF";
    upstream backend {
        $o{lb}
        server 127.0.0.1:__PORT2__$o{a};
        server 127.0.0.1:__PORT3__$o{b};
        server 127.0.0.1:__PORT4__$o{c};
    }
    server { listen 127.0.0.1:__PORT2__; location / { return 200 "a"; } }
    server { listen 127.0.0.1:__PORT3__; location / { return 200 "b"; } }
    server { listen 127.0.0.1:__PORT4__; location / { return 200 "c"; } }
    server {
        listen 127.0.0.1:__PORT1__;
        location / { proxy_pass http://backend; }
    }
CONF
}

sub seq {
    my ($s, $n) = @_;
    return join '', map { my ($code, $body) = $s->get('/'); $code == 200 ? $body : "($code)" }
        1 .. $n;
}

for my $m (@modes) {
    my ($mode, $lb) = @$m;
    my $s = Test::LB::Server->new(name => "parity_reload_$mode", workers => 1);

    # `down` toggled by reload: b down, then up, then down again.
    $s->start(conf(lb => $lb, a => '', b => ' down', c => ''));
    is(seq($s, 6), 'acacac', "[$mode] b down: a and c alternate");
    $s->reload(conf(lb => $lb, a => '', b => '', c => ''));
    is(seq($s, 6), 'abcabc', "[$mode] b no longer down after the reload: a b c from the start");
    $s->reload(conf(lb => $lb, a => '', b => '', c => ' down'));
    is(seq($s, 6), 'ababab', "[$mode] c down after the reload: a b");

    # Weight changed by reload: the new smooth order starts from the top, as after a restart.
    $s->reload(conf(lb => $lb, a => ' weight=5', b => '', c => ''));
    is(seq($s, 14), 'aabacaa' x 2, "[$mode] weights 5/1/1 after the reload: a a b a c a a");
    $s->reload(conf(lb => $lb, a => '', b => ' weight=3', c => ' weight=2'));
    is(seq($s, 12), 'bcabcb' x 2, "[$mode] weights 1/3/2 after the reload");

    # A peer failed before a reload (nothing listens on __PORT5__, max_fails=1
    # fail_timeout=10s): stock nginx starts the new workers with fresh peers and tries it
    # again; lb_upstream keeps passive failures across reloads (README, "What is shared, and
    # what survives what": reload keeps health state and counters): an intended difference.
    my $dead = conf(lb => $lb, a => '', b => '', c => '');
    $dead =~ s/(server 127\.0\.0\.1:__PORT2__);/$1;\n        server 127.0.0.1:__PORT5__ max_fails=1 fail_timeout=10s;/;
    my $before = () = $s->error_log =~ /connect\(\) failed/g;
    $s->reload($dead);
    is(seq($s, 4), 'abcb', "[$mode] a dead peer is failed over (order as stock: a b c b)");
    $s->reload($dead);
    # stock: fresh state, the dead peer is tried again (a, dead→b, c, b); lb_upstream: it is
    # still unavailable, so it is skipped as stock skips a failed peer (a b c a).
    is(seq($s, 4), $mode eq 'stock' ? 'abcb' : 'abca',
       $mode eq 'stock' ? "[$mode] after a reload: the same order again"
                        : "[$mode] after a reload: the failed peer is skipped (intended)");
    my $after = () = $s->error_log =~ /connect\(\) failed/g;
    is($after - $before, $mode eq 'stock' ? 2 : 1,
       $mode eq 'stock'
           ? "[$mode] the dead peer is tried again after the reload (fresh state)"
           : "[$mode] the dead peer is not tried again after the reload (state kept: intended)");

    unlike($s->error_log, qr/\[(?:alert|crit|emerg)\]/, "[$mode] no alert in the error log");
    $s->cleanup;
}

done_testing;
