#!/usr/bin/env bash
# Builds the module the way nginx modules are built: nginx's own
#   ./configure <the nginx's flags> --add-dynamic-module=<this project> && make modules
# in a private copy of an nginx source tree (the tree itself is never changed), then checks that
# the nginx it is for loads the result (`nginx -t`).
#
#   scripts/build-configure.sh debian      Debian's nginx: a copy of /usr/share/nginx/src
#                                          (package nginx-dev), for /usr/sbin/nginx
#   scripts/build-configure.sh vendored    the vendored nginx 1.28 (the nginx-src crate), for
#                                          build/sbin/nginx (run scripts/build.sh first)
#   scripts/build-configure.sh SOURCE_DIR NGINX_BINARY
#
# Flags: a tree with Debian's `conf_flags` is configured with those plus dpkg-buildflags' CFLAGS
# and LDFLAGS, exactly as Debian builds its own module packages (debhelper's nginx_mod build
# system); any other tree with the configure arguments `NGINX_BINARY -V` prints (less
# --builddir and other modules' --add-module/--add-dynamic-module).
#
# Leaves build/configure/nginx-VERSION/objs/ngx_http_lb_module.so (LB_CONFIGURE_DIR overrides
# build/configure/nginx-VERSION). Cargo's target directory is $CARGO_TARGET_DIR (default target/),
# shared with scripts/build.sh: the dependencies are built once.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
. scripts/lib/common.sh

case ${1:-} in
    debian) src=/usr/share/nginx/src; nginx=/usr/sbin/nginx
        need_packages nginx-dev nginx-core ;;
    vendored)
        need_cargo
        src=$(cargo metadata --format-version 1 --locked 2>/dev/null | python3 -c '
import json, os, sys
for p in json.load(sys.stdin)["packages"]:
    if p["name"] == "nginx-src":
        print(os.path.join(os.path.dirname(p["manifest_path"]), "nginx"))')
        nginx=$root/build/sbin/nginx
        [ -x "$nginx" ] || die "no $nginx: run scripts/build.sh first" ;;
    ''|-h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2 ;;
    *) src=$1; nginx=${2:?usage: $0 SOURCE_DIR NGINX_BINARY} ;;
esac

need_packages libclang-dev libpcre2-dev libssl-dev zlib1g-dev make gcc pkg-config
need_cargo
[ -f "$src/src/core/nginx.h" ] || die "$src is not an nginx source tree (no src/core/nginx.h)"
[ -x "$nginx" ] || die "no nginx binary at $nginx"
version=$(sed -n 's/^#define NGINX_VERSION *"\(.*\)"/\1/p' "$src/src/core/nginx.h")
binary_version=$("$nginx" -v 2>&1 | sed 's/.*nginx\///')
[ "$version" = "$binary_version" ] || die "$src is nginx $version but $nginx is $binary_version"

# The configure flags of the nginx the module is for.
flags=()
if [ -f "$src/conf_flags" ]; then
    # shellcheck disable=SC1091
    . "$src/conf_flags"
    flags=("${NGX_CONF_FLAGS[@]}")
    # Debian builds stream as a module of its own (libnginx-mod-stream), and nginx-dev's
    # conf_flags leave it out; the binary has it (`nginx -V`): with it here the module gets
    # stream's types and its stream half (`lb_upstream` in `stream {}`).
    case " ${flags[*]} " in *" --with-stream"*) ;; *)
        flags+=(--with-stream=dynamic --with-stream_ssl_module) ;;
    esac
    if command -v dpkg-buildflags >/dev/null; then
        flags+=("--with-cc-opt=$(dpkg-buildflags --get CFLAGS) -fPIC $(dpkg-buildflags --get CPPFLAGS)"
                "--with-ld-opt=$(dpkg-buildflags --get LDFLAGS) -fPIC")
    fi
else
    args=$("$nginx" -V 2>&1 | sed -n 's/^configure arguments: //p')
    eval "set -- $args"
    for a in "$@"; do
        case $a in --builddir=*|--add-module=*|--add-dynamic-module=*) ;; *) flags+=("$a") ;; esac
    done
fi
case " ${flags[*]} " in *" --with-compat "*) ;; *)
    die "$nginx was not configured --with-compat: a dynamic module built outside its own build cannot load into it" ;;
esac

out=${LB_CONFIGURE_DIR:-build/configure/nginx-$version}
case $out in /*) ;; *) out="$root/$out" ;; esac
export LB_CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}

say "configuring a copy of $src (nginx $version) in $out"
rm -rf "$out"; mkdir -p "$out"; cp -a "$src/." "$out/"
# A release tarball has ./configure; the repository's layout (the nginx-src crate) auto/configure.
configure=./configure
[ -x "$out/configure" ] || configure=auto/configure
( cd "$out" && $configure "${flags[@]}" --add-dynamic-module="$root" >configure.log 2>&1 ) \
    || { tail -n 20 "$out/configure.log" >&2; die "configure failed, see $out/configure.log"; }
say "make our module (cargo builds it against this tree)"
# Debian's tree has no top-level Makefile: call objs/Makefile directly, as Debian does. Only
# our module's target: the tree may have other dynamic modules (Debian's, with stream added
# above, has ngx_stream_module), which nobody here uses.
( cd "$out" && make -f objs/Makefile objs/ngx_http_lb_module.so >make.log 2>&1 ) \
    || { tail -n 30 "$out/make.log" >&2; die "make modules failed, see $out/make.log"; }
so=$out/objs/ngx_http_lb_module.so
[ -f "$so" ] || die "make modules left no $so"

# The check Debian's build runs on its module packages: the nginx loads the module.
# (A prefix of our own: nginx opens its compiled-in error log before it reads any -g.)
prefix=$(mktemp -d)
trap 'rm -rf "$prefix"' EXIT
mkdir -p "$prefix/logs"
printf 'load_module %s;\nevents {}\n' "$so" >"$prefix/nginx.conf"
"$nginx" -q -t -p "$prefix/" -c "$prefix/nginx.conf" -g "error_log stderr; pid /dev/null;" \
    || die "$nginx does not load $so"
say "built $so (nginx $version, loads into $nginx)"
