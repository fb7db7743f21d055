# lb_status?format=html in a real browser: Debian's headless chromium, driven over the DevTools
# protocol by t/dashboard.py (python3-websocket; scripts/test.sh installs both). The page is
# loaded, polls the JSON twice, draws its charts, lists the peers as the JSON has them, shows a
# backend that fails its checks (and comes back) within 3 s with the reason, drains and
# re-weights a peer through lb_api with real clicks, fits 1,280 px and a phone's 390 px
# without sideways scrolling, logs no console error (CSP violations included), sends no
# request beyond its server, and without JavaScript still shows the table. A stream upstream
# of the same name has a section of its own, and its drain and up buttons act on it. Screenshots for a
# person: build/dashboard-1280.png, build/dashboard-phone.png, build/dashboard-nojs.png.
# Scripted (Test::LB::Server): the browser needs a running server. About 12 s.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Cwd qw(abs_path);
use File::Basename qw(dirname);
use Test::LB::Server;

my $root = abs_path(dirname(__FILE__) . '/..');
for my $need (['chromium', 'chromium'], ['/usr/bin/python3 -c "import websocket"', 'python3-websocket']) {
    system("$need->[0] --version >/dev/null 2>&1") == 0 || system("$need->[0] >/dev/null 2>&1") == 0
        or BAIL_OUT("$need->[1] is missing: apt-get install chromium python3-websocket (scripts/test.sh does)");
}

# A stream upstream of the same name as the http one: the page keeps them apart, and its
# buttons act on the stream one with ?kind=stream.
my $s = Test::LB::Server->new(name => 'dashboard', workers => 2, stream => <<'STREAM');
    server { listen 127.0.0.1:__PORT5__; listen 127.0.0.1:__PORT6__; return "ok"; }
    upstream u {
        lb_upstream;
        server 127.0.0.1:__PORT5__;
        server 127.0.0.1:__PORT6__;
        lb_check type=tcp interval=300ms timeout=200ms rise=1 fall=1;
    }
STREAM
my $dir = $s->dir;
# Workers run as nobody when nginx starts as root: the flag directory must be readable by it.
chmod 0755, $dir, "$dir/html";

$s->start(<<'CONF');
    server {
        listen 127.0.0.1:__PORT2__; listen 127.0.0.1:__PORT3__; listen 127.0.0.1:__PORT4__;
        location /health { if (-f __DIR__/html/down_$server_port) { return 500; } return 200 "ok"; }
        location / { return 200 "$server_port\n"; }
    }
    upstream u {
        lb_upstream;
        zone u 1m;
        server 127.0.0.1:__PORT2__;
        server 127.0.0.1:__PORT3__ weight=2;
        server 127.0.0.1:__PORT4__ backup;
        lb_check type=http uri=/health interval=300ms timeout=200ms rise=1 fall=1;
    }
    # A name that is markup: the page must show it as written; one that is a property of
    # every JavaScript object.
    upstream "<b>x&amp;\"y'</b>" { lb_upstream; server 127.0.0.1:__PORT4__; }
    upstream __proto__ { lb_upstream; server 127.0.0.1:__PORT4__; }
    server {
        listen 127.0.0.1:__PORT1__;
        location / { proxy_pass http://u; }
        # Nothing else here: a request the page should not make (/favicon.ico) fails.
        location = /favicon.ico { return 404; }
        location /status { lb_status api=/lb-api/; }
        location /ro { lb_status; }
        location /lb-api/ { lb_api write=on; }
    }
CONF
$s->wait_state('u', '127.0.0.1:' . $s->port($_), 'up', 3) for 2 .. 4;

# The policy the browser enforces: only the page's own script and style, requests to itself.
my ($code, $body, $head) = $s->get('/status?format=html');
is($code, 200, 'the HTML page');
like($head, qr/^Content-Security-Policy: default-src 'none'; script-src 'sha256-[A-Za-z0-9+\/]+={0,2}'; style-src 'sha256-[A-Za-z0-9+\/]+={0,2}'; connect-src 'self';/mi,
     'a strict Content-Security-Policy');
($code, undef, $head) = $s->get('/status?format=json');
unlike($head, qr/Content-Security-Policy/i, 'only on the HTML page');

my $base = 'http://127.0.0.1:' . $s->port(1);
open(my $run, '-|', '/usr/bin/python3', "$root/t/dashboard.py", '--base', $base, '--upstream', 'u',
     '--flip-dir', "$dir/html", '--shots', "$root/build",
     '--stream-peer', '127.0.0.1:' . $s->port(5)) or die "t/dashboard.py: $!";
my ($checks, $passed) = (0, 1);
while (my $line = <$run>) {
    chomp $line;
    if ($line =~ /^(not )?ok - (.*)$/) {
        $passed = ok(!$1, $2);
        $checks++;
    } elsif ($line =~ /^# ?(.*)$/) {
        # What the browser saw: shown for a failed check, kept quiet (verbose only) otherwise.
        $passed ? note($1) : diag($1);
    }
}
close $run;
is($?, 0, 't/dashboard.py finished');
cmp_ok($checks, '>=', 24, 'every browser check ran');

like($s->error_log, qr/lb: api: peer 127\.0\.0\.1:\d+ in upstream "u" set to drain/, 'the drain reached lb_api');
like($s->error_log, qr/lb: api: peer 127\.0\.0\.1:\d+ in stream upstream "u" set to drain/,
     'and the stream one, logged as such');
unlike($s->error_log, qr/\[(alert|emerg|crit)\]/, 'no alert in the error log');

$s->cleanup;
done_testing();
