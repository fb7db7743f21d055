# Times in lb_* directives are read as nginx reads its own (ngx_parse_time): for every string
# below, `nginx -t` accepts `proxy_read_timeout "VALUE";` exactly when it accepts the value as a
# time in lb_check interval=, lb_check keepalive_time=, lb_upstream p2c decay= and lb_keepalive
# timeout=/time=. nginx itself is the reference, so this also holds against another nginx
# (TEST_NGINX_BINARY, e.g. Debian's 1.22 through t/debian/).
#
# Our directives refuse 0 where nginx's timeouts take it ("must be positive"): lb_check
# interval= says so in a message of its own, which tells a zero apart from a value that is not
# a time; the others must then refuse it too. Values are quoted, so spaces reach the parsers.
#
# Scripted, like t/090: each case is a pair of whole nginx -t runs, not a request.
use strict;
use warnings;
use Cwd qw(abs_path);
use File::Basename qw(dirname);
use File::Path qw(make_path remove_tree);
use Test::More;

my $root   = abs_path(dirname(abs_path(__FILE__)) . '/..');    # also when run through t/debian/
my $nginx  = $ENV{TEST_NGINX_BINARY} || "$root/build/sbin/nginx";
my $module = $ENV{TEST_NGINX_LB_MODULE} || "$root/build/modules/ngx_http_lb_module.so";
-x $nginx  or die "no nginx at $nginx: run scripts/build.sh first\n";
-f $module or die "no module at $module: run scripts/build.sh first\n";

my $prefix = "$root/t/servroot_time_syntax_$$";
remove_tree($prefix);
make_path(map { "$prefix/$_" } qw(conf logs));

my @values = (
    # nginx accepts
    '500ms', '2s', '1m', '1h', '1d', '1w', '1m30s', '1h30m', '1h 30m', '1h  30m 10s',
    '2s500ms', '1s 500ms', '1w2d3h4m5s6ms', '10', '007s', '1m30', '1ms5', '1 2', ' 1', '1 ',
    's1', '1hm', '1sms', '9223372036854775807ms', '9223372036854775s', '9223372036854775',
    '15250284452w',
    # nginx accepts, as zero
    '0', '0ms', '0s 0ms',
    # nginx refuses
    '', 'ms', 's', ' ', 'h m', '1y', '1M', '1s1m', '1m1h', '1ms1s', '1s1s', '30 s', '1 2 3',
    '1s5 6', '1 1m', '1.5s', '-1s', '+1s', '2x', '1S', '1H', '1sec', '1min',
    '9223372036854775808ms', '99999999999999999999', '9223372036854776s',
    '9223372036854775s808ms', '15250284453w',
);

my $n = 0;
sub nginx_t {
    my ($http) = @_;
    my $file = "$prefix/conf/t" . $n++ . ".conf";
    open my $out, '>', $file or die "$file: $!\n";
    print $out <<"CONF";
load_module $module;
error_log logs/error.log;
pid logs/nginx.pid;
events { worker_connections 64; }
http {
    client_body_temp_path $prefix/client_body_temp;
    proxy_temp_path $prefix/proxy_temp;
    fastcgi_temp_path $prefix/fastcgi_temp;
    uwsgi_temp_path $prefix/uwsgi_temp;
    scgi_temp_path $prefix/scgi_temp;
    access_log off;
$http
}
CONF
    close $out;
    my $text = `"$nginx" -p "$prefix/" -c "$file" -t 2>&1`;
    return ($? == 0, $text);
}

for my $v (@values) {
    (my $q = $v) =~ s/([\\"])/\\$1/g;
    my $name = "\"$v\"";

    my ($nginx_ok, $nginx_out) = nginx_t(qq{    proxy_read_timeout "$q";});
    if (!$nginx_ok) {
        like($nginx_out, qr/"proxy_read_timeout" directive invalid value/,
            "$name: nginx refuses it as a time, not for another reason");
    }

    # lb_check interval=: accepted, refused as zero, or refused as not a time.
    my ($ok, $out) = nginx_t(
        qq{    upstream u { lb_upstream; lb_check "interval=$q"; server 127.0.0.1:1; }});
    my $verdict = $ok ? 'positive'
        : $out =~ /lb_check: invalid value "\Q$v\E" for "interval": must be positive/ ? 'zero'
        : $out =~ /lb_check: invalid value "\Q$v\E" for "interval": expected a time/ ? 'bad'
        : 'other';
    isnt($verdict, 'other', "$name: lb_check interval= says why") or diag($out);
    is($verdict ne 'bad' ? 'accepted' : 'refused', $nginx_ok ? 'accepted' : 'refused',
        "$name: lb_check interval= agrees with proxy_read_timeout") or diag($out);

    # The other time parameters (all positive): accepted exactly when interval= is.
    for my $case (
        [keepalive_time => qq{lb_upstream; lb_check type=http "keepalive_time=$q";}, 'lb_check'],
        [decay          => qq{lb_upstream p2c "decay=$q";},             'lb_upstream'],
        [timeout        => qq{lb_upstream; lb_keepalive 1 "timeout=$q";}, 'lb_keepalive'],
        [time           => qq{lb_upstream; lb_keepalive 1 "time=$q";},    'lb_keepalive'],
    ) {
        my ($key, $directives, $directive) = @$case;
        my ($ok, $out) = nginx_t(
            qq{    upstream u { $directives server 127.0.0.1:1; }});
        if ($verdict eq 'positive') {
            ok($ok, "$name: $key= accepted") or diag($out);
        } else {
            like($out, qr/$directive: invalid value "\Q$v\E" for "$key"/,
                "$name: $key= refused") or diag($out);
        }
    }
}

remove_tree($prefix) unless $ENV{KEEP};
done_testing;
