#!/usr/bin/env bash
# Demo: builds the module, starts nginx with nginx-conf/demo.conf (three local backends on
# 127.0.0.1:8081-8083 behind one health-checked upstream, a front on 127.0.0.1:$DEMO_PORT that
# adds X-Served-By, the live dashboard and the runtime API), sends a few requests, shows which
# backend answered each, and prints the dashboard's URL.
#
#   scripts/demo.sh [start]     build, (re)start the demo and send requests (default)
#   scripts/demo.sh flap        take backend 2 down for 10 s and back, with light traffic, while
#                               you watch the dashboard (the demo must run)
#   scripts/demo.sh stop        stop the demo nginx
#   scripts/demo.sh status      say whether it runs
#
# Environment:
#   DEMO_PORT=8080          front port
#   DEMO_REQUESTS=6         how many requests to send
#   DEMO_SKIP_BUILD=1       do not run scripts/build.sh (use build/ as it is)
#   DEMO_FLAP_PORT=8082     the backend `flap` takes down (8081, 8082 or 8083)
#   DEMO_FLAP_SECONDS=10    how long it stays down
#   LB_BUILD_DIR=build      where scripts/build.sh left sbin/nginx and modules/
# The runtime directory (conf, logs, temp files) is $LB_BUILD_DIR/demo.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
. scripts/lib/common.sh

out=${LB_BUILD_DIR:-build}
case $out in /*) ;; *) out="$root/$out" ;; esac
nginx="$out/sbin/nginx"
module="$out/modules/ngx_http_lb_module.so"
prefix="$out/demo"
template="$root/nginx-conf/demo.conf"
port=${DEMO_PORT:-8080}
requests=${DEMO_REQUESTS:-6}
backend_ports="8081 8082 8083"       # as written in nginx-conf/demo.conf
flap_port=${DEMO_FLAP_PORT:-8082}
flap_seconds=${DEMO_FLAP_SECONDS:-10}

case $port in ''|*[!0-9]*) die "DEMO_PORT must be a port number, not '$port'" ;; esac
[ "$port" -ge 1 ] && [ "$port" -le 65535 ] || die "DEMO_PORT must be between 1 and 65535, not $port"
case " $backend_ports " in *" $port "*) die "DEMO_PORT=$port collides with a backend port ($backend_ports)" ;; esac

# The command to show to the user: relative to the repository when possible.
rel() { case $1 in "$root"/*) printf '%s' "${1#"$root"/}" ;; *) printf '%s' "$1" ;; esac; }
stop_cmd="$(rel "$nginx") -p $(rel "$prefix") -s stop"

running_pid() {
    local pid
    [ -f "$prefix/logs/nginx.pid" ] || return 1
    pid=$(cat "$prefix/logs/nginx.pid" 2>/dev/null) || return 1
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    printf '%s' "$pid"
}

stop_demo() {
    local pid i
    pid=$(running_pid) || { say "the demo is not running"; return 0; }
    say "stopping the demo nginx (pid $pid)"
    "$nginx" -p "$prefix" -c conf/nginx.conf -s stop
    for i in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    die "nginx (pid $pid) did not stop within 5s"
}

# port_busy PORT: true when something accepts TCP connections on 127.0.0.1:PORT.
port_busy() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# request PATH: prints status, X-Served-By and body of GET http://127.0.0.1:$port/PATH.
request() {
    local path=$1 resp status served body
    if command -v curl >/dev/null 2>&1; then
        resp=$(curl -sS -i --max-time 5 "http://127.0.0.1:$port$path") || { say "request $path failed"; return 1; }
    else
        # No curl: a minimal HTTP/1.0 client on bash's /dev/tcp.
        resp=$(
            exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
            printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1:%s\r\n\r\n' "$path" "$port" >&3
            timeout 5 cat <&3
        ) || { say "request $path failed"; return 1; }
    fi
    resp=${resp//$'\r'/}
    status=$(printf '%s\n' "$resp" | sed -n '1s/^HTTP\/[0-9.]* \([0-9]*\).*/\1/p')
    served=$(printf '%s\n' "$resp" | sed -n '/^$/q; s/^[Xx]-[Ss]erved-[Bb]y: *//p')
    body=$(printf '%s\n' "$resp" | sed '1,/^$/d')
    printf '  %-4s status %s   X-Served-By: %-16s body: %s\n' "$path" "${status:-?}" "${served:--}" "$body"
}

