package Test::LB::Parity;

# Differential tests: every block of a .t file runs twice, once with nginx's own round-robin
# balancer ("stock": a plain `upstream {}` block) and once with `lb_upstream;` as the first
# line of the same upstream, and both runs assert the same thing: what stock nginx does.
#
#     use lib 't/lib';
#     use Test::Nginx::LB 'no_plan';
#     use Test::LB::Parity;
#     use_parity();                    # after `use Test::Nginx::LB`, before run_tests()
#     run_tests();
#     __DATA__
#     === TEST 1: ...
#     --- http_config
#         upstream backend {
#             $TEST_NGINX_LB
#             server ...;
#         }
#
# use_parity() reads the template after __DATA__ and hands the engine (ours or the real
# Test::Nginx::Socket: both are Test::Base subclasses) a spec with every block twice, all
# stock blocks first: `=== TEST 1 [stock]: ...`, then `=== TEST 1 [lb_upstream]: ...`.
# $TEST_NGINX_LB is replaced here (not by the engine) with "" or "lb_upstream;".
# TEST_PARITY_MODE=stock or =lb_upstream runs one mode only.
#
# Where the two modes must differ (an intended difference, or the wording of a log line),
# a section can be given per mode: `--- error_log@stock` and `--- error_log@lb` become
# `--- error_log` in that mode's copy only.
#
# Sections this module adds to every block:
#   --- log_count        checked once, after the block's LAST request (both engines check
#                        error_log / no_error_log after every request), against the block's
#                        whole error log. One line per count:
#                            2 connect() failed            exactly 2 lines contain the text
#                            1-2 connect() failed          between 1 and 2
#   locations added to --- config (all answer 200):
#     /up, /up_NAME   create html/up, html/up_NAME (proxy_store): a backend checks it with
#                     `root html; if (-f $document_root/up) {...}` to come back to life in
#                     the middle of a block (no DAV module needed, workers may be `nobody`
#                     only if html is traversable: both engines run them as root when root)
#     /sleep          answers "z"; the k-th /sleep of a block ends about k/2 s after the
#                     first (limit_req at 2r/s; proxied to /paced on our own port so that
#                     limit_req sees a main request each time)
#     /e502           `error_page 502 /e502;` in a block's location makes a 502 that nginx
#                     itself produces answer "E502" (status stays 502), so that it is told
#                     apart from a backend's own 502 page
#
# Copyright (c) the ngx_http_lb_module authors. MIT licensed.

use strict;
use warnings;

use Exporter 'import';
use Test::More ();
use Time::HiRes qw(sleep);

our @EXPORT = qw(use_parity parity_spec);

our @Modes = (
    # [name in block titles, short name for --- section@mode, the upstream's first line]
    ['stock',       'stock', ''],
    ['lb_upstream', 'lb',    'lb_upstream;'],
);

sub parity_spec {
    my ($template) = @_;
    my ($head, @blocks) = split /^(?==== )/m, $template;
    die "Test::LB::Parity: no blocks after __DATA__\n" if !@blocks;
    my $only = $ENV{TEST_PARITY_MODE};
    my $out = '';
    for my $m (@Modes) {
        my ($mode, $short, $directive) = @$m;
        next if $only && $only ne $mode && $only ne $short;
        for my $b (@blocks) {
            my $t = $b;
            $t =~ s/^=== (TEST \d+):/=== $1 [$mode]:/
                or die "Test::LB::Parity: block title must be '=== TEST N: ...': "
                       . (split /\n/, $t)[0] . "\n";
            $t =~ s/\$TEST_NGINX_LB\b/$directive/g;
            my @keep;
            for my $part (split /^(?=--- )/m, $t) {
                if ($part =~ /^--- (\w+)\@(\w+)/) {
                    my ($section, $which) = ($1, $2);
                    die "Test::LB::Parity: unknown mode in '--- $section\@$which'\n"
                        if !grep { $_->[1] eq $which } @Modes;
                    next if $which ne $short;
                    $part =~ s/^--- \w+\@\w+/--- $section/;
                }
                push @keep, $part;
            }
            $out .= join '', @keep;
        }
    }
    return $out;
}

sub _section {
    my ($block, $name) = @_;
    return undef if !$block->can($name);
    return scalar $block->$name;
}

sub _preprocess {
    my $block = shift;
    my $http = $block->http_config // '';
    $block->set_value(http_config =>
        "    limit_req_zone \$server_port zone=parity_pace:1m rate=2r/s;\n" . $http);
    my $config = $block->config // '';
    $block->set_value(config => $config . <<'EOC');
    location ^~ /up {
        root html;
        proxy_store on;
        proxy_pass http://127.0.0.1:$TEST_NGINX_SERVER_PORT/parity_flag;
    }
    location ^~ /parity_flag { return 200 "x"; }
    location = /sleep { proxy_pass http://127.0.0.1:$TEST_NGINX_SERVER_PORT/parity_paced; }
    location = /parity_paced {
        limit_req zone=parity_pace burst=100;
        try_files /nonexistent @parity_slept;
    }
    location @parity_slept { return 200 "z"; }
    location = /e502 { internal; return 200 "E502"; }
EOC
}

# The lines of the current block's error log, with either engine.
sub _error_log_lines {
    my ($file, $start);
    if (Test::Nginx::LB::engine() eq 'Test::Nginx::Socket') {
        no warnings 'once';
        $file = $Test::Nginx::Util::ErrLogFile;    # a fresh file for every block
        $start = 0;
    } else {
        no warnings 'once';
        $file = $Test::Nginx::LB::Runner::ErrLog;
        $start = $Test::Nginx::LB::Runner::BlockStart{$file} // 0;
    }
    open my $fh, '<', $file or return [];
    seek $fh, $start, 0;
    my @lines = <$fh>;
    close $fh;
    return \@lines;
}

sub _log_count_check {
    my ($block, $body, $req_idx, $repeated_req_idx, $dry_run) = @_;
    my $spec = _section($block, 'log_count');
    return if !defined $spec || $dry_run;
    my $req = $block->request;
    my $n = ref $req eq 'ARRAY' ? scalar @$req : 1;
    return if $req_idx != $n - 1;
    sleep 0.15;    # let the log phase of the last request finish
    my $lines = _error_log_lines();
    my $name = $block->name;
    for my $line (split /\n/, $spec) {
        next if $line !~ /\S/;
        my ($min, $max, $pat) = $line =~ /^\s*(\d+)(?:-(\d+))?\s+(.*?)\s*$/
            or die "$name: bad --- log_count line \"$line\"\n";
        $max //= $min;
        my $got = grep { index($_, $pat) >= 0 } @$lines;
        my $want = $min == $max ? $min : "$min-$max";
        Test::More::ok($got >= $min && $got <= $max,
                       "$name - error.log has $want line(s) with \"$pat\" (got $got)");
    }
}

# Registers the block generator, the preprocessor and the --- log_count check with the
# engine the caller uses.
sub use_parity {
    my $caller = caller;
    my $pre = $caller->can('add_block_preprocessor')
        or die "use_parity: use Test::Nginx::LB first\n";
    my $check = $caller->can('add_response_body_check')
        or die "use_parity: use Test::Nginx::LB first\n";
    my $template = do { no strict 'refs'; local $/; my $fh = \*{"${caller}::DATA"}; <$fh> };
    die "use_parity: no __DATA__ in the test file\n" if !defined $template;
    Test::Base::spec_string(parity_spec($template));
    $pre->(\&_preprocess);
    $check->(\&_log_count_check);
}

1;
