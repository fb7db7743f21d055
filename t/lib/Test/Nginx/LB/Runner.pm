package Test::Nginx::LB::Runner;

# A small data-driven nginx test runner for this project.
#
# It reads the same "=== TEST / --- section" block format that the
# Test::Nginx::Socket tests of the nginx ecosystem use (the blocks are
# parsed by Test::Base), writes an nginx.conf per block, starts the
# nginx binary given in $ENV{TEST_NGINX_BINARY}, sends the request(s) and
# checks the answer and the logs with Test::More assertions.
#
# It is normally loaded through Test::Nginx::LB, not used directly.
#
# Copyright (c) the ngx_http_lb_module authors. MIT licensed.

use strict;
use warnings;

use Test::Base ();
our @ISA = ('Test::Base');

use Test::More ();
use Cwd qw(abs_path getcwd);
use Fcntl qw(:flock);
use File::Basename qw(basename dirname);
use File::Path qw(make_path remove_tree);
use File::Spec ();
use IO::Select ();
use IO::Socket::INET ();
use List::Util qw(shuffle);
use POSIX qw(:sys_wait_h);
use Time::HiRes qw(sleep time);

our $VERSION = '0.1';

our @EXPORT = qw(
    run_tests repeat_each workers master_on master_off log_level
    no_shuffle no_long_string no_root_location add_block_preprocessor
    env_to_nginx worker_connections html_dir server_root server_port
    bail_out check_accum_error_log timeout
    add_response_body_check add_cleanup_handler add_test_cleanup_handler
    config_preamble master_process_enabled server_port_for_client
    server_addr server_name is_str use_hup no_nginx_manager
);

# ---------------------------------------------------------------------------
# Settings (changed by the exported functions, some seeded from the env).

our $RepeatEach        = 1;
our $Workers           = 1;
our $MasterProcess     = $ENV{TEST_NGINX_MASTER_PROCESS} || 'off';
our $LogLevel          = $ENV{TEST_NGINX_LOG_LEVEL} || 'info';
our $NoShuffle         = $ENV{TEST_NGINX_NO_SHUFFLE} || 0;
our $NoLongString      = 0;
our $NoRootLocation    = 0;
our $WorkerConnections = 64;
our $CheckAccumErrLog  = $ENV{TEST_NGINX_CHECK_ACCUM_ERR_LOG} || 0;
our $DefaultTimeout    = $ENV{TEST_NGINX_TIMEOUT} || 3;
our $StartTimeout      = $ENV{TEST_NGINX_START_TIMEOUT} || 5;
our $StopTimeout       = 5;
our $LogSettle         = 0.05;    # let nginx finish its log phase
our @Preprocessors;
our @EnvToNginx;
our @BodyChecks;
our @CleanupHandlers;
our @TestCleanupHandlers;
our $ConfigPreamble = '';

# Where things live for this .t file (filled in by _setup_file below).
our ($ServRoot, $HtmlDir, $LogDir, $ConfDir, $ConfFile);
our ($ErrLog, $AccLog, $StderrLog, $PidFile);
our ($ServerPort, %RandPorts);

my ($NginxPid, $NginxVer, $NginxV);
my (@PortLocks, $RootLock);
my %UsedPorts;
my $Finished;

# ---------------------------------------------------------------------------
# Public settings API.

sub repeat_each {
    $RepeatEach = shift if @_;
    return $RepeatEach;
}

sub workers {
    $Workers = shift if @_;
    return $Workers;
}

sub master_on  { $MasterProcess = 'on' }
sub master_off { $MasterProcess = 'off' }

sub log_level {
    $LogLevel = shift if @_;
    return $LogLevel;
}

sub no_shuffle            { $NoShuffle = 1 }
sub no_long_string        { $NoLongString = 1 }
sub no_root_location      { $NoRootLocation = 1 }
sub check_accum_error_log { $CheckAccumErrLog = 1 }

sub worker_connections {
    $WorkerConnections = shift if @_;
    return $WorkerConnections;
}

sub timeout {
    $DefaultTimeout = shift if @_;
    return $DefaultTimeout;
}

sub add_block_preprocessor (&) {
    unshift @Preprocessors, shift;
}

sub env_to_nginx {
    for my $v (@_) {
        die "env_to_nginx: bad variable \"$v\"\n"
            if !defined $v || $v !~ /^[A-Za-z_]/ || $v =~ /\n/;
        push @EnvToNginx, $v;
    }
}

# Extra code checks: called as ->($block, $body, $req_idx, $repeat_idx, 0)
# after the built-in checks of every response.
sub add_response_body_check { push @BodyChecks, shift }

# Called with no arguments when run_tests ends / with the block after each
# block.
sub add_cleanup_handler      { unshift @CleanupHandlers, shift }
sub add_test_cleanup_handler { unshift @TestCleanupHandlers, shift }

# nginx config text put into the default server before --- config.
sub config_preamble { $ConfigPreamble = shift }

sub master_process_enabled {
    $MasterProcess = $_[0] ? 'on' : 'off' if @_;
    return $MasterProcess eq 'on';
}

sub server_port_for_client { $ServerPort }
sub server_addr            { '127.0.0.1' }
sub server_name            { 'localhost' }

sub is_str {
    my ($got, $expected, $label) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    return _is_str($got, $expected, $label);
}

# Accepted for compatibility; this runner always restarts nginx per block.
sub use_hup          { }
sub no_nginx_manager { }

sub html_dir    { $HtmlDir }
sub server_root { $ServRoot }
sub server_port { $ServerPort }

sub bail_out {
    _stop_nginx();
    Test::More::BAIL_OUT(join '', @_);
}

# ---------------------------------------------------------------------------
# Per-file setup: server root and ports, done once when the module loads so
# that Perl code in the .t file (and `eval` sections) can see the env vars.

sub _reserve_port {
    my $lockdir = File::Spec->catdir(File::Spec->tmpdir, 'test-nginx-lb-ports');
    mkdir $lockdir;
    chmod 01777, $lockdir;
    for (1 .. 500) {
        # stay below the usual Linux ephemeral range (32768+)
        my $port = 10000 + int rand 22000;
        next if $UsedPorts{$port};
        open my $fh, '>', "$lockdir/$port.lock" or next;
        if (!flock $fh, LOCK_EX | LOCK_NB) {
            close $fh;
            next;
        }
        my $probe = IO::Socket::INET->new(
            LocalAddr => '0.0.0.0',
            LocalPort => $port,
            Proto     => 'tcp',
            Listen    => 1,
            ReuseAddr => 1,
        );
        if (!$probe) {
            close $fh;
            next;
        }
        close $probe;
        push @PortLocks, $fh;    # held until this process exits
        $UsedPorts{$port} = 1;
        return $port;
    }
    die "Test::Nginx::LB::Runner: could not find a free TCP port\n";
}

