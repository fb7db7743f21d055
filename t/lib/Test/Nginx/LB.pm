package Test::Nginx::LB;

# Entry point of this project's nginx tests:
#
#     use lib 't/lib';
#     use Test::Nginx::LB;            # or: use Test::Nginx::LB 'no_plan';
#     plan tests => repeat_each() * blocks() * 2;
#     run_tests();
#     __DATA__
#     === TEST 1: ...
#
# It picks a test engine and hands its API (run_tests, blocks, plan, ...)
# to the calling .t file:
#   * the real Test::Nginx::Socket (openresty's test-nginx) when it can be
#     loaded from @INC, or
#   * our own Test::Nginx::LB::Runner otherwise.
# $ENV{TEST_NGINX_LB_RUNNER} = 'own' | 'real' forces one of them.
#
# Either way every test block gets
#     load_module <repo>/build/modules/ngx_http_lb_module.so;
# in front of its main_config (override the path with
# $ENV{TEST_NGINX_LB_MODULE}), and $ENV{TEST_NGINX_BINARY} defaults to
# <repo>/build/sbin/nginx.
#
# Copyright (c) the ngx_http_lb_module authors. MIT licensed.

use strict;
use warnings;

use Cwd qw(abs_path);
use File::Basename qw(dirname);
use File::Spec ();
use Test::More ();

our $VERSION = '0.1';

my $LibDir   = abs_path(File::Spec->catdir(dirname(__FILE__), '..', '..'));
my $RepoRoot = abs_path(File::Spec->catdir($LibDir, '..', '..'));

our $Engine;        # package name of the engine in use
our $ModulePath;    # the .so given to load_module

sub engine { $Engine }

sub _same_dir {
    my ($a, $b) = @_;
    return 0 if ref $a || !defined $a;
    my $x = abs_path($a);
    return defined $x && $x eq $b;
}

sub _load_real {
    # Never pick up anything from our own t/lib for the real engine.
    local @INC = grep { !_same_dir($_, $LibDir) } @INC;
    return eval { require Test::Nginx::Socket; 1 } ? undef : ($@ || 'unknown error');
}

sub _choose_engine {
    my $want = $ENV{TEST_NGINX_LB_RUNNER} || 'auto';
    if ($want eq 'own') {
        return 'own';
    }
    if ($want eq 'real') {
        my $err = _load_real();
        die "TEST_NGINX_LB_RUNNER=real but Test::Nginx::Socket cannot be"
            . " loaded: $err\n" if defined $err;
        return 'real';
    }
    if ($want ne 'auto') {
        die "TEST_NGINX_LB_RUNNER must be 'own', 'real' or unset, not"
            . " '$want'\n";
    }
    my $found = grep {
        !ref $_ && !_same_dir($_, $LibDir) && -f "$_/Test/Nginx/Socket.pm"
    } @INC;
    return 'own' if !$found;
    my $err = _load_real();
    return 'real' if !defined $err;
    warn "# Test::Nginx::Socket is installed but does not load ($err);"
        . " using Test::Nginx::LB::Runner instead\n";
    return 'own';
}

sub _check_artifacts {
    $ModulePath = $ENV{TEST_NGINX_LB_MODULE}
        || "$RepoRoot/build/modules/ngx_http_lb_module.so";
    $ENV{TEST_NGINX_BINARY} ||= "$RepoRoot/build/sbin/nginx";
    my @missing;
    push @missing, "module $ModulePath (set TEST_NGINX_LB_MODULE to override)"
        if !-f $ModulePath;
    push @missing, "nginx binary $ENV{TEST_NGINX_BINARY} (set"
        . " TEST_NGINX_BINARY to override)" if !-x $ENV{TEST_NGINX_BINARY};
    die "Test::Nginx::LB: missing " . join(' and ', @missing)
        . " -- run scripts/build.sh first\n" if @missing;
}

sub _load_module_preprocessor {
    my $block = shift;
    my $main = $block->main_config;
    $main = '' if !defined $main;
    my $stream = _stream_block($block);
    $block->set_value(main_config => "load_module $ModulePath;\n$main$stream");
}

# --- stream_config and --- stream_server_config (as Test::Nginx::Socket::Lua::Stream
# reads them): a stream {} block after main_config, its server listening on
# $TEST_NGINX_STREAM_PORT (ours reserves one; with the real engine, the server port + 1 as
# Lua::Stream does).  Debian's nginx has stream as a dynamic module: set
# TEST_NGINX_STREAM_MODULE to its .so and it is loaded first.
sub _stream_block {
    my $block = shift;
    my $conf = $block->stream_config;
    my $server = $block->stream_server_config;
    return '' if !defined $conf && !defined $server;
    $ENV{TEST_NGINX_STREAM_PORT} ||= do {
        no warnings 'once';
        ($Test::Nginx::Util::ServerPort || 1984) + 1;
    };
    $conf = '' if !defined $conf;
    my $srv = defined $server ? <<"_SRV_" : '';
    server {
        listen \$TEST_NGINX_STREAM_PORT;
$server
    }
_SRV_
    return "\nstream {\n$conf\n$srv}\n";
}

