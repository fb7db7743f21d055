package Test::LB::Server;

# A small driver for tests the Test::Nginx block format cannot express: one nginx (master +
# workers, built by scripts/build.sh) whose configuration a test rewrites and reloads, sends
# SIGKILL to, and queries while it runs.
#
#   my $s = Test::LB::Server->new(name => 'reload', workers => 2);
#   $s->start($conf_text);          # "__PORT1__" .. "__PORT9__" are replaced by free ports
#   my ($status, $body) = $s->get('/t');
#   $s->reload($new_conf_text);
#   $s->stop;
#
# new(stream => $text) adds a stream {} block after http {} (ports and __DIR__ replaced as
# above), loading $ENV{TEST_NGINX_STREAM_MODULE} first where stream is a module of its own;
# set_stream($text) changes it for the next start or reload.
#
# Copyright (c) the ngx_http_lb_module authors. MIT licensed.

use strict;
use warnings;

use Cwd qw(abs_path);
use File::Basename qw(dirname);
use File::Path qw(make_path remove_tree);
use IO::Socket::INET;
use JSON::PP ();
use POSIX ();
use Time::HiRes qw(sleep time);

my $Root = abs_path(dirname(__FILE__) . '/../../../..');

# Every wait of wait_for and wait_state is this many times longer (scripts/memcheck.sh runs
# nginx under valgrind, which is slower).
my $Factor = $ENV{TEST_NGINX_TIMEOUT_FACTOR} || 1;

sub new {
    my ($class, %args) = @_;
    my $self = bless {
        name    => $args{name} || 'server',
        workers => $args{workers} || 2,
        worker_connections => $args{worker_connections} || 512,
        binary  => $ENV{TEST_NGINX_BINARY} || "$Root/build/sbin/nginx",
        module  => $ENV{TEST_NGINX_LB_MODULE} || "$Root/build/modules/ngx_http_lb_module.so",
        stream  => $args{stream},
    }, $class;
    -x $self->{binary} or die "no nginx at $self->{binary}: run scripts/build.sh first\n";
    -f $self->{module} or die "no module at $self->{module}: run scripts/build.sh first\n";
    $self->{dir} = "$Root/t/servroot_$self->{name}_$$";
    remove_tree($self->{dir});
    make_path(map { "$self->{dir}/$_" } qw(conf logs html));
    $self->{ports} = [ map { free_port() } 1 .. 9 ];
    return $self;
}

sub dir  { $_[0]{dir} }

# Replaces the stream {} block's text for the next start or reload (undef: no stream block).
sub set_stream { $_[0]{stream} = $_[1] }
sub port { $_[0]{ports}[ $_[1] - 1 ] }

sub free_port {
    for (1 .. 200) {
        my $p = 10000 + int(rand(40000));
        my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $p,
                                      Proto => 'tcp', ReuseAddr => 1, Listen => 1)
            or next;
        close $s;
        return $p;
    }
    die "no free port\n";
}

sub _write_conf {
    my ($self, $conf) = @_;
    my ($stream, $load) = ('', '');
    if (defined $self->{stream}) {
        $stream = "stream {\n$self->{stream}\n}\n";
        $load = "load_module $ENV{TEST_NGINX_STREAM_MODULE};\n" if $ENV{TEST_NGINX_STREAM_MODULE};
    }
    for ($conf, $stream) {
        s/__PORT(\d)__/$self->{ports}[$1 - 1]/g;
        s/__DIR__/$self->{dir}/g;
    }
    my $text = <<"CONF";
${load}load_module $self->{module};
worker_processes $self->{workers};
daemon on;
master_process on;
pid logs/nginx.pid;
error_log logs/error.log info;
events { worker_connections $self->{worker_connections}; }
http {
    access_log logs/access.log;
$conf
}
$stream
CONF
    open my $fh, '>', "$self->{dir}/conf/nginx.conf" or die $!;
    print $fh $text;
    close $fh;
}

sub _nginx {
    my ($self, @args) = @_;
    my $out = `$self->{binary} -p $self->{dir}/ -c conf/nginx.conf @args 2>&1`;
    return ($? == 0, $out);
}

sub start {
    my ($self, $conf) = @_;
    $self->_write_conf($conf);
    my ($ok, $out) = $self->_nginx();
    die "nginx did not start: $out\n" unless $ok;
    $self->{startup} = $out;
    $self->wait_for(sub { -s "$self->{dir}/logs/nginx.pid" }, 5, 'pid file');
    $self->{started} = 1;
    sleep 0.3;
}