sub _setup_file {
    # Variables we exported to a parent test process must not leak into a
    # nested one (e.g. a .t run from inside another .t).
    if (defined $ENV{TEST_NGINX_LB_PID} && $ENV{TEST_NGINX_LB_PID} ne $$) {
        for my $k (keys %ENV) {
            delete $ENV{$k} if $k =~ /^TEST_NGINX_(?:SERVER_PORT|PORT|SERVROOT
                |SERVER_ROOT|HTML_DIR|RAND_PORT_\d+|STREAM_PORT)$/x;
        }
    }
    $ENV{TEST_NGINX_LB_PID} = $$;

    my $script = abs_path($0) // File::Spec->rel2abs($0);
    my $tdir = dirname($script);
    (my $base = basename($script)) =~ s/\.t$//;
    $base =~ s/[^\w.-]/_/g;

    my $root = $ENV{TEST_NGINX_SERVROOT};
    $root = File::Spec->catdir($tdir, "servroot_$base") if !$root;
    $root = File::Spec->rel2abs($root);

    # Two copies of the same file running at once get separate roots.
    make_path($root);
    open my $lk, '>', "$root/.lock" or die "cannot create $root/.lock: $!\n";
    if (!flock $lk, LOCK_EX | LOCK_NB) {
        close $lk;
        $root .= "_$$";
        make_path($root);
        open $lk, '>', "$root/.lock" or die "cannot create $root/.lock: $!\n";
        flock $lk, LOCK_EX;
    }
    $RootLock = $lk;

    $ServRoot  = $root;
    $HtmlDir   = "$root/html";
    $LogDir    = "$root/logs";
    $ConfDir   = "$root/conf";
    $ConfFile  = "$ConfDir/nginx.conf";
    $ErrLog    = "$LogDir/error.log";
    $AccLog    = "$LogDir/access.log";
    $StderrLog = "$LogDir/stderr.log";
    $PidFile   = "$LogDir/nginx.pid";

    # start from a clean tree (keep our lock file)
    opendir my $dh, $root or die "cannot read $root: $!\n";
    for my $e (readdir $dh) {
        next if $e eq '.' || $e eq '..' || $e eq '.lock';
        remove_tree("$root/$e");
    }
    closedir $dh;
    make_path($HtmlDir, $LogDir, $ConfDir);

    $ServerPort = $ENV{TEST_NGINX_SERVER_PORT} || $ENV{TEST_NGINX_PORT};
    if ($ServerPort) {
        $UsedPorts{$ServerPort} = 1;
    } else {
        $ServerPort = _reserve_port();
    }
    for my $i (1 .. 5) {
        my $k = "TEST_NGINX_RAND_PORT_$i";
        if ($ENV{$k}) {
            $UsedPorts{ $ENV{$k} } = 1;
        } else {
            $ENV{$k} = _reserve_port();
        }
        $RandPorts{$k} = $ENV{$k};
    }

    # The stream server of --- stream_server_config (Test::Nginx::Socket::Lua::Stream's
    # name for it).
    if ($ENV{TEST_NGINX_STREAM_PORT}) {
        $UsedPorts{ $ENV{TEST_NGINX_STREAM_PORT} } = 1;
    } else {
        $ENV{TEST_NGINX_STREAM_PORT} = _reserve_port();
    }

    $ENV{TEST_NGINX_SERVER_PORT} = $ServerPort;
    $ENV{TEST_NGINX_SERVROOT}    = $ServRoot;
    $ENV{TEST_NGINX_SERVER_ROOT} = $ServRoot;
    $ENV{TEST_NGINX_HTML_DIR}    = $HtmlDir;
}

_setup_file();

# ---------------------------------------------------------------------------
# Small helpers.

sub _tb { Test::More->builder }

sub _failures {
    return scalar grep { !$_ } _tb()->summary;
}

sub _slurp {
    my ($file, $offset) = @_;
    open my $fh, '<', $file or return '';
    binmode $fh;
    seek $fh, $offset, 0 if $offset;
    local $/;
    my $s = <$fh>;
    close $fh;
    return defined $s ? $s : '';
}

sub _spew {
    my ($file, $data) = @_;
    my $dir = dirname($file);
    make_path($dir) if !-d $dir;
    open my $fh, '>', $file or bail_out("cannot write $file: $!");
    binmode $fh;
    print $fh $data;
    close $fh;
}

sub _show {
    my $s = shift;
    return 'undef' if !defined $s;
    $s =~ s/([\0-\x08\x0b-\x1f\x7f])/sprintf '\\x%02x', ord $1/ge;
    return $s;
}

sub _parse_time {
    my $t = shift;
    return undef if !defined $t;
    $t =~ s/^\s+|\s+$//g;
    return $1 / 1000 if $t =~ /^([\d.]+)\s*ms$/;
    return $1 if $t =~ /^([\d.]+)\s*s?$/;
    return $t;
}

# Replace $TEST_NGINX_FOO with $ENV{TEST_NGINX_FOO}.
sub _expand {
    my ($text, $name) = @_;
    return $text if !defined $text || ref $text;
    $text =~ s{\$(TEST_NGINX_[A-Z0-9_]+)}{_env_value($1, $name)}ge;
    return $text;
}

sub _env_value {
    my ($var, $name) = @_;
    if ($var =~ /^TEST_NGINX_RAND_PORT_\d+$/ && !$ENV{$var}) {
        $ENV{$var} = _reserve_port();
        $RandPorts{$var} = $ENV{$var};
    }
    if (!defined $ENV{$var}) {
        bail_out("$name - \$$var is used but the environment variable"
                 . " $var is not set");
    }
    return $ENV{$var};
}

# For sections that may hold one value or one value per request.
sub _pick {
    my ($name, $section, $value, $idx, $multi) = @_;
    return undef if !defined $value;
    if (ref $value eq 'ARRAY') {
        return $value->[$idx] if $multi;
        return $value->[0];
    }
    if ($multi) {
        bail_out("$name - several requests are sent, so --- $section must"
                 . " be an array (use `--- $section eval`)");
    }
    return $value;
}

# String equality with a readable report for long/multi-line strings.
sub _is_str {
    my ($got, $expected, $label) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    if ($NoLongString || !defined $got || !defined $expected
        || (length($expected) < 60 && $expected !~ /\n./s
            && length($got) < 60 && $got !~ /\n./s))
    {
        return Test::More::is($got, $expected, $label);
    }
    my $ok = Test::More::ok($got eq $expected, $label);
    Test::More::diag(_describe_difference($got, $expected)) if !$ok;
    return $ok;
}

