#!/usr/bin/env bash
# Installs the package scripts/package.sh built, checks Debian's nginx with it, and removes it:
#   1. apt-get install ./build/deb/libnginx-mod-http-lb_*.deb: the files, the link in
#      /etc/nginx/modules-enabled/, lb_state's directory owned by www-data;
#   2. the package's example (every directive of the module, examples/lb.conf) in
#      /etc/nginx/conf.d/ (its ports moved to free ones): `nginx -t` with Debian's own
#      /etc/nginx/nginx.conf;
#   3. Debian's nginx started by its own command line (`/usr/sbin/nginx`, as its service does),
#      requests through every upstream, lb_status, an lb_api change kept in lb_state's file by
#      a worker running as www-data; `nginx -s quit`;
#   4. dpkg --remove: the module is no longer loaded (the link renamed *.removed, as Debian's
#      own module packages do), nginx -t passes without it; dpkg --purge: nothing left.
# As root, on a machine where no system nginx runs (it starts and stops one). Port 80 (Debian's
# default site) busy: nginx runs with a copy of nginx.conf without sites-enabled/ instead.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
. scripts/lib/common.sh

[ "$(id -u)" -eq 0 ] || die "run as root: it installs and removes a package"
need_packages nginx-core curl
deb=${1:-$(ls -t build/deb/libnginx-mod-http-lb_*.deb 2>/dev/null | head -n 1)}
[ -f "$deb" ] || die "no package: run scripts/package.sh first"
case $deb in /*) ;; *) deb="$root/$deb" ;; esac
pkg=libnginx-mod-http-lb
link=/etc/nginx/modules-enabled/50-mod-http-lb.conf
conf=/etc/nginx/conf.d/lb-package-test.conf
if [ -s /run/nginx.pid ] && kill -0 "$(cat /run/nginx.pid)" 2>/dev/null; then
    die "a system nginx is running (/run/nginx.pid): this test starts and stops its own"
fi
dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' \
    && die "$pkg is installed already: remove it first (dpkg -P $pkg)"

apt_get() {
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 -y -qq "$@" >/dev/null
}
started=""
nginx_cmd=(/usr/sbin/nginx)
cleanup() {
    set +e
    if [ -n "$started" ]; then "${nginx_cmd[@]}" -s quit 2>/dev/null; sleep 1; fi
    rm -f "$conf" /var/log/nginx/lb-access.log
    [ -z "${tmpconf:-}" ] || rm -f "$tmpconf"
    if dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed'; then
        apt_get purge "$pkg"
    fi
}
trap cleanup EXIT
passed=0 failures=0
check() { # check DESCRIPTION COMMAND...: one line per check, as prove would print it
    if "${@:2}"; then
        echo "ok - $1"; passed=$((passed + 1))
    else
        echo "not ok - $1"; failures=$((failures + 1))
    fi
}

say "installing $deb"
apt_get install "$deb"
check "the module is in /usr/lib/nginx/modules" test -f /usr/lib/nginx/modules/ngx_http_lb_module.so
check "modules-available has its load_module line" \
    grep -qx 'load_module modules/ngx_http_lb_module.so;' /usr/share/nginx/modules-available/mod-http-lb.conf
check "postinst linked it into modules-enabled" \
    test "$(readlink "$link")" = /usr/share/nginx/modules-available/mod-http-lb.conf
check "README, example and copyright (MIT) are in /usr/share/doc/$pkg" \
    bash -c "test -s /usr/share/doc/$pkg/README.md.gz && test -s /usr/share/doc/$pkg/examples/lb.conf \
             && grep -q '^License: MIT' /usr/share/doc/$pkg/copyright"
check "lb_state's directory belongs to www-data" \
    test "$(stat -c %U /var/lib/nginx/lb)" = www-data

# The example, on free ports: 8290 (the front) and 8291-8293 (stand-in backends) -> P0..P3.
base=""
# (Below the ephemeral range, and used by no socket at all: a client's connection on the port
# would make bind() fail too.)
for b in 2429 2529 2629 2729 2829 2929 3129 3229; do
    busy=0
    for d in 0 1 2 3; do ss -tanH "sport = :$b$d" | grep -q . && busy=1; done
    [ $busy = 0 ] && { base=$b; break; }
done
[ -n "$base" ] || die "no four free ports for the example"
sed "s/\b829\([0-3]\)\b/$base\1/g" "/usr/share/doc/$pkg/examples/lb.conf" >"$conf"
if ss -ltnH 'sport = :80' | grep -q .; then
    say "port 80 is busy: nginx runs without Debian's default site (sites-enabled/)"
    tmpconf=$(mktemp /etc/nginx/lb-package-test-XXXXXX.conf)
    grep -v 'sites-enabled' /etc/nginx/nginx.conf >"$tmpconf"
    nginx_cmd=(/usr/sbin/nginx -c "$tmpconf")
fi

say "nginx -t with the example in $conf"
out=$("${nginx_cmd[@]}" -t 2>&1) || true
check "nginx -t passes with every directive" grep -q 'test is successful' <<<"$out"
check "nginx -t shows the module's notice for each upstream" \
    bash -c "grep -q 'lb: upstream \"app\": method round_robin' <<<'$out' \
             && grep -q 'lb: upstream \"app_p2c\": method p2c' <<<'$out'"

say "starting Debian's nginx: ${nginx_cmd[*]}"
"${nginx_cmd[@]}"
started=1
for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:${base}0/lb-status" && break; sleep 0.1; done
front=http://127.0.0.1:${base}0
body=$(curl -s -D /tmp/lb-package-test.h "$front/")
check "a request is served through lb_upstream" grep -Eq "^backend ${base}[12]$" <<<"$body"
check "lb_add_header names the peer" grep -Eqi "^X-Served-By: 127\.0\.0\.1:${base}[12]" /tmp/lb-package-test.h
rm -f /tmp/lb-package-test.h
check "least_conn serves" grep -Eq "^backend ${base}[12]$" <<<"$(curl -s "$front/least-conn/")"
check "p2c serves" grep -Eq "^backend ${base}[12]$" <<<"$(curl -s "$front/p2c/")"
check "lb_status lists the upstreams" \
    bash -c "curl -s '$front/lb-status' | python3 -c 'import json,sys; d=json.load(sys.stdin); \
             names=[u[\"name\"] for u in d[\"upstreams\"]]; sys.exit(0 if {\"app\",\"app_least_conn\",\"app_p2c\"} <= set(names) else 1)'"
code=$(curl -s -o /dev/null -w '%{http_code}' -X PATCH -d '{"admin": "drain"}' \
    "$front/lb-api/upstreams/app/peers/127.0.0.1:${base}2")
check "lb_api drains a peer (200)" test "$code" = 200
sleep 0.5
check "a worker (www-data) kept the change in lb_state's file" \
    grep -q "${base}2" /var/lib/nginx/lb/state
"${nginx_cmd[@]}" -s quit
for _ in $(seq 50); do [ -s /run/nginx.pid ] || break; sleep 0.1; done
started=""
check "nginx stopped" bash -c '! [ -s /run/nginx.pid ]'

say "dpkg --remove $pkg"
rm -f "$conf"
apt_get remove "$pkg"
check "the module is gone" test ! -e /usr/lib/nginx/modules/ngx_http_lb_module.so
check "modules-enabled no longer loads it (only the *.removed link is left, as Debian does)" \
    bash -c "! ls /etc/nginx/modules-enabled/*.conf 2>/dev/null | grep -q mod-http-lb"
check "nginx -t passes without the module" bash -c "${nginx_cmd[*]} -t 2>/dev/null"
say "dpkg --purge $pkg"
apt_get purge "$pkg"
check "purge leaves no link and no lb_state directory" \
    bash -c "! ls /etc/nginx/modules-enabled/ | grep -q mod-http-lb && test ! -e /var/lib/nginx/lb"

echo "package: $passed passed, $failures failed"
[ "$failures" -eq 0 ]