sub master_pid {
    my ($self) = @_;
    open my $fh, '<', "$self->{dir}/logs/nginx.pid" or return;
    my $pid = <$fh>;
    chomp $pid;
    return $pid;
}

# Worker pids (children of the master that are not shutting down).
sub worker_pids {
    my ($self) = @_;
    my $master = $self->master_pid or return ();
    my @pids;
    for my $stat (glob '/proc/[0-9]*/stat') {
        open my $fh, '<', $stat or next;
        my $line = <$fh>;
        next unless $line && $line =~ /^(\d+) \((.*)\) \S+ (\d+)/;
        my ($pid, $ppid) = ($1, $3);
        next unless $ppid == $master;
        open my $cmd, '<', "/proc/$pid/cmdline" or next;
        my $c = <$cmd> // '';
        # Under valgrind (scripts/memcheck.sh) /proc shows valgrind's command line, not nginx's
        # process title: every child of the master counts (old workers are told apart by pid).
        if ($c =~ m{^\S*valgrind}) { push @pids, $pid; next }
        push @pids, $pid if $c =~ /worker process/ && $c !~ /shutting down/;
    }
    return sort { $a <=> $b } @pids;
}

# Rewrites the configuration and reloads; returns once the new workers run and the old ones
# have exited (until then an old worker may still accept a connection). Old workers that do not
# exit within 10 s fail the wait: that is a bug (a timer or connection keeping them).
sub reload {
    my ($self, $conf) = @_;
    my @old = $self->worker_pids;
    $self->_write_conf($conf) if defined $conf;
    kill 'HUP', $self->master_pid;
    $self->wait_for(sub {
        my %old = map { $_ => 1 } @old;
        my @new = grep { !$old{$_} } $self->worker_pids;
        @new >= $self->{workers} && !grep { kill(0, $_) } @old;
    }, 10, 'new workers after reload, old ones gone');
}

sub stop {
    my ($self) = @_;
    return unless $self->{started};
    my $pid = $self->master_pid;
    kill 'QUIT', $pid if $pid;
    $self->wait_for(sub { !kill(0, $pid) }, 5, 'nginx to exit') if $pid;
    $self->{started} = 0;
}

sub DESTROY {
    my ($self) = @_;
    if ($self->{started}) {
        my $pid = $self->master_pid;
        kill 'TERM', $pid if $pid;
    }
}

sub wait_for {
    my ($self, $cond, $seconds, $what) = @_;
    $seconds *= $Factor;
    my $until = time + $seconds;
    while (time < $until) {
        return 1 if $cond->();
        sleep 0.05;
    }
    die "timed out after ${seconds}s waiting for $what\n";
}

