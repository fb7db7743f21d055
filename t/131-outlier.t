# lb_outlier: a peer that answers 5xx (while its health endpoint would say OK) is ejected after
# consecutive_5xx such answers in a row, counted over all workers; ejections grow with each
# repeat (base_ejection x times ejected), never more than max_percent of the peers are ejected,
# connection errors eject too, and every ejection and return is logged once and shown in the
# status. Two workers. Scripted (Test::LB::Server).
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Time::HiRes qw(sleep);
use Test::LB::Server;

my $s = Test::LB::Server->new(name => 'outlier', workers => 2);
my @P = map { "127.0.0.$_:" . $s->port(2) } 1 .. 4;
my $dead = '127.0.0.1:' . $s->port(3);    # nothing listens there

$s->start(<<"CONF");
    upstream u {
        lb_upstream;
        lb_outlier consecutive_5xx=3 base_ejection=1s max_ejection=10s max_percent=50;
        server $P[0]; server $P[1]; server $P[2]; server $P[3];
    }
    upstream e {
        lb_upstream;
        lb_outlier consecutive_errors=2 base_ejection=30s;
        server $dead max_fails=0;
        server $P[0];
    }
    server {
        listen 127.0.0.1:__PORT2__; listen 127.0.0.2:__PORT2__;
        listen 127.0.0.3:__PORT2__; listen 127.0.0.4:__PORT2__;
        root html;
        location / {
            if (-f \$document_root/bad_\$server_addr) { return 500 "bad \$server_addr"; }
            return 200 "\$server_addr:\$server_port";
        }
    }
    server {
        listen 127.0.0.1:__PORT1__ reuseport;
        location / { proxy_pass http://u; }
        location /e/ { proxy_pass http://e/; }
        location /status { lb_status; }
    }
CONF

mkdir $s->dir . '/html';
sub bad {
    my ($n, $on) = @_;
    my $f = $s->dir . "/html/bad_127.0.0.$n";
    if ($on) { open(my $fh, '>', $f) or die $!; close $fh } else { unlink $f }
}

sub count_log { my ($re) = @_; my @m = $s->error_log =~ /$re/g; return scalar @m }

subtest 'a peer answering 500 is ejected after 3 in a row, over both workers' => sub {
    bad(2, 1);
    my $seen = $s->bodies(60);
    my $five = $seen->{'status 500'} // 0;
    cmp_ok($five, '>=', 3, "it answered 500 ($five times)");
    cmp_ok($five, '<=', 3 * 2, 'at most consecutive_5xx x workers times before the ejection');
    my $p = $s->peers('u')->{$P[1]};
    is("$p->{state} $p->{ejections}", 'ejected 1', 'status: ejected, once');
    my $after = $s->bodies(40);
    ok(!exists $after->{'status 500'}, 'the next requests avoid it') or diag(explain $after);
    is(count_log(qr/lb: peer \Q$P[1]\E in upstream "u" ejected for 1s after 3 responses with status 500 or more in a row \(ejection 1\)/),
       1, 'the ejection is logged once, with the reason');
    my ($pc, $prom) = $s->get('/status?format=prometheus');
    like($prom, qr/^nginx_lb_peer_ejections_total\{upstream="u",kind="http",peer="\Q$P[1]\E"\} 1$/m, 'Prometheus counts it');
    like($prom, qr/^nginx_lb_peer_state\{upstream="u",kind="http",peer="\Q$P[1]\E",state="ejected"\} 1$/m, 'and shows the state');
};

subtest 'back after base_ejection; ejected again for twice as long' => sub {
    sleep 1.2;
    my $seen = $s->bodies(40);
    cmp_ok($seen->{'status 500'} // 0, '>=', 3, 'it gets requests again (and fails them)');
    is(count_log(qr/lb: peer \Q$P[1]\E in upstream "u" is back from outlier ejection/), 1,
       'the return is logged once');
    is(count_log(qr/lb: peer \Q$P[1]\E in upstream "u" ejected for 2s after 3 responses .* \(ejection 2\)/), 1,
       'the second ejection lasts 2s');
    sleep 1.2;
    is($s->peers('u')->{$P[1]}{state}, 'ejected', 'still ejected after 1.2s');
    bad(2, 0);
    sleep 1.0;
    my $ok = $s->bodies(40);
    cmp_ok($ok->{$P[1]} // 0, '>', 0, 'fixed, it serves again after 2s') or diag(explain $ok);
};

subtest 'max_percent=50: at most 2 of 4 peers ejected at once' => sub {
    bad($_, 1) for 2, 3, 4;
    my $seen = $s->bodies(100);
    my @ejected = grep { $_->{state} eq 'ejected' } values %{ $s->peers('u') };
    is(scalar @ejected, 2, 'two ejected') or diag(explain $s->peers('u'));
    like($s->error_log, qr/not ejected after 3 responses with status 500 or more in a row: 2 of 4 peers are ejected already \(max_percent=50\)/,
         'the third is not, and the log says why');
    bad($_, 0) for 2, 3, 4;
};

subtest 'connection errors eject too' => sub {
    my $seen = {};
    for (1 .. 10) {
        my ($code, $body) = $s->get('/e/');
        $seen->{$code == 200 ? $body : "status $code"}++;
    }
    is_deeply($seen, { $P[0] => 10 }, 'every request is served (the error is retried)') or diag(explain $seen);
    my $p = $s->peers('e')->{$dead};
    is($p->{state}, 'ejected', 'the dead peer is ejected');
    like($s->error_log, qr/lb: peer \Q$dead\E in upstream "e" ejected for 30s after 2 connection errors or timeouts in a row/,
         'after 2 connection errors');
};

unlike($s->error_log, qr/\[(?:alert|crit|emerg)\]/, 'no alert, crit or emerg in the error log');
$s->cleanup;
done_testing;
