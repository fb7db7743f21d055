# The example configurations in nginx-conf/ load as they are: `nginx -t` with the module built
# by scripts/build.sh, from a prefix laid out like build/ (modules/ and logs/), as the comments
# in each file say. (demo.conf is the template scripts/demo.sh fills in; it is checked after
# the same substitution.) Scripted: the files are whole nginx.conf files, not blocks.
use strict;
use warnings;
use Cwd qw(abs_path);
use File::Basename qw(dirname basename);
use File::Path qw(make_path remove_tree);
use Test::More;

my $root   = abs_path(dirname(abs_path(__FILE__)) . '/..');    # also when run through t/debian/
my $nginx  = $ENV{TEST_NGINX_BINARY} || "$root/build/sbin/nginx";
my $module = $ENV{TEST_NGINX_LB_MODULE} || "$root/build/modules/ngx_http_lb_module.so";
-x $nginx  or die "no nginx at $nginx: run scripts/build.sh first\n";
-f $module or die "no module at $module: run scripts/build.sh first\n";

my $prefix = "$root/t/servroot_example_confs_$$";
remove_tree($prefix);
make_path(map { "$prefix/$_" } qw(modules logs conf tmp));    # tmp/: demo.conf's temp paths
symlink($module, "$prefix/modules/ngx_http_lb_module.so") or die "symlink: $!\n";

my @confs = sort glob("$root/nginx-conf/*.conf");
cmp_ok(scalar @confs, '>=', 3, 'nginx-conf/ has the example configurations');

# A file that says "# needs: nginx X.Y.Z" is checked only with that nginx or a later one.
my ($version) = `"$nginx" -v 2>&1` =~ m{nginx/(\d+\.\d+\.\d+)};
sub version_number { my ($a, $b, $c) = split /\./, $_[0]; ($a * 1000 + $b) * 1000 + $c }

for my $conf (@confs) {
    my $name = basename($conf);
    my $file = $conf;
    open my $in, '<', $conf or die "$conf: $!\n";
    my $text = do { local $/; <$in> };
    close $in;
    if ($text =~ /^# needs: nginx (\d+\.\d+\.\d+)/m
        && version_number($version // '0.0.0') < version_number($1)) {
        note("$name: needs nginx $1, this is $version");
        next;
    }
    if ($text =~ /\@LB_MODULE\@/) {
        # The demo template: scripts/demo.sh substitutes the module path, the port and its
        # runtime directory.
        $text =~ s/\@LB_MODULE\@/modules\/ngx_http_lb_module.so/g;
        $text =~ s/\@DEMO_PORT\@/8080/g;
        $text =~ s/\@DEMO_DIR\@/$prefix/g;
        $file = "$prefix/conf/$name";
        open my $out, '>', $file or die "$file: $!\n";
        print $out $text;
        close $out;
    }
    if ($ENV{TEST_NGINX_STREAM_MODULE} && $text =~ /^stream \{/m) {
        # stream is a module of its own there (Debian): loaded first, as the file's comment says.
        $text = "load_module $ENV{TEST_NGINX_STREAM_MODULE};\n$text";
        $file = "$prefix/conf/$name";
        open my $out, '>', $file or die "$file: $!\n";
        print $out $text;
        close $out;
    }
    unlike($text, qr/\@[A-Z_]+\@/, "$name: no placeholder left");
    my $out = `"$nginx" -p "$prefix/" -c "$file" -t 2>&1`;
    is($? >> 8, 0, "$name: nginx -t succeeds") or diag($out);
    like($out, qr/test is successful/, "$name: nginx says the test is successful");
    unlike($out, qr/\[(?:emerg|alert|crit|error|warn)\]/, "$name: nothing logged at warn or above")
        or diag($out);
}

remove_tree($prefix) unless $ENV{KEEP};
done_testing;