# One HTTP/1.0 request; returns (status, body, headers-text).
sub get {
    my ($self, $path, $port) = @_;
    $port ||= $self->port(1);
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
                                  Proto => 'tcp', Timeout => 5)
        or return (0, "connect failed: $!", '');
    print $s "GET $path HTTP/1.0\r\nHost: localhost\r\n\r\n";
    local $/;
    my $resp = <$s> // '';
    close $s;
    my ($head, $body) = split /\r\n\r\n/, $resp, 2;
    my ($status) = ($head // '') =~ m{^HTTP/1\.\d (\d+)};
    return ($status || 0, $body // '', $head // '');
}

# Any request: ($method, $path, $body) over HTTP/1.0; returns (status, body, headers-text).
sub request {
    my ($self, $method, $path, $body, $port) = @_;
    $port ||= $self->port(1);
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
                                  Proto => 'tcp', Timeout => 5)
        or return (0, "connect failed: $!", '');
    $body //= '';
    print $s "$method $path HTTP/1.0\r\nHost: localhost\r\nContent-Length: "
        . length($body) . "\r\nContent-Type: application/json\r\n\r\n$body";
    local $/;
    my $resp = <$s> // '';
    close $s;
    my ($head, $rest) = split /\r\n\r\n/, $resp, 2;
    my ($status) = ($head // '') =~ m{^HTTP/1\.\d (\d+)};
    return ($status || 0, $rest // '', $head // '');
}

# A request whose answer is JSON: (status, decoded body or undef, body text, headers-text).
sub json_request {
    my ($self, $method, $path, $body) = @_;
    my ($code, $text, $head) = $self->request($method, $path, $body);
    my $json = eval { JSON::PP::decode_json($text) };
    return ($code, $json, $text, $head);
}

# The status page as a Perl structure (from `location /status { lb_status; }`).
sub status {
    my ($self, $query) = @_;
    my ($code, $body) = $self->get('/status' . ($query // ''));
    die "status answered $code: $body\n" unless $code == 200;
    return JSON::PP::decode_json($body);
}

# { address => peer } for upstream $name.
sub peers {
    my ($self, $name) = @_;
    my $st = $self->status;
    my ($u) = grep { $_->{name} eq $name } @{ $st->{upstreams} };
    die "no upstream $name in status\n" unless $u;
    return { map { $_->{address} => $_ } @{ $u->{peers} } };
}

# Sends $n requests for / and counts the answers: { body => count, "status N" => count }.
sub bodies {
    my ($self, $n) = @_;
    my %seen;
    for (1 .. $n) {
        my ($code, $body) = $self->get('/');
        $seen{$code == 200 ? $body : "status $code"}++;
    }
    return \%seen;
}

# Waits up to $seconds for peer $addr of upstream $name to show $state on the status page.
sub wait_state {
    my ($self, $name, $addr, $state, $seconds) = @_;
    $seconds *= $Factor;
    my $until = time + $seconds;
    my $got = '';
    while (time < $until) {
        $got = $self->peers($name)->{$addr}{state} // 'absent';
        return 1 if $got eq $state;
        sleep 0.05;
    }
    Test::More::diag("peer $addr is $got, not $state, after ${seconds}s");
    return 0;
}

# What nginx wrote on stderr at the last start: where nginx's built-in error log is stderr
# (Debian's: --error-log-path=stderr), the lines it logs before it opens the configuration's
# error_log (the module's start-up notices among them).
sub startup_output { $_[0]{startup} // '' }

sub error_log {
    my ($self) = @_;
    return $self->slurp('logs/error.log') // '';
}

# The error log from byte $from on (a length of error_log taken earlier).
sub log_since {
    my ($self, $from) = @_;
    return substr($self->error_log, $from);
}

# Waits up to $seconds for the error log from byte $from to match $re; true if it did.
sub wait_log {
    my ($self, $from, $re, $seconds) = @_;
    my $until = time + $seconds;
    while (time < $until) {
        return 1 if $self->log_since($from) =~ $re;
        sleep 0.05;
    }
    return 0;
}

# Writes $conf (the http {} block's text, the stream block as set), checks it with nginx -t
# (a passing test named "$name: ..."; dies if refused), then reloads.
sub checked_reload {
    my ($self, $name, $conf) = @_;
    $self->_write_conf($conf);
    my ($ok, $out) = $self->_nginx('-t');
    Test::More::ok($ok, "$name: nginx -t accepts the configuration") or Test::More::diag($out);
    die "configuration refused\n" unless $ok;
    $self->reload;
}

# Starts $n GET requests for $path in the background (forked children) and returns a function
# that waits for them and gives one "STATUS BODY_LENGTH SECONDS" line per request: for requests
# that must stay in flight while a test changes something.
sub in_background {
    my ($self, $n, $path) = @_;
    my @kids;
    for my $k (1 .. $n) {
        my $pid = fork // die "fork: $!";
        if (!$pid) {
            my $t0 = time;
            my ($code, $body) = $self->get($path);
            open(my $out, '>', "$self->{dir}/background.$k") or POSIX::_exit(1);
            printf $out "%s %d %.1f\n", $code, length($body // ''), time - $t0;
            close $out;
            POSIX::_exit(0);
        }
        push @kids, $pid;
    }
    return sub {
        waitpid($_, 0) for @kids;
        my @lines = map { $self->slurp("background.$_") // "none\n" } 1 .. $n;
        chomp @lines;
        return @lines;
    };
}

# A file of the server directory (path relative to it), or undef.
sub slurp {
    my ($self, $path) = @_;
    open my $fh, '<', "$self->{dir}/$path" or return undef;
    local $/;
    return <$fh>;
}

sub cleanup {
    my ($self) = @_;
    $self->stop;
    remove_tree($self->{dir});
}

1;
