#!/usr/bin/env bash
# Builds the module in release mode and leaves the two files every test, demo and benchmark uses:
#   $LB_BUILD_DIR/sbin/nginx                       the nginx the module was built against
#   $LB_BUILD_DIR/modules/ngx_http_lb_module.so    the module (every module of the project)
# LB_BUILD_DIR defaults to build/.
#
# By default nginx 1.28 is compiled from the `nginx-src` crate (ngx's `vendored` feature).
# To build against another configured nginx tree instead:
#   NGINX_SOURCE_DIR=/path/to/nginx [NGINX_BUILD_DIR=/path/to/objs] [NGINX_BINARY=/path/to/nginx]
# A tree that was never configured but carries Debian's `conf_flags` (package nginx-dev,
# /usr/share/nginx/src) is copied and configured with those flags first. For example, Debian's
# nginx 1.22:
#   NGINX_SOURCE_DIR=/usr/share/nginx/src NGINX_BINARY=/usr/sbin/nginx \
#     LB_BUILD_DIR=build/debian scripts/build.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
. scripts/lib/common.sh

out=${LB_BUILD_DIR:-build}
case $out in /*) ;; *) out="$root/$out" ;; esac

need_packages libclang-dev libpcre2-dev libssl-dev zlib1g-dev make gcc pkg-config
need_cargo

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
nginx_bin=""
if [ -n "${NGINX_SOURCE_DIR:-}${NGINX_BUILD_DIR:-}" ]; then
    src=${NGINX_SOURCE_DIR:-$(dirname "$NGINX_BUILD_DIR")}
    [ -f "$src/src/core/nginx.h" ] || die "NGINX_SOURCE_DIR=$src is not an nginx source tree (no src/core/nginx.h)"
    version=$(sed -n 's/^#define NGINX_VERSION *"\(.*\)"/\1/p' "$src/src/core/nginx.h")
    objs=${NGINX_BUILD_DIR:-$src/objs}
    if [ ! -f "$objs/ngx_auto_config.h" ]; then
        [ -f "$src/conf_flags" ] || die "$src is not configured (no $objs/ngx_auto_config.h) and has no conf_flags: run its ./configure first"
        # Debian's nginx-dev ships the source and the flags the packaged binary was configured
        # with; configure a private copy with them so the module matches that binary.
        # Debian builds stream as a module of its own (libnginx-mod-stream), but nginx-dev's
        # conf_flags leave it out: the copy is configured with it too, as the binary was
        # (`nginx -V`), so that the module gets stream's types and its stream half
        # (`lb_upstream` in `stream {}`). The module still refers to no stream symbol and
        # loads whether or not `ngx_stream_module.so` is loaded.
        stream_flags=(--with-stream=dynamic --with-stream_ssl_module)
        copy="$CARGO_TARGET_DIR/nginx-src-$version+stream"
        if [ ! -f "$copy/objs/ngx_auto_config.h" ]; then
            say "configuring a copy of $src (nginx $version) in $copy"
            rm -rf "$copy"; mkdir -p "$copy"; cp -a "$src/." "$copy/"
            # shellcheck disable=SC1091
            ( cd "$copy" && . ./conf_flags && ./configure "${NGX_CONF_FLAGS[@]}" "${stream_flags[@]}" >configure.log 2>&1 ) \
                || die "configure failed, see $copy/configure.log"
        fi
        src=$copy; objs=$copy/objs
    fi
    export NGINX_SOURCE_DIR=$src NGINX_BUILD_DIR=$objs
    # A separate target dir, so switching trees does not throw away the vendored build.
    export CARGO_TARGET_DIR="$CARGO_TARGET_DIR/nginx-$version"
    say "building against nginx $version in $src"
    cargo build --release --quiet
    nginx_bin=${NGINX_BINARY:-$objs/nginx}
    [ -x "$nginx_bin" ] || die "no nginx binary at $nginx_bin: set NGINX_BINARY to the nginx built from $src"
else
    say "building against the vendored nginx (ngx crate, feature vendored)"
    cargo build --release --quiet
    # nginx-sys records where it built nginx; the newest such build is the one just linked.
    nginx_bin=$(ls -t "$CARGO_TARGET_DIR"/release/build/nginx-sys-*/out/objs/nginx 2>/dev/null | head -n 1)
    [ -n "$nginx_bin" ] || die "the vendored nginx binary was not found under $CARGO_TARGET_DIR/release/build"
fi

mkdir -p "$out/sbin" "$out/modules"
install -m 0755 "$nginx_bin" "$out/sbin/nginx"
install -m 0755 "$CARGO_TARGET_DIR/release/libngx_http_lb_module.so" "$out/modules/ngx_http_lb_module.so"
say "built $out/sbin/nginx ($("$out/sbin/nginx" -v 2>&1 | sed 's/.*: //')) and $out/modules/ngx_http_lb_module.so"