sub _describe_difference {
    my ($got, $exp) = @_;
    my $i = 0;
    my $max = length($got) < length($exp) ? length($got) : length($exp);
    $i++ while $i < $max && substr($got, $i, 1) eq substr($exp, $i, 1);
    my $line = 1 + (() = substr($got, 0, $i) =~ /\n/g);
    my $from = $i > 30 ? $i - 30 : 0;
    my $out = sprintf "strings differ at offset %d (line %d); got %d bytes,"
        . " expected %d bytes\n", $i, $line, length $got, length $exp;
    for my $pair (['   got', $got], ['  want', $exp]) {
        (my $snip = _show(substr $pair->[1], $from, 70)) =~ s/\n/\\n/g;
        $out .= "$pair->[0]: " . ($from ? '...' : '') . "\"$snip\"\n";
    }

    my @g = split /\n/, $got, -1;
    my @e = split /\n/, $exp, -1;
    my $n = @g > @e ? @g : @e;
    my @diff;
    for my $k (0 .. $n - 1) {
        my ($a, $b) = ($g[$k], $e[$k]);
        next if defined $a && defined $b && $a eq $b;
        push @diff, sprintf "  line %d: -want %s\n", $k + 1, _show($b)
            if defined $b;
        push @diff, sprintf "  line %d: +got  %s\n", $k + 1, _show($a)
            if defined $a;
        last if @diff > 20;
    }
    return $out . "line diff (first lines that differ):\n" . join '', @diff;
}

# ---------------------------------------------------------------------------
# nginx binary information.

sub _nginx_info {
    return if defined $NginxV;
    my $bin = $ENV{TEST_NGINX_BINARY} || 'nginx';
    if ($bin =~ m{/} && !-x $bin) {
        bail_out("nginx binary $bin does not exist or is not executable");
    }
    $NginxV = `'$bin' -V 2>&1`;
    $NginxV = '' if !defined $NginxV;
    if ($NginxV =~ m{nginx version: \S+?/(\d+)\.(\d+)\.(\d+)}) {
        $NginxVer = $1 * 1000000 + $2 * 1000 + $3;
    } else {
        bail_out("cannot run \"$bin -V\": " . ($NginxV || $!));
    }
}

sub _use_http2 {
    my $block = shift;
    return defined scalar($block->http2);
}

# ---------------------------------------------------------------------------
# nginx.conf

sub _config_text {
    my $block = shift;
    my $name = $block->name;

    my $config      = _expand(scalar($block->config), $name);
    my $http_config = _expand(scalar($block->http_config), $name);
    my $main_config = _expand(scalar($block->main_config), $name);
    my $post_main   = _expand(scalar($block->post_main_config), $name);
    $_ = '' for grep { !defined } $config, $http_config, $main_config,
        $post_main;

    my $level = scalar($block->log_level);
    $level = $LogLevel if !defined $level || $level !~ /\S/;
    $level =~ s/^\s+|\s+$//g;

    my $listen = "listen $ServerPort";
    my $h2 = '';
    if (_use_http2($block)) {
        if ($NginxVer >= 1025001) {
            $h2 = "\n        http2 on;";
        } else {
            $listen .= ' http2';
        }
    }

    my @temp;
    for my $t (qw(client_body proxy fastcgi uwsgi scgi)) {
        next if $http_config =~ /\b${t}_temp_path\b/;
        next if $t ne 'client_body' && $t ne 'proxy'
            && $NginxV =~ /--without-http_${t}_module/;
        push @temp, "${t}_temp_path $ServRoot/${t}_temp;";
    }
    my $temp = join "\n    ", @temp;

    my $env = join '', map {
        my $v = $_;
        $v = "'$v'" if $v =~ /\s/;
        "env $v;\n";
    } @EnvToNginx;

    my $user = $> == 0 ? "user root;\n" : '';

    my $root_location = $NoRootLocation ? '' : <<"_LOC_";
        location / {
            root $HtmlDir;
            index index.html index.htm;
        }
_LOC_

    return <<"_CONF_";
# written by Test::Nginx::LB::Runner for: $name
worker_processes $Workers;
daemon off;
master_process $MasterProcess;
error_log $ErrLog $level;
pid $PidFile;
$user$env
$main_config

http {
    access_log $AccLog;
    $temp
    default_type text/plain;
    keepalive_timeout 68;

$http_config

    server {
        $listen;$h2
        server_name localhost;
        client_max_body_size 30M;

$ConfigPreamble
        # --- config section of the test block
$config
        # --- end of config section

$root_location    }
}

$post_main

events {
    accept_mutex off;
    worker_connections $WorkerConnections;
}
_CONF_
}

# ---------------------------------------------------------------------------
# user_files

sub _reset_html {
    remove_tree($HtmlDir);
    make_path($HtmlDir);
    _spew("$HtmlDir/index.html",
          "<html><body>test server root</body></html>\n");
}

sub _write_user_files {
    my $block = shift;
    my $name = $block->name;
    my $files = scalar($block->user_files);
    return if !defined $files;

    my @list;
    if (ref $files eq 'ARRAY') {
        @list = @$files;
    } elsif (!ref $files) {
        my $cur;
        for my $line (split /^/, $files) {
            if ($line =~ /^>>> (\S+)(?:\s+(.+?))?\s*$/) {
                push @list, $cur if $cur;
                $cur = [$1, '', $2];
            } elsif ($cur) {
                $cur->[1] .= $line;
            }
        }
        push @list, $cur if $cur;
    } else {
        bail_out("$name - --- user_files must be text or an array");
    }

    for my $f (@list) {
        my ($fname, $body, $date) = @$f;
        $body = '' if !defined $body;
        my $path = $fname =~ m{^/} ? $fname : "$HtmlDir/$fname";
        _spew($path, _expand($body, $name));
        if ($date) {
            local $ENV{TZ} = 'GMT';
            system('touch', '-t', $date, $path) == 0
                or bail_out("$name - cannot set the date of $path");
        }
    }
}

# ---------------------------------------------------------------------------
# Starting and stopping nginx.

sub _nginx_alive {
    return 0 if !$NginxPid;
    my $r = waitpid $NginxPid, WNOHANG;
    return 1 if $r == 0;
    return 0;
}

# Returns { ok => 1 } once nginx runs, or { exited => 1, status => $? }.
sub _start_nginx {
    my ($block, $expect_death) = @_;
    my $name = $block->name;
    my $bin = $ENV{TEST_NGINX_BINARY} || 'nginx';

    unlink $PidFile;
    my @cmd = ($bin, '-p', "$ServRoot/", '-c', $ConfFile);
    splice @cmd, 1, 0, '-e', $ErrLog if $NginxVer >= 1019005;

    my $pid = fork;
    bail_out("$name - fork failed: $!") if !defined $pid;
    if ($pid == 0) {
        setpgrp(0, 0);
        open STDIN, '<', '/dev/null';
        open STDOUT, '>', '/dev/null';
        open STDERR, '>>', $StderrLog;
        { exec { $cmd[0] } @cmd; }
        print STDERR "exec $cmd[0] failed: $!\n";
        POSIX::_exit(127);
    }
    $NginxPid = $pid;

    my $deadline = time + $StartTimeout;
    while (time < $deadline) {
        my $r = waitpid $pid, WNOHANG;
        if ($r == $pid) {
            my $status = $?;
            undef $NginxPid;
            return { exited => 1, status => $status };
        }
        if (!$expect_death && -s $PidFile) {
            my $txt = _slurp($PidFile);
            return { ok => 1 } if $txt =~ /^\s*(\d+)/ && $1 == $pid;
        }
        sleep 0.01;
    }
    if ($expect_death) {
        return { ok => 1 };
    }
    _stop_nginx();
    return { timeout => 1 };
}