start_demo() {
    local p i pid busy=()

    if [ "${DEMO_SKIP_BUILD:-0}" != 1 ]; then
        scripts/build.sh
    fi
    [ -x "$nginx" ] || die "no nginx at $nginx: run scripts/build.sh"
    [ -f "$module" ] || die "no module at $module: run scripts/build.sh"
    [ -f "$template" ] || die "missing $template"

    if pid=$(running_pid); then
        say "a demo nginx is already running (pid $pid); restarting it"
        stop_demo
    fi

    for p in "$port" $backend_ports; do
        if port_busy "$p"; then busy+=("$p"); fi
    done
    if [ ${#busy[@]} -gt 0 ]; then
        die "port(s) ${busy[*]} on 127.0.0.1 already in use by another program; the demo needs" \
            "$port (front, set DEMO_PORT to change it) and $backend_ports (backends, fixed in" \
            "nginx-conf/demo.conf). Find the user with: ss -ltnp | grep -E ':(${busy[*]// /|}) '"
    fi

    mkdir -p "$prefix/conf" "$prefix/logs" "$prefix/tmp"
    # '|' as the sed delimiter: paths contain '/'; escape what sed treats specially.
    local mod_esc dir_esc
    mod_esc=$(printf '%s' "$module" | sed 's/[|&\\]/\\&/g')
    dir_esc=$(printf '%s' "$prefix" | sed 's/[|&\\]/\\&/g')
    sed -e "s|@LB_MODULE@|$mod_esc|g" -e "s|@DEMO_PORT@|$port|g" -e "s|@DEMO_DIR@|$dir_esc|g" \
        "$template" >"$prefix/conf/nginx.conf"
    # The backends look for flap/down_PORT; nginx's workers (nobody, when started as root) must
    # be able to look into it.
    mkdir -p "$prefix/flap"
    rm -f "$prefix"/flap/down_*
    chmod 755 "$prefix" "$prefix/flap"

    "$nginx" -p "$prefix" -c conf/nginx.conf -t -q || die "nginx rejected $(rel "$prefix")/conf/nginx.conf (see above)"
    say "starting $(rel "$nginx") -p $(rel "$prefix") -c conf/nginx.conf"
    "$nginx" -p "$prefix" -c conf/nginx.conf || die "nginx failed to start; see $(rel "$prefix")/logs/error.log"

    for i in $(seq 1 50); do
        port_busy "$port" && break
        sleep 0.1
    done
    port_busy "$port" || die "nginx started but 127.0.0.1:$port does not answer; see $(rel "$prefix")/logs/error.log"

    say "sending $requests requests to http://127.0.0.1:$port/"
    for i in $(seq 1 "$requests"); do
        request "/$i"
    done

    echo
    echo "The demo runs on http://127.0.0.1:$port/ (try: curl -i http://127.0.0.1:$port/)."
    echo "Dashboard:     http://127.0.0.1:$port/lb-status?format=html   (JSON: ?format=json)"
    echo "               (on another machine: ssh -L $port:127.0.0.1:$port THIS-HOST, then the same URL)"
    echo "Watch a peer go down and come back:  scripts/demo.sh flap"
    echo "Stop it with:  $stop_cmd"
    echo "           or: scripts/demo.sh stop"
}

# The demo's front port, from its configuration.
demo_port() {
    sed -n 's/^ *listen 127\.0\.0\.1:\([0-9]*\);.*/\1/p' "$prefix/conf/nginx.conf" | tail -n 1
}

# served_by: one request to the front; prints the number of the backend that answered, or the
# status when it failed.
served_by() {
    local body
    if command -v curl >/dev/null 2>&1; then
        body=$(curl -sS --max-time 2 "http://127.0.0.1:$port/" 2>/dev/null) || { printf 'error'; return; }
    else
        body=$(
            exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
            printf 'GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
            timeout 2 cat <&3
        ) || { printf 'error'; return; }
    fi
    case $body in *"backend "[0-9]*) printf '%s' "${body##*backend }" | tr -dc 0-9 ;; *) printf 'other' ;; esac
}

# Takes backend $flap_port down (503 to everything, its health checks fail) for $flap_seconds,
# then back, sending about 10 requests a second from 2 s before to 6 s after, and printing
# each second which backends served them.
flap_demo() {
    local pid flag t total phase counts n i
    pid=$(running_pid) || die "the demo is not running: start it with scripts/demo.sh"
    case " $backend_ports " in *" $flap_port "*) ;; *) die "DEMO_FLAP_PORT must be one of $backend_ports" ;; esac
    case $flap_seconds in ''|*[!0-9]*) die "DEMO_FLAP_SECONDS must be a number of seconds" ;; esac
    port=$(demo_port)
    flag="$prefix/flap/down_$flap_port"
    [ -d "$prefix/flap" ] || die "no $(rel "$prefix")/flap: restart the demo (scripts/demo.sh)"
    echo "Dashboard: http://127.0.0.1:$port/lb-status?format=html"
    echo "backend on 127.0.0.1:$flap_port goes down in 2 s for ${flap_seconds} s (checks every 1 s, fall=2, rise=2)"
    total=$((flap_seconds + 8))
    for t in $(seq 1 "$total"); do
        if [ "$t" -eq 3 ]; then : >"$flag"; fi
        if [ "$t" -eq $((flap_seconds + 3)) ]; then rm -f "$flag"; fi
        if [ -e "$flag" ]; then phase="127.0.0.1:$flap_port DOWN"; else phase="all up        "; fi
        counts=""
        for i in 1 2 3 4 5 6 7 8 9 10; do
            counts="$counts $(served_by)"
            sleep 0.08
        done
        n=""
        for i in 1 2 3; do n="$n backend $i: $(printf '%s\n' $counts | grep -cx "$i" || true)"; done
        printf '  %2ds  %s  10 requests ->%s%s\n' "$t" "$phase" "$n" \
            "$( (printf '%s\n' $counts | grep -cvx '[123]' || true) | sed 's/^0$//; s/^[1-9].*/, & failed/')"
    done
    rm -f "$flag"
    echo "done: the dashboard's timeline shows 127.0.0.1:$flap_port unhealthy (HTTP 503) and up again"
}

case ${1:-start} in
    start) start_demo ;;
    stop) stop_demo ;;
    flap) flap_demo ;;
    status)
        if pid=$(running_pid); then
            p=$(demo_port)
            echo "the demo runs (pid $pid) on http://127.0.0.1:${p:-?}/ (dashboard: /lb-status?format=html); stop it with: $stop_cmd"
        else
            echo "the demo is not running"
        fi ;;
    -h|--help|help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//' ;;
    *) die "unknown command '$1' (use: start, flap, stop, status)" ;;
esac