# Only blocks with a stream {} block load it: the others check that our module loads into an
# nginx without stream.
sub _stream_module_preprocessor {
    my $block = shift;
    my $so = $ENV{TEST_NGINX_STREAM_MODULE} or return;
    return if !defined $block->stream_config && !defined $block->stream_server_config;
    my $main = $block->main_config;
    $main = '' if !defined $main;
    $block->set_value(main_config => "load_module $so;\n$main");
}

# Test::Base runs its own checks at END unless a plan was declared through
# Test::Builder::plan, which done_testing alone does not do; declaring
# 'no_plan' first keeps both happy.
sub done_testing {
    my $tb = Test::More->builder;
    $tb->plan('no_plan') if !$tb->has_plan;
    return Test::More::done_testing(@_);
}

sub import {
    my ($class, @args) = @_;
    my $caller = caller;

    _check_artifacts();

    # For the real engine: a random port and a per-port server root keep
    # parallel runs (prove -j) apart.  It reads these when it loads, so they
    # are set before we try to load it; our own runner ignores them.
    my $randomized;
    if (!defined $ENV{TEST_NGINX_RANDOMIZE} && !$ENV{TEST_NGINX_SERVER_PORT}
        && !$ENV{TEST_NGINX_SERVROOT})
    {
        $ENV{TEST_NGINX_RANDOMIZE} = 1;
        $randomized = 1;
    }
    my $kind = _choose_engine();

    if ($kind eq 'real') {
        _load_real() and die "Test::Nginx::Socket failed to load\n";
        $Engine = 'Test::Nginx::Socket';
    } else {
        delete $ENV{TEST_NGINX_RANDOMIZE} if $randomized;
        require Test::Nginx::LB::Runner;
        $Engine = 'Test::Nginx::LB::Runner';
    }

    # Both engines are Test::Base subclasses: their import exports the API
    # into $caller and passes 'no_plan' / tests => N on to Test::More.
    $Engine->import(-package => $caller, @args);

    {
        no strict 'refs';
        *{"${caller}::done_testing"} = \&done_testing
            if !defined &{"${caller}::done_testing"};
        for my $f (qw(is_deeply diag pass fail ok like is)) {
            next if defined &{"${caller}::$f"};
            *{"${caller}::$f"} = \&{"Test::More::$f"};
        }
    }

    my $add = $Engine->can('add_block_preprocessor')
        or die "$Engine has no add_block_preprocessor\n";
    $add->(\&_load_module_preprocessor);
    $add->(\&_stream_module_preprocessor);
}

1;
__END__

=head1 NAME

Test::Nginx::LB - run this project's Test::Nginx-style .t files

=head1 SYNOPSIS

    prove -r t/                                   # our runner (default)
    TEST_NGINX_BINARY=/usr/sbin/nginx \
    TEST_NGINX_LB_MODULE=/path/to/ngx_http_lb_module.so prove t/x.t
    TEST_NGINX_LB_RUNNER=real PERL5LIB=/path/to/test-nginx/lib prove t/x.t

=head1 WRITING TESTS THAT RUN UNDER BOTH ENGINES

Stick to what both engines do the same way:

=over

=item * Always give a C<--- config> section (the real engine reuses the
previous nginx when it is missing; ours uses an empty one).

=item * Use C<$TEST_NGINX_*> variables in the config, http_config,
main_config, user_files and response_body sections.  The real engine does
not expand them in C<--- request>, C<--- response_headers>, C<_like>
sections or log patterns (C<$ServerPort> works in response_headers).
C<TEST_NGINX_RAND_PORT_N> are plain environment variables only here; the
real engine draws them per block while expanding text.

=item * C<--- curl_protocol> and C<--- curl_options> only matter together
with C<--- http2> (curl is only used then).  Give C<curl_options> a single
option: the real engine passes the whole value as one argument.

=item * With several requests in one block (C<request eval> arrays,
C<pipelined_requests>), expected values are arrays, and C<error_log> /
C<no_error_log> are checked after every request against the log lines of
that request.

=item * C<--- http2> with the real engine needs nginx 1.25.1 or newer (it
writes C<http2 on;>); use C<--- skip_nginx: N: E<lt> 1.25.1> when older
binaries must pass too.

=item * For TLS on the main server add
C<listen 127.0.0.1:$TEST_NGINX_SERVER_PORT ssl;> to C<--- config>: both
engines listen on C<*:port> there, so the more specific address wins.

=item * Use C<plan tests =E<gt> ...>, C<'no_plan'>, or C<done_testing()>
(exported by this module for both engines).

=back

=cut
