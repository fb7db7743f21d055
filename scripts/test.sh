#!/usr/bin/env bash
# Sets up a fresh Debian machine (as root), builds, and runs every test:
#   cargo fmt --check, cargo clippy -D warnings, cargo test (the pure core's unit tests and its
#   property tests, without the nginx feature),
#   scripts/build.sh, then the Test::Nginx-format suites in t/ with prove (t/141-dashboard.t
#   drives the status page in headless Chromium: about 10 s), a short set of them
#   with nginx under valgrind memcheck (scripts/memcheck.sh --short), the fault scenarios of
#   scripts/faults.sh in short mode, two hosts behind a floating IP (keepalived, network
#   namespaces: scripts/ha-test.sh --short, skipped with the reason when the machine has no
#   network namespaces); the module built by nginx's own ./configure
#   --add-dynamic-module against the vendored 1.28 (loaded into build/sbin/nginx) and against
#   Debian's nginx 1.22 (scripts/build-configure.sh), the latter loaded into /usr/sbin/nginx for
#   the t/debian/ suites, packaged (scripts/package.sh), installed, used and removed
#   (scripts/package-test.sh).
# Environment: PROVE_JOBS (default 4: the suites mostly wait on timers; about a quarter of the
# wall time is CPU), SKIP_DEBIAN=1 to leave out the Debian nginx run.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/common.sh
# Each step's line says when it started, in seconds since the start (the budget is 20 minutes).
step() { say "[${SECONDS}s] $*"; }

need_packages libclang-dev libpcre2-dev libssl-dev zlib1g-dev make gcc pkg-config \
    perl libtest-base-perl curl openssl python3 python3-prometheus-client valgrind
# t/141-dashboard.t: the status page in Debian's headless Chromium, over its DevTools protocol.
need_packages chromium python3-websocket
[ "${SKIP_DEBIAN:-0}" = 1 ] || need_packages nginx-dev nginx-core dpkg-dev libnginx-mod-stream
need_cargo
for c in rustfmt clippy; do
    cargo "${c/rustfmt/fmt}" --version >/dev/null 2>&1 || rustup component add "$c"
done

step "cargo fmt --check"
cargo fmt --check
step "cargo clippy --all-targets -- -D warnings"
cargo clippy --release --all-targets --quiet -- -D warnings
cargo clippy --release --all-targets --no-default-features --quiet -- -D warnings
# The unit tests cover the pure core only (the shell is left out of cfg(test)) and the
# property tests need the library without the nginx shell: one build without the nginx
# features runs both; scripts/build.sh then builds the shell.
step "cargo test: the pure core's unit tests, and its property tests with a fixed seed (tests/properties.rs says how to run the long mode)"
cargo test --release --quiet --no-default-features

scripts/build.sh

step "prove t/ (nginx $(build/sbin/nginx -v 2>&1 | sed 's/.*\///'))"
prove -j"${PROVE_JOBS:-4}" t/

step "memcheck, short set (scripts/memcheck.sh --short)"
scripts/memcheck.sh --short

step "fault scenarios, short mode (scripts/faults.sh --short)"
scripts/faults.sh --short

step "two hosts behind a floating IP, short mode (scripts/ha-test.sh --short, about 35 s)"
ha=0
scripts/ha-test.sh --short || ha=$?
case $ha in
    0) ;;
    77) say "two hosts: SKIPPED on this machine (the reason is above); run scripts/ha-test.sh where network namespaces are allowed" ;;
    *) die "scripts/ha-test.sh --short failed (exit $ha)" ;;
esac

step "the module built by nginx's ./configure --add-dynamic-module against the vendored 1.28"
scripts/build-configure.sh vendored
v=$(build/sbin/nginx -v 2>&1 | sed 's/.*nginx\///')
TEST_NGINX_LB_MODULE="$PWD/build/configure/nginx-$v/objs/ngx_http_lb_module.so" \
    prove t/020-upstream-rr.t t/140-debug-log.t

if [ "${SKIP_DEBIAN:-0}" != 1 ]; then
    step "the module built by nginx's ./configure against Debian's nginx 1.22, packaged"
    scripts/package.sh
    v=$(/usr/sbin/nginx -v 2>&1 | sed 's/.*nginx\///')
    # Debian's stream is a module of its own: blocks with a stream {} block load it first
    # (t/lib/Test/Nginx/LB.pm), the others run without it.
    TEST_NGINX_BINARY=/usr/sbin/nginx \
        TEST_NGINX_LB_MODULE="$PWD/build/configure/nginx-$v/objs/ngx_http_lb_module.so" \
        TEST_NGINX_STREAM_MODULE=/usr/lib/nginx/modules/ngx_stream_module.so \
        prove -j"${PROVE_JOBS:-4}" t/debian/
    step "the package installed, used with Debian's nginx, removed (scripts/package-test.sh)"
    scripts/package-test.sh
fi
step "all tests passed"
