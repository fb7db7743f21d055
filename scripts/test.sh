#!/usr/bin/env bash
# Sets up a fresh Debian machine (as root), builds, and runs every test:
#   cargo fmt --check, cargo clippy -D warnings, cargo test (the pure core, and its property
#   tests without the nginx feature),
#   scripts/build.sh, then the Test::Nginx-format suites in t/ with prove, a short set of them
#   with nginx under valgrind memcheck (scripts/memcheck.sh --short), the fault scenarios of
#   scripts/faults.sh in short mode, and the module built against Debian's nginx 1.22 loaded
#   into /usr/sbin/nginx.
# Environment: PROVE_JOBS (default 2), SKIP_DEBIAN=1 to leave out the Debian nginx run.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/common.sh

need_packages libclang-dev libpcre2-dev libssl-dev zlib1g-dev make gcc pkg-config \
    perl libtest-base-perl curl openssl python3 python3-prometheus-client valgrind
[ "${SKIP_DEBIAN:-0}" = 1 ] || need_packages nginx-dev nginx-core libnginx-mod-stream
need_cargo
for c in rustfmt clippy; do
    cargo "${c/rustfmt/fmt}" --version >/dev/null 2>&1 || rustup component add "$c"
done

say "cargo fmt --check"
cargo fmt --check
say "cargo clippy --all-targets -- -D warnings"
cargo clippy --release --all-targets --quiet -- -D warnings
cargo clippy --release --all-targets --no-default-features --quiet -- -D warnings
say "cargo test (pure core)"
cargo test --release --quiet
say "property tests, fixed seed (tests/properties.rs says how to run the long mode)"
cargo test --release --quiet --no-default-features --test properties

scripts/build.sh

say "prove t/ (nginx $(build/sbin/nginx -v 2>&1 | sed 's/.*\///'))"
prove -j"${PROVE_JOBS:-2}" t/

say "memcheck, short set (scripts/memcheck.sh --short)"
scripts/memcheck.sh --short

say "fault scenarios, short mode (scripts/faults.sh --short)"
scripts/faults.sh --short

if [ "${SKIP_DEBIAN:-0}" != 1 ]; then
    say "the module built against Debian's nginx 1.22, loaded into /usr/sbin/nginx"
    NGINX_SOURCE_DIR=/usr/share/nginx/src NGINX_BINARY=/usr/sbin/nginx LB_BUILD_DIR=build/debian \
        scripts/build.sh
    # Debian's stream is a module of its own: blocks with a stream {} block load it first
    # (t/lib/Test/Nginx/LB.pm), the others run without it.
    TEST_NGINX_BINARY=/usr/sbin/nginx \
        TEST_NGINX_LB_MODULE="$PWD/build/debian/modules/ngx_http_lb_module.so" \
        TEST_NGINX_STREAM_MODULE=/usr/lib/nginx/modules/ngx_stream_module.so \
        prove -j"${PROVE_JOBS:-2}" t/debian/
fi
say "all tests passed"
