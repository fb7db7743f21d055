# lb_api and lb_state with an http and a stream upstream of the same name: `?kind=stream`
# addresses the stream one (without it the http one comes first), a drained stream peer gets no
# new connection, and the change comes back from lb_state after a restart with the kind it was
# made for. Scripted (TCP clients, a restart).
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use IO::Socket::INET;
use File::Path qw(make_path);
use Time::HiRes qw(sleep);
use Test::LB::Server;

my $s = Test::LB::Server->new(name => 'stream_api', workers => 1, stream => <<'STREAM');
    upstream backend {
        lb_upstream;
        server 127.0.0.1:__PORT3__;
        server 127.0.0.1:__PORT4__;
    }
    server { listen 127.0.0.1:__PORT2__; proxy_pass backend; }
    server { listen 127.0.0.1:__PORT3__; return "a"; }
    server { listen 127.0.0.1:__PORT4__; return "b"; }
STREAM
make_path($s->dir . '/state');
chmod 0777, $s->dir . '/state';    # workers run as nobody when nginx starts as root
my $conf = <<'CONF';
    lb_state __DIR__/state/lb.state;
    upstream backend {
        lb_upstream;
        server 127.0.0.1:__PORT5__;
    }
    server { listen 127.0.0.1:__PORT5__; return 200 "h"; }
    server {
        listen 127.0.0.1:__PORT1__;
        location /lb-api/ { lb_api write=on; }
        location /status { lb_status; }
    }
CONF
$s->start($conf);

my ($A, $B) = map { '127.0.0.1:' . $s->port($_) } 3, 4;
my $H = '127.0.0.1:' . $s->port(5);

sub api { $s->json_request(@_) }

sub tcp {
    my $c = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $s->port(2), Timeout => 3)
        or return "connect: $!";
    local $/;
    my $got = <$c> // '';
    return $got;
}

my ($code, $u) = api('GET', '/lb-api/upstreams/backend');
is($code, 200, 'GET upstreams/backend');
is("$u->{kind} $u->{peers}[0]{address}", "http $H", 'without kind: the http upstream');
($code, $u) = api('GET', '/lb-api/upstreams/backend?kind=stream');
is("$u->{kind} " . join(',', map { $_->{address} } @{ $u->{peers} }), "stream $A,$B",
   '?kind=stream: the stream upstream');
($code, my $e) = api('GET', '/lb-api/upstreams/backend?kind=udp');
is($code, 400, 'an unknown kind is refused');
like($e->{error} // '', qr/invalid kind "udp"/, 'and said so');

is(join('', map { tcp() } 1 .. 4), 'abab', 'TCP connections alternate');
($code, my $p) = api('PATCH', "/lb-api/upstreams/backend/peers/$A?kind=stream", '{"admin": "drain"}');
is("$code $p->{admin}", '200 drain', 'drain the stream peer a');
is(join('', map { tcp() } 1 .. 4), 'bbbb', 'no new connection goes to a');
($code, $u) = api('GET', '/lb-api/upstreams/backend');
is($u->{peers}[0]{admin}, 'up', 'the http upstream of the same name is untouched');
like($s->slurp('state/lb.state') // '', qr/"kind": "stream"/, 'lb_state says which upstream it was');

# A restart with a fresh zone: the change comes back from the file, to the stream peer only.
$s->stop;
$s->start($conf);
like($s->error_log, qr/lb_state: restored 1 peer change\(s\)/, 'restored at the start');
($code, $u) = api('GET', '/lb-api/upstreams/backend?kind=stream');
is(join(' ', map { "$_->{address}=$_->{admin}" } @{ $u->{peers} }), "$A=drain $B=up",
   'the stream peer is draining again');
($code, $u) = api('GET', '/lb-api/upstreams/backend?kind=http');
is($u->{peers}[0]{admin}, 'up', 'the http peer is not');
is(join('', map { tcp() } 1 .. 3), 'bbb', 'and a still gets no connection');

$s->stop;
# Its directory stays for a look when something failed.
$s->cleanup if Test::More->builder->is_passing;
done_testing;
