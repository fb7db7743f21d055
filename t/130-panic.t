# lb_panic N%: when fewer than N% of the primary peers are available, requests go to every
# primary peer that is not down, as if all were healthy; entering and leaving are logged once
# and shown in the status. Two workers; peers made unhealthy by their health endpoint while
# they still serve (so that the spread is visible). Scripted (Test::LB::Server).
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Time::HiRes qw(sleep);
use JSON::PP ();
use Test::LB::Server;

my $s = Test::LB::Server->new(name => 'panic', workers => 2);
my @P = map { "127.0.0.$_:" . $s->port(2) } 1 .. 4;

sub conf {
    my ($panic, $fifth) = @_;
    $panic //= 'lb_panic 50%;';
    $fifth //= 'down';
    return <<"CONF";
    upstream u {
        lb_upstream;
        $panic
        server $P[0];
        server $P[1];
        server $P[2];
        server $P[3];
        server 127.0.0.5:__PORT2__ $fifth;
        lb_check type=http uri=/health interval=100ms timeout=100ms rise=1 fall=1;
    }
    server {
        listen 127.0.0.1:__PORT2__; listen 127.0.0.2:__PORT2__;
        listen 127.0.0.3:__PORT2__; listen 127.0.0.4:__PORT2__; listen 127.0.0.5:__PORT2__;
        root html;
        location /health {
            if (-f \$document_root/sick_\$server_addr) { return 500; }
            return 200 "ok";
        }
        location / { return 200 "\$server_addr:\$server_port"; }
    }
    server {
        listen 127.0.0.1:__PORT1__ reuseport;
        location / { proxy_pass http://u; }
        location /status { lb_status; }
    }
CONF
}

sub sick {
    my ($n, $on) = @_;
    my $f = $s->dir . "/html/sick_127.0.0.$n";
    if ($on) { open(my $fh, '>', $f) or die $!; close $fh } else { unlink $f }
}

sub upstream_panic {
    my ($u) = grep { $_->{name} eq 'u' } @{ $s->status->{upstreams} };
    return $u->{panic};
}

mkdir $s->dir . '/html';
$s->start(conf());
$s->wait_state('u', $_, 'up', 3) for @P;

subtest 'all healthy: no panic' => sub {
    my $seen = $s->bodies(40);
    is(scalar(keys %$seen), 4, 'four peers serve') or diag(explain $seen);
    is(upstream_panic(), JSON::PP::false, 'status: panic false');
};

subtest '2 of 4 healthy (50%): not yet panic, the healthy ones take everything' => sub {
    sick($_, 1) for 3, 4;
    $s->wait_state('u', $P[$_], 'unhealthy', 3) for 2, 3;
    my $seen = $s->bodies(40);
    is_deeply([sort keys %$seen], [sort @P[0, 1]], 'only the healthy peers serve') or diag(explain $seen);
    unlike($s->error_log, qr/panic mode/, 'no panic logged');
};

subtest '1 of 4 healthy: panic, requests spread over all four (not the down one)' => sub {
    sick(2, 1);
    $s->wait_state('u', $P[1], 'unhealthy', 3);
    sleep 0.3;    # each worker counts at most every 100 ms
    my $seen = $s->bodies(80);
    is_deeply([sort keys %$seen], [sort @P], 'all four non-down peers serve') or diag(explain $seen);
    is(upstream_panic(), JSON::PP::true, 'status: panic true');
    my @logs = $s->error_log =~ /(lb: upstream "u" in panic mode: 1 of 4 peers healthy \(lb_panic 50%\))/g;
    is(scalar @logs, 1, 'entering logged once (two workers)') or diag(join "\n", @logs);
    my ($hc, $html) = $s->get('/status?format=html');
    like($html, qr/upstream u <span[^>]*>panic</, 'the HTML page shows it');
    my ($pc, $prom) = $s->get('/status?format=prometheus');
    like($prom, qr/^nginx_lb_upstream_panic\{upstream="u",kind="http"\} 1$/m, 'and Prometheus');
};

subtest 'healthy again: panic ends, logged once' => sub {
    sick($_, 0) for 2, 3, 4;
    $s->wait_state('u', $P[$_], 'up', 3) for 1, 2, 3;
    sleep 0.3;
    $s->bodies(20);
    is(upstream_panic(), JSON::PP::false, 'status: panic false');
    my @logs = $s->error_log =~ /(lb: upstream "u" leaves panic mode: \d of 4 peers healthy)/g;
    is(scalar @logs, 1, 'leaving logged once') or diag(join "\n", @logs);
};

subtest 'a backup that can take requests comes first: no panic' => sub {
    $s->reload(conf(undef, 'backup'));
    sick($_, 1) for 2, 3, 4;
    $s->wait_state('u', $P[$_], 'unhealthy', 3) for 1, 2, 3;
    sleep 0.3;
    my $seen = $s->bodies(40);
    is_deeply($seen, { $P[0] => 40 }, 'the healthy primary serves, as without lb_panic') or diag(explain $seen);
    is(upstream_panic(), JSON::PP::false, 'status: panic false');
    sick($_, 0) for 2, 3, 4;
    $s->wait_state('u', $P[$_], 'up', 3) for 1, 2, 3;
};

subtest 'without lb_panic: the one healthy peer takes everything (nginx semantics)' => sub {
    $s->reload(conf(''));
    sick($_, 1) for 2, 3, 4;
    $s->wait_state('u', $P[$_], 'unhealthy', 3) for 1, 2, 3;
    my $seen = $s->bodies(40);
    is_deeply($seen, { $P[0] => 40 }, 'only the healthy peer serves') or diag(explain $seen);
    is(upstream_panic(), undef, 'status: panic null');
};

unlike($s->error_log, qr/\[(?:alert|crit|emerg)\]/, 'no alert, crit or emerg in the error log');
$s->cleanup;
done_testing;
