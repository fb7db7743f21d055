package Test::LB::Misbehave;

# Starts t/misbehave.py (misbehaving TCP/HTTP/TLS peers) for a .t file:
#
#     use lib 't/lib';
#     use Test::LB::Misbehave qw(start_misbehave);
#     BEGIN { start_misbehave(HANG => 'hang', FLIP => 'flip:2') }
#
# Each NAME => 'mode[:arg]' pair gets a free 127.0.0.1 port (the kernel picks it, the script
# reports it back), published as $ENV{TEST_NGINX_NAME_PORT} so that both test engines expand
# $TEST_NGINX_NAME_PORT in config text; the ports are also returned as NAME => port.
#
# 'mode[:arg]@DELAY' starts listening only DELAY seconds later (a peer that comes to life); its
# port must have been reserved before the config was written, with reserve_port('NAME') (which
# sets $ENV{TEST_NGINX_NAME_PORT}), e.g. in BEGIN, and the start is then done in a block's
# `--- init` (which both engines run right after nginx has started):
#
#     BEGIN { reserve_port('LATE') }
#     ...
#     --- init
#     Test::LB::Misbehave::start_misbehave(LATE => 'ok@1.5');
#
# signal_nginx_later($signal, $seconds) (from `--- init` too) sends a signal to the nginx master
# (pid from $ENV{TEST_NGINX_SERVER_ROOT}/logs/nginx.pid) from a forked child, while the test
# goes on sending requests: e.g. a reload (HUP) in the middle of a block.
#
# The script's stdin is a pipe from this process: it exits when we exit (even on a crash),
# and END closes the pipe and kills it anyway. It also gives up by itself after --ttl seconds.
#
# Copyright (c) the ngx_http_lb_module authors. MIT licensed.

use strict;
use warnings;

use Cwd qw(abs_path);
use Exporter 'import';
use File::Basename qw(dirname);
use File::Spec ();
use IO::Socket::INET ();
use POSIX qw(:sys_wait_h);
use Test::LB::Child ();

our @EXPORT_OK = qw(start_misbehave stop_misbehave misbehave_script reserve_port free_port
                    signal_nginx_later);
our @EXPORT = qw(start_misbehave);

my $Script = abs_path(File::Spec->catfile(dirname(__FILE__), '..', '..', '..', 'misbehave.py'));
my @Children;    # [pid, stdin writer]

sub misbehave_script { $Script }

sub start_misbehave {
    my @pairs = @_;
    die "start_misbehave: NAME => 'mode[:arg]' pairs expected\n" if !@pairs || @pairs % 2;
    my (@names, @args);
    while (my ($name, $spec) = splice @pairs, 0, 2) {
        die "start_misbehave: bad name '$name'\n" if $name !~ /^[A-Z][A-Z0-9_]*$/;
        my ($what, $delay) = split /@/, $spec, 2;
        my ($mode, $arg) = split /:/, $what, 2;
        my $port = 0;
        if (defined $delay) {
            $port = $ENV{"TEST_NGINX_${name}_PORT"}
                or die "start_misbehave: '$spec' needs reserve_port('$name') first\n";
        }
        push @names, $name;
        push @args, "$mode=$port" . (defined $arg ? ":$arg" : '')
            . (defined $delay ? "\@$delay" : '');
    }
    my $ttl = $ENV{TEST_LB_MISBEHAVE_TTL} || 900;

    # "mode=port" lines, then "ready".
    my ($pid, $stdin, $buf) = Test::LB::Child::spawn_ready(
        'start_misbehave: t/misbehave.py', $Script, '--ttl', $ttl, @args);
    push @Children, [$pid, $stdin];
    my @ports;
    @ports = $buf =~ /^\w+=(\d+)$/mg;
    die "start_misbehave: expected " . @names . " ports, got '$buf'\n" if @ports != @names;

    my %port;
    for my $i (0 .. $#names) {
        $port{$names[$i]} = $ports[$i];
        $ENV{"TEST_NGINX_$names[$i]_PORT"} = $ports[$i];
    }
    return wantarray ? %port : \%port;
}

# A port nothing listens on right now (the kernel's choice), as $ENV{TEST_NGINX_NAME_PORT}.
sub reserve_port {
    my $name = shift;
    die "reserve_port: bad name\n" if !defined $name || $name !~ /^[A-Z][A-Z0-9_]*$/;
    my $port = free_port();
    $ENV{"TEST_NGINX_${name}_PORT"} = $port;
    return $port;
}

sub free_port {
    my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Proto => 'tcp',
                                  Listen => 1, ReuseAddr => 1)
        or die "free_port: $!\n";
    my $port = $s->sockport;
    close $s;
    return $port;
}

# Sends $signal to the nginx master $seconds from now, from a forked child.
sub signal_nginx_later {
    my ($signal, $seconds) = @_;
    my $root = $ENV{TEST_NGINX_SERVER_ROOT}
        or die "signal_nginx_later: TEST_NGINX_SERVER_ROOT is not set\n";
    my $pidfile = "$root/logs/nginx.pid";
    my $pid = fork;
    die "signal_nginx_later: fork: $!\n" if !defined $pid;
    if ($pid == 0) {
        select undef, undef, undef, $seconds;
        if (open my $fh, '<', $pidfile) {
            my $master = <$fh>;
            kill $signal, $1 if defined $master && $master =~ /^\s*(\d+)/;
        }
        POSIX::_exit(0);    # no END blocks: they belong to the test process
    }
    push @Children, [$pid, undef];
    return $pid;
}

sub stop_misbehave {
    while (my $c = pop @Children) {
        my ($pid, $w) = @$c;
        close $w if $w;
        kill 'TERM', $pid;
        for (1 .. 100) {
            last if waitpid($pid, WNOHANG) != 0;
            select undef, undef, undef, 0.02;
        }
        if (kill 0, $pid) {
            kill 'KILL', $pid;
            waitpid $pid, 0;
        }
    }
}

END {
    my $status = $?;
    stop_misbehave();
    $? = $status;
}

1;