sub _stop_nginx {
    return if !$NginxPid;
    my $pid = $NginxPid;
    undef $NginxPid;
    kill 'TERM', $pid;
    my $deadline = time + $StopTimeout;
    while (time < $deadline) {
        my $r = waitpid $pid, WNOHANG;
        if ($r == $pid || $r == -1) {
            kill 'KILL', -$pid;    # stray workers, if any
            return;
        }
        sleep 0.01;
    }
    Test::More::diag("nginx (pid $pid) did not stop within ${StopTimeout}s;"
                     . " killing it");
    kill 'KILL', -$pid;
    kill 'KILL', $pid;
    waitpid $pid, 0;
}

END {
    _stop_nginx() if $NginxPid;
}

# nginx runs in its own process group, so a Ctrl-C or a kill of the test
# does not reach it: stop it ourselves.
for my $sig (qw(INT TERM HUP)) {
    next if defined $SIG{$sig} && $SIG{$sig} ne '' && $SIG{$sig} ne 'DEFAULT';
    $SIG{$sig} = sub {
        _stop_nginx();
        $SIG{$sig} = 'DEFAULT';
        kill $sig, $$;
        POSIX::_exit(128 + 2);
    };
}

# ---------------------------------------------------------------------------
# Building requests.

sub _header_lines {
    my $text = shift;
    return ('', 0) if !defined $text;
    my ($out, $chunked) = ('', 0);
    for my $line (split /\n+/, $text) {
        $line =~ s/\r$//;
        next if $line =~ /^\s*#/ || $line !~ /\S/;
        my ($k, $v) = split /:\s*/, $line, 2;
        $v = '' if !defined $v;
        $chunked = 1 if lc $k eq 'transfer-encoding' && lc $v eq 'chunked';
        $out .= "$k: $v\r\n";
    }
    return ($out, $chunked);
}

