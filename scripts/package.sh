#!/usr/bin/env bash
# Builds build/deb/libnginx-mod-http-lb_<version>_<arch>.deb for Debian's nginx, laid out as
# Debian's own module packages (libnginx-mod-*) are:
#   /usr/lib/nginx/modules/ngx_http_lb_module.so          built by nginx's ./configure
#                                                         --add-dynamic-module against Debian's
#                                                         nginx source (scripts/build-configure.sh)
#   /usr/share/nginx/modules-available/mod-http-lb.conf   the load_module line
#   /etc/nginx/modules-enabled/50-mod-http-lb.conf        a link made by postinst, taken away on
#                                                         removal (packaging/deb/: the logic of
#                                                         Debian's dh_nginx)
#   /usr/share/doc/libnginx-mod-http-lb/                  copyright (MIT), README.md.gz,
#                                                         examples/lb.conf (nginx-conf/debian/)
# Depends: the exact nginx-abi-... Debian's nginx provides, read as Debian's own packaging reads
# it (nginx-dev's debian/libnginx-mod.abisubstvars, nginx:abi) and checked against what the
# installed nginx provides; plus the shared libraries dpkg-shlibdeps finds.
#
# Made with dpkg-deb (--root-owner-group: no fakeroot needed), from files in this repository:
# the .so has to come out of nginx's own build against Debian's tree, which cargo-deb (a cargo
# build) does not do, and debhelper's nginx_mod build system configures inside
# /usr/share/nginx/src itself (a system directory here, not a build chroot).
#
#   scripts/package.sh          builds the module (scripts/build-configure.sh debian), then the
#                               package
#   LB_SKIP_BUILD=1 scripts/package.sh   packages the module built last
# Then: apt-get install ./build/deb/libnginx-mod-http-lb_*.deb (scripts/package-test.sh tests it).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
. scripts/lib/common.sh

need_packages nginx-dev nginx-core dpkg-dev
src=/usr/share/nginx/src
version=$(sed -n 's/^#define NGINX_VERSION *"\(.*\)"/\1/p' "$src/src/core/nginx.h")
so=$root/build/configure/nginx-$version/objs/ngx_http_lb_module.so
[ "${LB_SKIP_BUILD:-0}" = 1 ] || scripts/build-configure.sh debian
[ -f "$so" ] || die "no $so: run scripts/build-configure.sh debian"

# The ABI Debian's module packages depend on, as dh_nginx reads it.
abi=$(sed -n 's/^nginx:abi=//p' "$src/debian/libnginx-mod.abisubstvars")
[ -n "$abi" ] || die "no nginx:abi in $src/debian/libnginx-mod.abisubstvars"
provides=$(dpkg-query -W -f='${Provides}' nginx 2>/dev/null || true)
case ", $provides," in *", $abi,"*) ;; *)
    die "nginx-dev says $abi but the installed nginx provides '$provides': install matching nginx and nginx-dev" ;;
esac

pkg=libnginx-mod-http-lb
pkg_version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
arch=$(dpkg --print-architecture)
out=$root/build/deb
stage=$out/$pkg
rm -rf "$stage"
install -d "$stage/DEBIAN" "$stage/usr/lib/nginx/modules" "$stage/usr/share/nginx/modules-available" \
    "$stage/usr/share/doc/$pkg/examples"

# Stripped as dh_strip strips shared libraries.
install -m 0644 "$so" "$stage/usr/lib/nginx/modules/ngx_http_lb_module.so"
strip --strip-unneeded --remove-section=.comment --remove-section=.note \
    "$stage/usr/lib/nginx/modules/ngx_http_lb_module.so"
echo "load_module modules/ngx_http_lb_module.so;" \
    >"$stage/usr/share/nginx/modules-available/mod-http-lb.conf"

doc=$stage/usr/share/doc/$pkg
gzip -9n <README.md >"$doc/README.md.gz"
install -m 0644 nginx-conf/debian/lb.conf "$doc/examples/lb.conf"
{
    echo "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/"
    echo "Upstream-Name: ngx_http_lb_module"
    echo
    echo "Files: *"
    echo "Copyright: $(sed -n 's/^Copyright (c) //p' LICENSE | head -n 1)"
    echo "License: MIT"
    echo
    echo "License: MIT"
    sed -n '/^Permission/,$p' LICENSE | sed 's/^$/./; s/^/ /'
} >"$doc/copyright"
chmod 0644 "$doc/copyright" "$doc/README.md.gz"

for s in postinst prerm postrm; do
    install -m 0755 "packaging/deb/$s" "$stage/DEBIAN/$s"
done

# Shared-library dependencies (libc6, libgcc-s1), found as debhelper finds them.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/debian"
printf 'Source: %s\n\nPackage: %s\nArchitecture: any\n' "$pkg" "$pkg" >"$tmp/debian/control"
shlibs=$(cd "$tmp" && dpkg-shlibdeps -O "$stage/usr/lib/nginx/modules/ngx_http_lb_module.so" 2>/dev/null \
    | sed -n 's/^shlibs:Depends=//p')
[ -n "$shlibs" ] || die "dpkg-shlibdeps found no dependencies for the module"

size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
cat >"$stage/DEBIAN/control" <<EOF
Package: $pkg
Version: $pkg_version
Architecture: $arch
Maintainer: ${DEBFULLNAME:-ngx_http_lb_module authors} <${DEBEMAIL:-maintainers@ngx-http-lb.invalid}>
Installed-Size: $size
Depends: $abi, $shlibs
Section: httpd
Priority: optional
Description: load balancing, health checks and monitoring module for Nginx
 ngx_http_lb_module takes over peer selection in nginx's upstream blocks (smooth
 weighted round-robin, least connections over all workers, power of two
 choices), probes peers (TCP, HTTP, HTTPS), keeps per-peer state in shared
 memory, and shows it as JSON, Prometheus text or HTML (lb_status), with a
 runtime API (lb_api). Built for nginx $version ($abi).
EOF
(cd "$stage" && find usr -type f -print0 | sort -z | xargs -0 md5sum) >"$stage/DEBIAN/md5sums"

deb=$out/${pkg}_${pkg_version}_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
say "built $deb ($(du -k "$deb" | cut -f1) KB; Depends: $abi, $shlibs)"
