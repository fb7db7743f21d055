# `server NAME resolve` (nginx 1.27.3 and later): configurations nginx refuses with its own
# [emerg], also with lb_upstream (nginx's round-robin set-up, which lb_upstream runs first,
# checks them), in http and stream upstreams. Scenarios with resolved peers at run time:
# t/110-resolve.t, t/156-stream-resolve.t.
#
# Skipped for nginx before 1.27.3, which has no "resolve" at all.
BEGIN {
    require Test::More;
    my $bin = $ENV{TEST_NGINX_BINARY} || 'build/sbin/nginx';
    my ($maj, $min, $pat) = `$bin -v 2>&1` =~ m{nginx/(\d+)\.(\d+)\.(\d+)};
    if (!defined $maj || ($maj * 1000 + $min) * 1000 + $pat < 1_027_003) {
        Test::More::plan(skip_all => 'nginx before 1.27.3 has no "server ... resolve"');
    }
}

use lib 't/lib';
use Test::Nginx::LB 'no_plan';

repeat_each(1);
no_shuffle();
run_tests();

__DATA__

=== TEST 1: resolve without zone
--- http_config
    resolver 127.0.0.1:1;
    upstream u {
        lb_upstream;
        server backend.test:80 resolve;
    }
--- config
--- must_die
--- error_log eval
qr{\[emerg\] .*resolving names at run time requires upstream "u" in \S+:\d+ to be in shared memory}



=== TEST 2: resolve without zone, with lb_check and another method
--- http_config
    resolver 127.0.0.1:1;
    upstream u {
        lb_upstream p2c;
        lb_check type=http;
        server 127.0.0.1:1;
        server backend.test:80 resolve;
    }
--- config
--- must_die
--- error_log eval
qr{\[emerg\] .*resolving names at run time requires upstream "u" in \S+:\d+ to be in shared memory}



=== TEST 3: resolve without a resolver
--- http_config
    upstream u {
        lb_upstream;
        zone u 64k;
        server backend.test:80 resolve;
    }
--- config
--- must_die
--- error_log eval
qr{\[emerg\] .*no resolver defined to resolve names at run time in upstream "u" in \S+:\d+}



=== TEST 4: a resolver only in a server block does not count for the upstream
--- http_config
    upstream u {
        lb_upstream least_conn;
        zone u 64k;
        server backend.test:80 resolve;
    }
--- config
    resolver 127.0.0.1:1;
--- must_die
--- error_log eval
qr{\[emerg\] .*no resolver defined to resolve names at run time in upstream "u" in \S+:\d+}



=== TEST 5: a backup resolved peer without a resolver
--- http_config
    upstream u {
        lb_upstream;
        zone u 64k;
        server 127.0.0.1:1;
        server backend.test:80 resolve backup;
    }
--- config
--- must_die
--- error_log eval
qr{\[emerg\] .*no resolver defined to resolve names at run time in upstream "u" in \S+:\d+}



=== TEST 6: service= without resolve
--- http_config
    resolver 127.0.0.1:1;
    upstream u {
        lb_upstream;
        zone u 64k;
        server backend.test service=http;
    }
--- config
--- must_die
--- error_log eval
qr{\[emerg\] .*service upstream "backend\.test" requires "resolve" parameter}



=== TEST 7: service= with a port
--- http_config
    resolver 127.0.0.1:1;
    upstream u {
        lb_upstream;
        zone u 64k;
        server backend.test:80 service=http resolve;
    }
--- config
--- must_die
--- error_log eval
qr{\[emerg\] .*service upstream "backend\.test:80" may not have port}



=== TEST 8: service= with an address
--- http_config
    resolver 127.0.0.1:1;
    upstream u {
        lb_upstream;
        zone u 64k;
        server 127.0.0.1 service=http resolve;
    }
--- config
--- must_die
--- error_log eval
qr{\[emerg\] .*service upstream "127\.0\.0\.1" requires domain name}



=== TEST 9: resolve in a stream upstream without zone (nginx's own check, before lb_upstream's)
--- stream_config
    resolver 127.0.0.1:1;
    upstream u {
        lb_upstream;
        server backend.test:80 resolve;
    }
--- config
--- must_die
--- error_log eval
qr{\[emerg\] .*resolving names at run time requires upstream "u" in \S+:\d+ to be in shared memory}



=== TEST 10: resolve in a stream upstream without a resolver (one in http does not count)
--- http_config
    resolver 127.0.0.1:1;
--- stream_config
    upstream u {
        lb_upstream least_conn;
        zone u 64k;
        server backend.test:80 resolve;
    }
--- config
--- must_die
--- error_log eval
qr{\[emerg\] .*no resolver defined to resolve names at run time in upstream "u" in \S+:\d+}