# Turns "GET /uri [HTTP/x]\nbody" into a full HTTP request.
sub _build_request {
    my ($name, $text, $more, $conn) = @_;
    $text = _expand($text, $name);
    $text =~ s/\A(?:\s*#[^\n]*\n)+//;
    $text =~ s/\A\s+//;
    my ($line, $body) = split /\r?\n/, $text, 2;
    bail_out("$name - the request is empty") if !defined $line || $line eq '';
    my ($meth, $uri, $ver) = split ' ', $line;
    $uri = '/' if !defined $uri;
    $ver = 'HTTP/1.1' if !defined $ver;

    my ($hdrs, $chunked) = _header_lines(_expand($more, $name));
    my $req = "$meth $uri $ver\r\n";
    $req .= "Host: localhost\r\n" if $hdrs !~ /^Host\s*:/mi;
    $req .= "Connection: $conn\r\n" if $hdrs !~ /^Connection\s*:/mi;
    $req .= $hdrs;
    $body = '' if !defined $body;
    if ($body ne '' && !$chunked) {
        $body =~ s/^\s+|\s+$//g;
        $req .= "Content-Length: " . length($body) . "\r\n"
            if $hdrs !~ /^Content-Length\s*:/mi;
    }
    $req .= "\r\n" . $body;
    return {
        data => $req, method => $meth, uri => $uri, version => $ver,
        headers => $hdrs, body => $body,
    };
}

# Returns a list of "exchanges": { packets => [...], count => N, ... }.
# Each exchange is one connection; count is the number of responses.
sub _exchanges {
    my $block = shift;
    my $name = $block->name;
    my $more = scalar($block->more_headers);

    my $pick_more = sub {
        my $i = shift;
        return $more if ref $more ne 'ARRAY';
        bail_out("$name - --- more_headers has no entry for request $i")
            if !defined $more->[$i];
        return $more->[$i];
    };

    if (defined(my $raw = scalar($block->raw_request))) {
        my @p = ref $raw eq 'ARRAY' ? @$raw : ($raw);
        @p = map { ref $_ eq 'HASH' ? $_->{value} : $_ } @p;
        my $joined = join '', @p;
        return {
            packets => [map { _expand($_, $name) } @p],
            count => 1, head => scalar($joined =~ /^\s*HEAD\s/),
        };
    }

    if (defined(my $pl = scalar($block->pipelined_requests))) {
        bail_out("$name - --- pipelined_requests must be an array (use eval)")
            if ref $pl ne 'ARRAY';
        my $data = '';
        my @heads;
        for my $i (0 .. $#$pl) {
            my $r = _build_request($name, $pl->[$i], $pick_more->($i),
                                   $i == $#$pl ? 'close' : 'keep-alive');
            $data .= $r->{data};
            push @heads, $r->{method} eq 'HEAD';
        }
        return { packets => [$data], count => scalar @$pl, heads => \@heads };
    }

    my $req;
    if (defined scalar($block->request_eval)) {
        $req = eval scalar($block->request_eval);
        bail_out("$name - --- request_eval failed: $@") if $@;
    } else {
        $req = scalar($block->request);
    }
    bail_out("$name - no --- request, --- raw_request or"
             . " --- pipelined_requests section") if !defined $req;

    my @reqs = ref $req eq 'ARRAY' ? @$req : ($req);
    my @out;
    for my $i (0 .. $#reqs) {
        my $one = $reqs[$i];
        my $text = $one;
        if (ref $one eq 'ARRAY') {    # packets: sent as one write here
            $text = join '', map { ref $_ eq 'HASH' ? $_->{value} : $_ } @$one;
        }
        my $r = _build_request($name, $text, $pick_more->($i), 'close');
        push @out, {
            packets => [$r->{data}], count => 1,
            head => $r->{method} eq 'HEAD', parsed => $r,
        };
    }
    return @out;
}

# ---------------------------------------------------------------------------
# Talking to nginx.

sub _send_socket {
    my ($block, $ex, $timeout) = @_;
    my $delay = _parse_time(scalar($block->raw_request_middle_delay));
    my $deadline = time + $timeout;

    my $sock = IO::Socket::INET->new(
        PeerAddr => '127.0.0.1',
        PeerPort => $ServerPort,
        Proto    => 'tcp',
        Timeout  => $timeout,
    ) or return ('', "cannot connect to 127.0.0.1:$ServerPort: $@");
    $sock->autoflush(1);
    binmode $sock;

    my $sel = IO::Select->new($sock);
    my @packets = @{ $ex->{packets} };
    for my $k (0 .. $#packets) {
        my $data = $packets[$k];
        while (length $data) {
            my $left = $deadline - time;
            return ('', "timed out after ${timeout}s while sending")
                if $left <= 0 || !$sel->can_write($left);
            my $n = syswrite $sock, $data;
            if (!defined $n) {
                last if $!{EPIPE} || $!{ECONNRESET};
                return ('', "write failed: $!");
            }
            substr($data, 0, $n) = '';
        }
        sleep $delay if $delay && $k < $#packets;
    }

    my $resp = '';
    while (1) {
        my $left = $deadline - time;
        if ($left <= 0 || !$sel->can_read($left)) {
            close $sock;
            return ($resp, "timed out after ${timeout}s while reading the"
                           . " response (" . length($resp) . " bytes read)");
        }
        my $n = sysread $sock, my $buf, 65536;
        last if !$n;    # EOF or error (e.g. reset)
        $resp .= $buf;
    }
    close $sock;
    return ($resp, undef);
}

sub _curl_command {
    my ($block, $ex, $timeout) = @_;
    my $name = $block->name;
    my $r = $ex->{parsed}
        or bail_out("$name - --- http2 needs --- request (not raw or pipelined)");
    my $proto = scalar($block->curl_protocol);
    $proto = 'http' if !defined $proto || $proto !~ /\S/;
    $proto =~ s/\s+//g;

    my @cmd = ('curl', '-i', '-sS', '-H', 'User-Agent:', '-H', 'Accept:',
               '-H', 'Host:');
    push @cmd, '--http2-prior-knowledge' if _use_http2($block);
    if ($r->{method} eq 'HEAD') {
        push @cmd, '-I';
    } elsif ($r->{method} ne 'GET') {
        push @cmd, '-X', $r->{method};
    }
    push @cmd, '-0' if $r->{version} ne 'HTTP/1.1';

    my (@h, $has_ct);
    my ($head) = $r->{data} =~ /\A[^\r\n]*\r\n(.*?)\r\n\r\n/s;
    for my $line (split /\r\n/, defined $head ? $head : '') {
        next if $line =~ /^(?:Connection|Content-Length)\s*:/i;
        $has_ct = 1 if $line =~ /^Content-Type\s*:/i;
        push @h, '-H', $line;
    }
    push @cmd, @h;
    if ($r->{body} ne '') {
        my $file = "$HtmlDir/curl.data.bin";
        _spew($file, $r->{body});
        push @cmd, '-H', 'Content-Type: ' if !$has_ct;
        push @cmd, '--data-binary', "\@$file";
    }
    push @cmd, '--connect-timeout', $timeout, '--max-time', $timeout;
    my $opts = scalar($block->curl_options);
    push @cmd, split ' ', $opts if defined $opts;
    push @cmd, "$proto://127.0.0.1:$ServerPort$r->{uri}";
    return @cmd;
}

sub _send_curl {
    my ($block, $ex, $timeout) = @_;
    my @cmd = _curl_command($block, $ex, $timeout);
    my ($out, $err) = ("$LogDir/curl.out", "$LogDir/curl.err");
    unlink $out, $err;
    my $pid = fork;
    return ('', "fork failed: $!") if !defined $pid;
    if ($pid == 0) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>', $out;
        open STDERR, '>', $err;
        { exec { $cmd[0] } @cmd; }
        print STDERR "cannot run curl: $!\n";
        POSIX::_exit(127);
    }
    my $deadline = time + $timeout + 5;
    my $status;
    while (time < $deadline) {
        if (waitpid($pid, WNOHANG) == $pid) {
            $status = $?;
            last;
        }
        sleep 0.01;
    }
    if (!defined $status) {
        kill 'KILL', $pid;
        waitpid $pid, 0;
        return (_slurp($out), "curl did not finish in time: @cmd");
    }
    my $resp = _slurp($out);
    my $stderr = _slurp($err);
    if ($status != 0 || $resp eq '') {
        return ($resp, "curl failed (exit " . ($status >> 8) . "): $stderr"
                       . " -- command: @cmd");
    }
    return ($resp, undef);
}

# ---------------------------------------------------------------------------
# Parsing responses.

# Parses one response from the front of $data.  Returns a hash:
#   code, status_line, headers (array of [name, value]), raw_headers,
#   body, left (unparsed bytes after this response), problem.
sub _parse_response {
    my ($data, $is_head, $from_curl) = @_;
    my %r = (code => '', headers => [], raw_headers => '', body => '',
             left => '', problem => undef);

    while (1) {
        my $end = index $data, "\r\n\r\n";
        my $sep = 4;
        if ($end < 0 && $from_curl) {
            $end = index $data, "\n\n";
            $sep = 2;
        }
        if ($end < 0) {
            $r{raw_headers} = $data;
            $r{problem} = 'incomplete response header' if length $data;
            $r{problem} = 'empty response' if !length $data;
            ($r{code}) = $data =~ m{\AHTTP/\S+\s+(\d{3})};
            $r{code} = '' if !defined $r{code};
            return \%r;
        }
        my $head = substr $data, 0, $end;
        my $rest = substr $data, $end + $sep;
        my @lines = split /\r?\n/, $head;
        my $status = shift @lines;
        my $code = $status =~ m{^HTTP/\S+\s+(\d{3})} ? $1 : '';
        if ($code =~ /^1\d\d$/ && $code ne '101') {
            $data = $rest;    # skip interim responses
            next;
        }
        $r{code} = $code;
        $r{status_line} = $status;
        $r{raw_headers} = "$head\r\n";
        for my $l (@lines) {
            push @{ $r{headers} }, [$1, $2] if $l =~ /^([^:\s]+)\s*:\s*(.*?)\s*$/;
        }
        $data = $rest;
        last;
    }

    my $te = _header(\%r, 'Transfer-Encoding');
    my $cl = _header(\%r, 'Content-Length');
    if ($is_head || $r{code} eq '204' || $r{code} eq '304'
        || $r{code} eq '101')
    {
        $r{left} = $data;
    } elsif ($from_curl) {
        $r{body} = $data;    # curl already removed any transfer coding
    } elsif (defined $te && $te =~ /\bchunked\b/i) {
        my $body = '';
        my $pos = 0;
        while (1) {
            my $nl = index $data, "\r\n", $pos;
            if ($nl < 0) {
                $r{problem} = 'chunked body ends early (no last chunk)';
                last;
            }
            my $size_line = substr $data, $pos, $nl - $pos;
            if ($size_line !~ /^\s*([0-9a-fA-F]+)/) {
                $r{problem} = "bad chunk size line \"" . _show($size_line)
                    . "\"";
                last;
            }
            my $size = hex $1;
            $pos = $nl + 2;
            if ($size == 0) {
                my $trail_end = index $data, "\r\n", $pos;
                while ($trail_end > $pos) {    # trailer lines
                    $pos = $trail_end + 2;
                    $trail_end = index $data, "\r\n", $pos;
                }
                $pos = $trail_end < 0 ? length $data : $trail_end + 2;
                last;
            }
            if ($pos + $size + 2 > length $data) {
                $body .= substr $data, $pos;
                $r{problem} = 'chunked body truncated';
                $pos = length $data;
                last;
            }
            $body .= substr $data, $pos, $size;
            $pos += $size + 2;
        }
        $r{body} = $body;
        $r{left} = substr $data, $pos;
    } elsif (defined $cl && $cl =~ /^\d+$/) {
        if (length $data < $cl) {
            $r{problem} = "body truncated: Content-Length $cl, got "
                . length $data;
            $r{body} = $data;
        } else {
            $r{body} = substr $data, 0, $cl;
            $r{left} = substr $data, $cl;
        }
    } else {
        $r{body} = $data;
    }
    return \%r;
}

sub _header {
    my ($r, $name) = @_;
    my @v = map { $_->[1] } grep { lc $_->[0] eq lc $name } @{ $r->{headers} };
    return undef if !@v;
    return join ', ', @v;
}

# ---------------------------------------------------------------------------
# Checks on a response.

sub _check_response {
    my ($block, $r, $idx, $multi, $rep) = @_;
    my $name = $block->name;
    my $tag = '';
    $tag .= " (req $idx)" if $multi;
    $tag .= " (repeat $rep)" if $RepeatEach > 1;

    # status
    if (defined scalar($block->error_code_like)) {
        my $pat = _pick($name, 'error_code_like', scalar($block->error_code_like),
                        $idx, $multi);
        Test::More::like($r->{code}, qr/$pat/sm, "$name - status code ok$tag");
    } else {
        my $want = defined scalar($block->error_code)
            ? _pick($name, 'error_code', scalar($block->error_code), $idx, $multi)
            : 200;
        $want =~ s/^\s+|\s+$//g if defined $want;
        Test::More::is($r->{code}, $want, "$name - status code ok$tag");
    }

    # raw headers
    if (defined scalar($block->raw_response_headers_like)) {
        my $pat = _pick($name, 'raw_response_headers_like',
                        scalar($block->raw_response_headers_like), $idx, $multi);
        Test::More::like($r->{raw_headers}, qr/$pat/s,
                         "$name - raw response headers like$tag");
    }
    if (defined scalar($block->raw_response_headers_unlike)) {
        my $pat = _pick($name, 'raw_response_headers_unlike',
                        scalar($block->raw_response_headers_unlike), $idx, $multi);
        Test::More::unlike($r->{raw_headers}, qr/$pat/s,
                           "$name - raw response headers unlike$tag");
    }

    # headers
    if (defined scalar($block->response_headers)) {
        my $spec = _pick($name, 'response_headers', scalar($block->response_headers),
                         $idx, $multi);
        for my $line (split /\n/, defined $spec ? $spec : '') {
            $line =~ s/^\s+|\s+$//g;
            next if $line eq '';
            if ($line =~ s/^!\s*//) {
                Test::More::ok(!defined _header($r, $line),
                               "$name - header $line absent$tag")
                    or Test::More::diag("but found \"$line: "
                                        . _header($r, $line) . "\"");
                next;
            }
            my ($k, $v) = split /\s*:\s*/, $line, 2;
            $v = '' if !defined $v;
            $v =~ s/\$ServerPort\b/$ServerPort/g;
            $v =~ s/\$ServerPortForClient\b/$ServerPort/g;
            my $got = _header($r, $k);
            Test::More::is(defined $got ? $got : '', $v,
                           "$name - header $k ok$tag");
        }
    } elsif (defined scalar($block->response_headers_like)) {
        my $spec = _pick($name, 'response_headers_like',
                         scalar($block->response_headers_like), $idx, $multi);
        for my $line (split /\n/, defined $spec ? $spec : '') {
            $line =~ s/^\s+|\s+$//g;
            next if $line eq '';
            my ($k, $v) = split /\s*:\s*/, $line, 2;
            $v = '' if !defined $v;
            my $got = _header($r, $k);
            Test::More::like(defined $got ? $got : '', qr/^$v$/,
                             "$name - header $k like ok$tag");
        }
    }

    # body
    my $body = $r->{body};
    if (defined scalar($block->response_body) || defined scalar($block->response_body_eval)) {
        my $want;
        if (defined scalar($block->response_body_eval)) {
            $want = eval _pick($name, 'response_body_eval',
                               scalar($block->response_body_eval), $idx, $multi);
            bail_out("$name - --- response_body_eval failed: $@") if $@;
        } else {
            $want = _pick($name, 'response_body', scalar($block->response_body),
                          $idx, $multi);
        }
        if (ref $want eq 'Regexp') {
            Test::More::like($body, $want, "$name - response_body - like$tag");
        } else {
            if (defined $want) {
                $want =~ s/\$ServerPort\b/$ServerPort/g;
                $want =~ s/\$ServerPortForClient\b/$ServerPort/g;
                $want = _expand($want, $name);
            }
            _is_str($body, $want,
                    "$name - response_body - response is expected$tag");
        }
    } elsif (defined scalar($block->response_body_like)
             || defined scalar($block->response_body_unlike))
    {
        my $like = defined scalar($block->response_body_like);
        my $which = $like ? 'response_body_like' : 'response_body_unlike';
        my $pat = _pick($name, $which, scalar($block->$which), $idx, $multi);
        $pat = '' if !defined $pat;
        $pat =~ s/\$ServerPort\b/$ServerPort/g if !ref $pat;
        (my $summary = $body) =~ s/^\s+|\s+$//g;
        $summary = substr($summary, 0, 60) . '...' if length $summary > 63;
        if ($like) {
            Test::More::like($body, qr/$pat/s,
                "$name - response_body_like - response is expected ("
                . _show($summary) . ")$tag");
        } else {
            Test::More::unlike($body, qr/$pat/s,
                "$name - response_body_unlike - response is expected ("
                . _show($summary) . ")$tag");
        }
    }

    $_->($block, $body, $idx, $rep, 0) for @BodyChecks;
}

# ---------------------------------------------------------------------------
# Log checks.

sub _patterns {
    my $spec = shift;
    return () if !defined $spec;
    return ($spec) if ref $spec eq 'Regexp';
    return @$spec if ref $spec eq 'ARRAY';
    chomp(my $s = $spec);
    return grep { length } split /\n+/, $s;
}

sub _line_matches {
    my ($line, $pat) = @_;
    return $line =~ $pat if ref $pat eq 'Regexp';
    return index($line, $pat) >= 0;
}

sub _mentions {
    my ($spec, $text) = @_;
    for my $p (_patterns($spec)) {
        next if ref $p;
        return 1 if index($p, $text) >= 0;
    }
    return 0;
}

sub _check_log {
    my ($block, $kind, $lines, $rep) = @_;
    my $name = $block->name;
    my ($has, $hasnt) = ("${kind}_log", "no_${kind}_log");
    my $file = "$kind.log";
    my $tag = " (req $rep)";

    for my $pat (_patterns(scalar($block->$has))) {
        next if !defined $pat;
        my $found = grep { _line_matches($_, $pat) } @$lines;
        Test::More::ok($found, "$name - $file has a line matching \""
                               . _show("$pat") . "\"$tag")
            or Test::More::diag("$file of this test block (" . scalar(@$lines)
                                . " lines) is in $LogDir");
    }
    for my $pat (_patterns(scalar($block->$hasnt))) {
        next if !defined $pat;
        my @hit = grep { _line_matches($_, $pat) } @$lines;
        my $ok = Test::More::ok(!@hit, "$name - $file has no line matching"
                                . " \"" . _show("$pat") . "\"$tag");
        if (!$ok) {
            chomp(my $first = $hit[0]);
            Test::More::diag("but " . scalar(@hit) . " line(s) match, e.g.: "
                             . _show($first));
        }
    }
}

sub _check_grep_error_log {
    my ($block, $lines, $rep) = @_;
    my $name = $block->name;
    my $pat = scalar($block->grep_error_log);
    my $want = scalar($block->grep_error_log_out);
    return if !defined $pat && !defined $want;
    bail_out("$name - --- grep_error_log and --- grep_error_log_out must be"
             . " used together") if !defined $pat || !defined $want;
    $pat = $pat->[$rep] if ref $pat eq 'ARRAY';
    $want = $want->[$rep] if ref $want eq 'ARRAY';
    $want = _expand($want, $name);

    my $got = '';
    for my $line (@$lines) {
        my $m;
        if (ref $pat eq 'Regexp') {
            $m = $& if $line =~ $pat;
        } elsif (index($line, $pat) >= 0) {
            $m = $pat;
        }
        $got .= "$m\n" if defined $m && $m !~ /\n/;
    }
    if (ref $want eq 'Regexp') {
        Test::More::like($got, $want, "$name - grep_error_log_out (req $rep)");
    } else {
        _is_str($got, $want, "$name - grep_error_log_out (req $rep)");
    }
}

sub _warn_serious {
    my ($block, $lines) = @_;
    my $name = $block->name;
    for my $level (qw(alert crit emerg)) {
        next if _mentions(scalar($block->error_log), "[$level")
             || _mentions(scalar($block->no_error_log), "[$level");
        for my $line (grep { /\[$level\]/ } @$lines) {
            chomp(my $l = $line);
            Test::More::diag("WARNING: $name - $l");
        }
    }
}

# Where the current block's lines start in each log (the real runner starts every block
# with fresh logs; we keep one file and remember offsets instead).
our %BlockStart;

sub _log_lines {
    my ($file, $offset) = @_;
    my $text = _slurp($file, $CheckAccumErrLog ? ($BlockStart{$file} // 0) : $offset);
    return [split /^/, $text];
}

sub _checks_logs {
    my $block = shift;
    return grep { defined scalar($block->$_) }
        qw(error_log no_error_log grep_error_log grep_error_log_out access_log no_access_log);
}

sub _check_logs {
    my ($block, $offsets, $rep) = @_;
    sleep $LogSettle;
    my $err = _log_lines($ErrLog, $offsets->{err});
    my $acc = _log_lines($AccLog, $offsets->{acc});
    $offsets->{err} = -s $ErrLog || 0;
    $offsets->{acc} = -s $AccLog || 0;
    _check_grep_error_log($block, $err, $rep);
    _check_log($block, 'error', $err, $rep);
    _check_log($block, 'access', $acc, $rep) if !defined scalar($block->ignore_response);
    _warn_serious($block, $err);
}

# ---------------------------------------------------------------------------
# Running blocks.

sub _run_requests {
    my ($block, $rep, $offsets) = @_;
    my $name = $block->name;
    my $timeout = _parse_time(scalar($block->timeout));
    $timeout = $DefaultTimeout if !defined $timeout || $timeout eq '';

    my @ex = _exchanges($block);
    my $total = 0;
    $total += $_->{count} for @ex;
    my $multi = $total > 1;

    if (defined scalar($block->curl) && $ex[0]{parsed}) {
        my @cmd = _curl_command($block, $ex[0], $timeout);
        Test::More::diag("# " . join ' ', map {
            /[^\w\/.:=@-]/ ? "'$_'" : $_ } @cmd);
    }

    my $idx = 0;
    for my $k (0 .. $#ex) {
        my $ex = $ex[$k];
        my ($data, $problem) = _use_http2($block)
            ? _send_curl($block, $ex, $timeout)
            : _send_socket($block, $ex, $timeout);
        Test::More::diag("$name - $problem") if defined $problem;

        for my $n (1 .. $ex->{count}) {
            my $head = $ex->{heads} ? $ex->{heads}[$n - 1] : $ex->{head};
            my $r = _parse_response($data, $head, _use_http2($block));
            $data = $r->{left};
            Test::More::diag("$name - response " . ($idx + 1) . ": "
                             . $r->{problem}) if defined $r->{problem};
            _check_response($block, $r, $idx, $multi, $rep)
                if !defined scalar($block->ignore_response);
            if ($idx < $total - 1) {
                sleep _parse_time(scalar($block->wait)) if scalar($block->wait);
                # Logs are checked after every request, as the real runner does, when the
                # block checks them; a block that does not is checked once, at its end, for
                # [alert]/[crit]/[emerg] lines (saves a log settle per request).
                _check_logs($block, $offsets, $rep) if _checks_logs($block);
            }
            $idx++;
        }
        if (length $data && defined $ex->{parsed}) {
            Test::More::diag("WARNING: $name - unexpected bytes after the"
                             . " response: \"" . _show(substr $data, 0, 100)
                             . "\"");
        }
    }
    sleep _parse_time(scalar($block->wait)) if scalar($block->wait);
    _check_logs($block, $offsets, $rep);
}

# --- stream_request (bytes sent to the stream server, may be empty) and
# --- stream_response / --- stream_response_like (what it answers until it
# closes, or the timeout): as Test::Nginx::Socket::Lua::Stream has them.
sub _is_stream_block {
    my $block = shift;
    return defined scalar($block->stream_request)
        || defined scalar($block->stream_response)
        || defined scalar($block->stream_response_like);
}

sub _run_stream {
    my ($block, $rep, $offsets) = @_;
    my $name = $block->name;
    my $timeout = _parse_time(scalar($block->timeout));
    $timeout = $DefaultTimeout if !defined $timeout || $timeout eq '';
    my $req = scalar($block->stream_request);
    $req = '' if !defined $req;
    my $got = '';
    my $sock = IO::Socket::INET->new(
        PeerAddr => '127.0.0.1',
        PeerPort => $ENV{TEST_NGINX_STREAM_PORT},
        Proto    => 'tcp',
        Timeout  => $timeout,
    );
    if (!$sock) {
        Test::More::diag("$name - cannot connect to the stream port"
                         . " $ENV{TEST_NGINX_STREAM_PORT}: $!");
    } else {
        $sock->autoflush(1);
        print {$sock} $req if length $req;
        my $sel = IO::Select->new($sock);
        my $deadline = time + $timeout;
        while ((my $left = $deadline - time) > 0) {
            last if !$sel->can_read($left);
            my $n = sysread $sock, my $buf, 65536;
            last if !$n;
            $got .= $buf;
        }
        close $sock;
    }
    if (defined(my $want = scalar($block->stream_response))) {
        _is_str($got, _expand($want, $name), "$name - stream response (req $rep)");
    }
    if (defined(my $like = scalar($block->stream_response_like))) {
        $like = _expand($like, $name);
        $like =~ s/\n\z//;
        Test::More::like($got, qr/$like/m, "$name - stream response like (req $rep)");
    }
    sleep _parse_time(scalar($block->wait)) if scalar($block->wait);
    _check_logs($block, $offsets, $rep);
}

sub _run_must_die {
    my ($block, $offsets, $rep) = @_;
    my $name = $block->name;
    my $want = scalar($block->must_die);
    $want =~ s/^\s+|\s+$//g;

    my $st = _start_nginx($block, 1);
    if ($st->{exited}) {
        my $code = $st->{status} >> 8;
        if ($want =~ /^\d+$/) {
            Test::More::is($code, $want, "$name - nginx exits with code $want");
        } else {
            Test::More::ok($st->{status} != 0, "$name - nginx fails to start")
                or Test::More::diag("nginx exited with status 0");
        }
    } else {
        Test::More::ok(0, "$name - nginx fails to start");
        Test::More::diag("nginx is still running after ${StartTimeout}s;"
                         . " stopping it");
        _stop_nginx();
    }

    my $err = _log_lines($ErrLog, $offsets->{err});
    my $stderr = _log_lines($StderrLog, $offsets->{stderr});
    my @all = (@$err, @$stderr);
    $offsets->{err} = -s $ErrLog || 0;
    $offsets->{stderr} = -s $StderrLog || 0;
    _check_grep_error_log($block, \@all, $rep);
    _check_log($block, 'error', \@all, $rep);
}

# --- skip_nginx: N: <op> x.y.z [: reason]   and   --- skip_eval: N: perl code
# Returns true when the block was skipped (N tests reported as skipped).
sub _maybe_skip {
    my $block = shift;
    my $name = $block->name;
    my ($count, $reason);
    if (defined(my $spec = scalar($block->skip_nginx))) {
        $spec =~ /^\s*(\d+)\s*:\s*([<>]=?)\s*(\d+)\.(\d+)\.(\d+)
                   (?:\s*:\s*(.*?))?\s*$/x
            or bail_out("$name - bad --- skip_nginx value \"$spec\"");
        my ($n, $op, $v) = ($1, $2, $3 * 1000000 + $4 * 1000 + $5);
        my $why = $6 || "nginx version $op $3.$4.$5";
        my $hit = $op eq '<'  ? $NginxVer < $v
                : $op eq '<=' ? $NginxVer <= $v
                : $op eq '>'  ? $NginxVer > $v
                :               $NginxVer >= $v;
        ($count, $reason) = ($n, $why) if $hit;
    }
    if (!defined $count && defined(my $spec = scalar($block->skip_eval))) {
        $spec =~ /^\s*(\d+)\s*:\s*(.*)$/s
            or bail_out("$name - bad --- skip_eval value \"$spec\"");
        my ($n, $code) = ($1, $2);
        my $hit = eval "package main; no strict; $code";
        bail_out("$name - --- skip_eval code failed: $@") if $@;
        ($count, $reason) = ($n, 'skip_eval') if $hit;
    }
    return 0 if !defined $count;
    _tb()->skip("$name - $reason") for 1 .. $count * $RepeatEach;
    return 1;
}

sub _run_block {
    my $block = shift;
    my $name = $block->name;
    my $fails = _failures();
    return if _maybe_skip($block);

    _reset_html();
    _write_user_files($block);
    _spew($ConfFile, _config_text($block));

    my %off = (
        err => -s $ErrLog || 0,
        acc => -s $AccLog || 0,
        stderr => -s $StderrLog || 0,
    );
    %BlockStart = ($ErrLog => $off{err}, $AccLog => $off{acc}, $StderrLog => $off{stderr});

    if (defined scalar($block->must_die)) {
        _run_must_die($block, \%off, $_) for 0 .. $RepeatEach - 1;
    } else {
        my $st = _start_nginx($block, 0);
        if (!$st->{ok}) {
            my $why = $st->{exited}
                ? "nginx exited with status " . ($st->{status} >> 8)
                : "nginx did not write its pid file within ${StartTimeout}s";
            my $stderr = _slurp($StderrLog, $off{stderr});
            my $errlog = _slurp($ErrLog, $off{err});
            Test::More::ok(0, "$name - nginx starts");
            Test::More::diag("$why\nstderr:\n$stderr\nerror.log:\n$errlog"
                             . "config: $ConfFile");
        } else {
            if (defined(my $code = scalar($block->init))) {
                my $ok = eval "package main; no strict; $code; 1";
                bail_out("$name - --- init failed: $@") if !$ok;
            }
            for my $rep (0 .. $RepeatEach - 1) {
                if (_is_stream_block($block)) {
                    _run_stream($block, $rep, \%off);
                } else {
                    _run_requests($block, $rep, \%off);
                }
            }
            _stop_nginx();
        }
    }

    if (_failures() > $fails) {
        Test::More::diag("$name - failed; nginx.conf, logs and html are kept"
                         . " in $ServRoot (error log: $ErrLog, from byte"
                         . " $off{err})");
    }
}

sub run_tests {
    _nginx_info();
    my @blocks = Test::Base::blocks();
    @blocks = shuffle @blocks if !$NoShuffle;
    for my $block (@blocks) {
        $_->($block) for @Preprocessors;
        $block->set_value(name => "$0 " . $block->name);
        _run_block($block);
        $_->($block) for @TestCleanupHandlers;
    }
    _stop_nginx();
    $_->() for @CleanupHandlers;
    $Finished = 1;
}

END {
    # Tidy up after a fully passing run; keep everything otherwise.
    if ($Finished && !$ENV{TEST_NGINX_NO_CLEAN} && _tb()->is_passing
        && _failures() == 0 && $ServRoot && -d $ServRoot)
    {
        remove_tree($ServRoot);
    }
}

1;
