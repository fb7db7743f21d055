package Test::LB::SSIPage;

# Lets a block make ONE client request during which time passes, so that the error log is
# checked once, after everything (both test engines check log sections after every request):
#
#     use Test::LB::SSIPage;
#     BEGIN { ... }  use_ssi_page();    # after `use Test::Nginx::LB`, before run_tests()
#     ...
#     --- ssi: sleep*3 | t*6 | logs/probe.log
#
# `--- ssi` builds html/page.html from these space-separated words, includes that run one after
# another (wait="yes"), and makes "GET /page.html" the block's request unless it has one:
#   sleep*N   N includes of /sleep. The k-th /sleep of the page ends about k/2 s after the first
#             (limit_req at 2r/s). limit_req only delays a main request (a subrequest is let
#             through once the main request has been seen), so /sleep proxies to /paced on our
#             own port, which is a main request each time.
#   t*N       N includes of /t (the block defines location /t, usually a proxy_pass)
#   time      $msec at that moment (see --- max_gaps)
#   logs/F    the file servroot/logs/F, e.g. an access log the block writes
#   /path*N   N includes of /path
#   |         itself
# It adds to http_config: limit_req_zone ... zone=pace; and to config: the locations
# /page.html /sleep /paced /time /logs/. A block with --- ssi cannot have --- user_files.
#
#   --- max_gaps: 1.8 0.25   the page's "time" values: the gap between the 1st and 2nd is at
#                            most 1.8 s, between the 2nd and 3rd at most 0.25 s, ...
#
# Copyright (c) the ngx_http_lb_module authors. MIT licensed.

use strict;
use warnings;

use Exporter 'import';
use Test::More ();

our @EXPORT = qw(use_ssi_page ssi_page_html);

# The page for a --- ssi value.
sub ssi_page_html {
    my $spec = shift;
    my $page = '';
    for my $w (split ' ', $spec) {
        if ($w eq '|') {
            $page .= '|';
            next;
        }
        my ($what, $n) = $w =~ /^([^*]+)(?:\*(\d+))?$/ or die "bad --- ssi word \"$w\"\n";
        my $uri = $what eq 'sleep' ? '/sleep'
                : $what eq 'time'  ? '/time'
                : $what eq 't'     ? '/t'
                : $what =~ m{^logs/[\w.-]+$} ? "/$what"
                : $what =~ m{^/}   ? $what
                : die "bad --- ssi word \"$w\"\n";
        $page .= qq{<!--# include virtual="$uri" wait="yes" -->} x ($n // 1);
    }
    return $page;
}

sub _preprocess {
    my $block = shift;
    my $spec = $block->ssi;
    return if !defined $spec;
    my $page = ssi_page_html($spec);
    # An array, not ">>> page.html" text: that would end the page with a newline.
    die $block->name . ": --- ssi cannot be combined with --- user_files\n"
        if defined $block->user_files;
    $block->set_value(user_files => [["page.html" => $page]]);
    $block->set_value(request => "GET /page.html") if !defined $block->request;
    my $http = $block->http_config // '';
    $block->set_value(http_config => "    limit_req_zone \$server_port zone=pace:1m rate=2r/s;\n"
                                     . $http);
    my $config = $block->config // '';
    $block->set_value(config => $config . <<'EOC');
    location = /page.html { ssi on; }
    location = /sleep { proxy_pass http://127.0.0.1:$TEST_NGINX_SERVER_PORT/paced; }
    location = /paced { limit_req zone=pace burst=100; try_files /nonexistent =204; }
    location = /time { return 200 "$msec"; }
    location /logs/ { alias logs/; default_type text/plain; }
EOC
}

sub _max_gaps {
    my ($block, $body, $req_idx, $repeated_req_idx, $dry_run) = @_;
    my $spec = $block->max_gaps or return;
    return if $dry_run || $req_idx != 0;
    my $name = $block->name;
    my @max = split ' ', $spec;
    my @t = $body =~ /(?<![\d.])(\d{10}\.\d{3})(?![\d.])/g;
    Test::More::is(scalar @t, @max + 1, "$name - " . (@max + 1) . " time marks in the body");
    for my $i (0 .. $#max) {
        last if $i + 1 > $#t;
        my $gap = $t[$i + 1] - $t[$i];
        Test::More::ok($gap <= $max[$i], sprintf("%s - gap %d is %.3fs (at most %ss)",
                                                 $name, $i + 1, $gap, $max[$i]));
    }
}

# Registers the preprocessor and the --- max_gaps check with the engine the caller uses.
sub use_ssi_page {
    my $caller = caller;
    my $pre = $caller->can('add_block_preprocessor')
        or die "use_ssi_page: use Test::Nginx::LB first\n";
    my $check = $caller->can('add_response_body_check')
        or die "use_ssi_page: use Test::Nginx::LB first\n";
    $pre->(\&_preprocess);
    $check->(\&_max_gaps);
}

1;
