#!/usr/bin/env bash
# End-to-end benchmark: the same frontend configuration with stock nginx balancing and with this
# module, measured in the same run.
#
# Two figures per configuration, because wall-clock numbers on a shared machine wander by 10-20%:
#  - user-space instructions per request: the frontend runs with `master_process off` under
#    `valgrind --tool=cachegrind --cache-sim=no`; the slope between N1 and N2 requests sent on one
#    keep-alive client connection (start-up, shutdown and cold connections cancel out);
#  - requests/s, p50 and p99 latency from wrk, median of alternated rounds.
# And for `slow`: the share of requests a peer 20 ms slower than the others gets, per method.
#
# Usage: scripts/bench.sh [scenario...]
#   rr2     2 peers, round-robin: stock (keepalive 64) vs lb_upstream (keepalive 64)
#   tls2    2 HTTPS peers, no connection cache (a TLS handshake per request, resuming the
#           peer's session): stock vs lb_upstream; TLS_N1=200 TLS_N2=400 requests
#   rr100   100 peers: stock round-robin + keepalive 200 vs lb_upstream + lb_keepalive 2
#   rr1000  1,000 peers: stock round-robin + keepalive 2000 vs lb_upstream + lb_keepalive 2
#   lc2     2 peers: stock least_conn + keepalive 64 vs lb_upstream least_conn + lb_keepalive 32
#   lc1000  1,000 peers: stock least_conn + keepalive 2000 vs lb least_conn + lb_keepalive 2
#   slow    3 peers, one 20 ms slower: its share under each method (wrk, 32 connections)
#   checks1000  CPU time of the workers over 30 s (CHECK_SECONDS) while health-checking 1,000
#               peers (type=http, interval=1s, two workers), no traffic; with probe keepalive
#               (the default) and with keepalive=off
#   checks1000tls  the same with type=https checks (not in the default set)
#   (default: all of them)
# Environment: N1=2000 N2=4000 ROUNDS=3 DURATION=5 CONNS=16
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
. scripts/lib/common.sh

need_packages valgrind wrk curl python3
[ -x build/sbin/nginx ] && [ -f build/modules/ngx_http_lb_module.so ] || scripts/build.sh

N1=${N1:-2000} N2=${N2:-4000} ROUNDS=${ROUNDS:-3} DURATION=${DURATION:-5} CONNS=${CONNS:-16}
NGINX=$root/build/sbin/nginx
MODULE=$root/build/modules/ngx_http_lb_module.so
work=$root/build/bench
BACKEND_BASE=${BACKEND_BASE:-20000}
FRONT_PORT=${FRONT_PORT:-19080}
SLOW_PORT=${SLOW_PORT:-19999}

cleanup() {
    for pidfile in "$work"/*/logs/nginx.pid; do
        [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
    done
    [ -n "${slow_pid:-}" ] && kill "$slow_pid" 2>/dev/null || true
    true
}
trap cleanup EXIT
rm -rf "$work"; mkdir -p "$work"
ulimit -n 65536 2>/dev/null || true

# start_backend NPEERS [ssl]: one local nginx listening on NPEERS ports, answering "ok" (over
# TLS with "ssl", with the test certificates of t/gen-certs.sh).
start_backend() {
    local n=$1 ssl=${2:-} d=$work/backend listens="" i tls=""
    [ -f "$d/logs/nginx.pid" ] && kill "$(cat "$d/logs/nginx.pid")" 2>/dev/null && sleep 0.3
    rm -rf "$d"; mkdir -p "$d/conf" "$d/logs"
    if [ -n "$ssl" ]; then
        local certs
        certs=$("$root/t/gen-certs.sh" "$work/certs")
        tls="        ssl_certificate $certs/localhost.crt; ssl_certificate_key $certs/localhost.key;"
        ssl=" ssl"
    fi
    for ((i = 0; i < n; i++)); do listens+="        listen 127.0.0.1:$((BACKEND_BASE + i))$ssl;"$'\n'; done
    cat >"$d/conf/nginx.conf" <<CONF
worker_processes 1;
pid logs/nginx.pid;
error_log logs/error.log error;
worker_rlimit_nofile 65536;
events { worker_connections 16384; }
http {
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    server {
$listens$tls
        location / { return 200 "ok"; }
    }
}
CONF
    "$NGINX" -p "$d" -c conf/nginx.conf
}

# front_conf NAME NPEERS BALANCING CACHE: BALANCING is the upstream's first line(s)
# ("" for stock round-robin), CACHE its connection-cache line.
front_conf() {
    local name=$1 n=$2 balancing=$3 cache=$4 d=$work/$1 servers="" i load=""
    mkdir -p "$d/conf" "$d/logs"
    for ((i = 0; i < n; i++)); do servers+="        server 127.0.0.1:$((BACKEND_BASE + i));"$'\n'; done
    case "$balancing$cache" in *lb_*) load="load_module $MODULE;" ;; esac
    cat >"$d/conf/nginx.conf" <<CONF
$load
worker_processes 1;
pid logs/nginx.pid;
error_log logs/error.log error;
worker_rlimit_nofile 65536;
events { worker_connections 16384; }
http {
    access_log off;
    keepalive_requests 1000000;
    upstream backend {
        $balancing
$servers        $cache
    }
    server {
        listen 127.0.0.1:$FRONT_PORT;
        location / {
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://backend;
        }
    }
}
CONF
}

wait_port() {
    local i
    for ((i = 0; i < 400; i++)); do
        curl -s -o /dev/null "http://127.0.0.1:$1/" && return 0
        sleep 0.05
    done
    die "nothing answers on port $1"
}

# instructions NAME N: user-space instructions of the frontend serving N requests on one
# keep-alive client connection, from start to exit.
instructions() {
    local d=$work/$1 n=$2 out
    out=$d/cg.$n
    valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file="$out" \
        "$NGINX" -p "$d" -c conf/nginx.conf -g 'daemon off; master_process off;' 2>"$d/valgrind.$n.log" &
    local vpid=$!
    wait_port "$FRONT_PORT"
    curl -s -o /dev/null "http://127.0.0.1:$FRONT_PORT/r?[1-$n]"
    kill -QUIT "$vpid"; wait "$vpid" || true
    awk '/^summary:/ {print $2}' "$out"
}

# wrk_round NAME: prints "rps p50_ms p99_ms".
wrk_round() {
    local d=$work/$1
    "$NGINX" -p "$d" -c conf/nginx.conf
    wait_port "$FRONT_PORT"
    wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "http://127.0.0.1:$FRONT_PORT/" >"$d/wrk.out"
    "$NGINX" -p "$d" -c conf/nginx.conf -s quit; sleep 0.5
    awk '/Requests\/sec/ {rps=$2}
         /^ +50%/ {p50=$2} /^ +99%/ {p99=$2}
         function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /s$/) return v*1000; return v }
         END {printf "%.0f %.3f %.3f\n", rps, ms(p50), ms(p99)}' "$d/wrk.out"
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

row() { printf '| %-7s | %-38s | %9s | %8s | %7s | %7s |\n' "$@"; }

declare -A IPR
# compare SCEN NPEERS STOCK_BAL STOCK_CACHE LB_BAL LB_CACHE
compare() {
    start_backend "$2"
    front_conf "$1-stock" "$2" "$3" "$4"
    front_conf "$1-lb" "$2" "$5" "$6"
    measure "$@"
}

# tls2: HTTPS to 2 peers, no connection cache: every request makes a new TLS connection, which
# resumes the peer's last session (proxy_ssl_session_reuse, on by default). Fewer requests:
# handshakes are slow under valgrind.
tls2() {
    local N1=${TLS_N1:-200} N2=${TLS_N2:-400} v
    start_backend 2 ssl
    for v in stock lb; do
        front_conf "tls2-$v" 2 "$([ $v = lb ] && echo 'lb_upstream;')" ""
        sed -i 's|proxy_pass http://backend;|proxy_pass https://backend;|' "$work/tls2-$v/conf/nginx.conf"
    done
    measure tls2 2 "" "(https, no cache)" "lb_upstream;" "(https, no cache)"
}

# measure SCEN NPEERS STOCK_BAL STOCK_CACHE LB_BAL LB_CACHE: the rows for configurations
# already written.
measure() {
    local scen=$1 v
    for v in stock lb; do
        local i1 i2
        i1=$(instructions "$scen-$v" "$N1"); i2=$(instructions "$scen-$v" "$N2")
        IPR[$scen-$v]=$(( (i2 - i1) / (N2 - N1) ))
        : >"$work/$scen-$v/rounds"
    done
    local r
    for ((r = 0; r < ROUNDS; r++)); do
        for v in stock lb; do wrk_round "$scen-$v" >>"$work/$scen-$v/rounds"; done
    done
    for v in stock lb; do
        local label
        if [ $v = stock ]; then label="stock: ${3:-round_robin} ${4}"; else label="ours: $5 $6"; fi
        row "$scen" "$label" "${IPR[$scen-$v]}" \
            "$(cut -d' ' -f1 "$work/$scen-$v/rounds" | median)" \
            "$(cut -d' ' -f2 "$work/$scen-$v/rounds" | median)" \
            "$(cut -d' ' -f3 "$work/$scen-$v/rounds" | median)"
    done
    row "$scen" "ratio ours/stock (instructions)" \
        "$(awk -v a="${IPR[$scen-lb]}" -v b="${IPR[$scen-stock]}" 'BEGIN {printf "%.3f", a/b}')" "" "" ""
}

# slow: share of the slow peer per method, under wrk load with 32 connections.
slow() {
    start_backend 2
    exec {slow_in}< <(sleep 100000 2>/dev/null)
    python3 "$root/scripts/bench/slow_backend.py" "$SLOW_PORT" 20 <&"$slow_in" &
    slow_pid=$!
    sleep 0.5
    local variant bal cache name
    for variant in "stock|round_robin||keepalive 64;" "stock|least_conn|least_conn;|keepalive 64;" \
        "lb|round_robin|lb_upstream;|lb_keepalive 16;" "lb|least_conn|lb_upstream least_conn;|lb_keepalive 16;" \
        "lb|p2c|lb_upstream p2c;|lb_keepalive 16;"; do
        IFS='|' read -r who method bal cache <<<"$variant"
        name=slow-$who-$method
        front_conf "$name" 2 "$bal" "$cache"
        sed -i "s|^\\(        server 127.0.0.1:$((BACKEND_BASE + 1));\\)|\\1\\n        server 127.0.0.1:$SLOW_PORT;|" "$work/$name/conf/nginx.conf"
        [ "$who" = lb ] && sed -i "s|^worker_processes 1;|worker_processes 1;|; s|location / {|location /status { lb_status; }\\n        location / {|" "$work/$name/conf/nginx.conf"
        "$NGINX" -p "$work/$name" -c conf/nginx.conf
        wait_port "$FRONT_PORT"
        # Counts per thread; done() runs in another Lua state and reads them via the threads.
        cat >"$work/$name/count.lua" <<'LUA'
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) slow = 0; total = 0 end
function response(status, headers, body)
    total = total + 1
    if body == "slow" then slow = slow + 1 end
end
function done(summary, latency, requests)
    local s, t = 0, 0
    for _, th in ipairs(threads) do s = s + th:get("slow"); t = t + th:get("total") end
    io.write(string.format("SHARE %d %d\n", s, t))
end
LUA
        wrk -t1 -c32 -d"${DURATION}s" -s "$work/$name/count.lua" "http://127.0.0.1:$FRONT_PORT/" >"$work/$name/wrk.out" 2>&1 || true
        "$NGINX" -p "$work/$name" -c conf/nginx.conf -s quit; sleep 0.5
        local s t
        read -r _ s t < <(grep '^SHARE' "$work/$name/wrk.out")
        row slow "$who: $method (slow peer's share)" "" \
            "$(awk -v s="$s" -v t="$t" 'BEGIN {printf "%.1f%%", t ? 100*s/t : 0}')" "" ""
    done
    kill "$slow_pid" 2>/dev/null || true
}

# checks1000: the workers' CPU time while probing 1,000 peers every second, with the probe
# connections kept open between probes (the default) and with keepalive=off (a new connection
# per probe). The backend uses nginx's default keepalive_timeout and keepalive_requests.
checks1000() {
    local ka type=${1:-http}
    start_backend 1000 "$([ "$type" = https ] && echo ssl)"
    sed -i '/keepalive_requests 1000000;/d; /keepalive_timeout 300s;/d' "$work/backend/conf/nginx.conf"
    "$NGINX" -p "$work/backend" -c conf/nginx.conf -s reload; sleep 1
    for ka in on off; do checks1000_run "$ka" "$type"; done
}

checks1000_run() {
    local ka=$1 type=$2 secs=${CHECK_SECONDS:-30} name d
    name=checks1000-$ka
    [ "$type" = https ] && name=checks1000tls-$ka
    front_conf "$name" 1000 "lb_upstream; lb_check type=$type interval=1s timeout=500ms uri=/ keepalive=$ka;" ""
    d=$work/$name
    sed -i 's/^worker_processes 1;/worker_processes 2;/; s/^error_log logs\/error.log error;/error_log logs\/error.log warn;/' "$d/conf/nginx.conf"
    "$NGINX" -p "$d" -c conf/nginx.conf
    wait_port "$FRONT_PORT"
    sleep 3
    local master workers u0=0 s0=0 u1=0 s1=0 hz p
    master=$(cat "$d/logs/nginx.pid")
    workers=$(pgrep -P "$master")
    hz=$(getconf CLK_TCK)
    for p in $workers; do
        u0=$((u0 + $(awk '{print $14}' "/proc/$p/stat"))); s0=$((s0 + $(awk '{print $15}' "/proc/$p/stat")))
    done
    sleep "$secs"
    for p in $workers; do
        u1=$((u1 + $(awk '{print $14}' "/proc/$p/stat"))); s1=$((s1 + $(awk '{print $15}' "/proc/$p/stat")))
    done
    local downs held=""
    downs=$(grep -c "is down after" "$d/logs/error.log" || true)
    # Connections to the peers open at the end (kept probe connections: one per peer expected).
    if command -v ss >/dev/null; then
        held=", $(ss -Htn state established "( dport >= :$BACKEND_BASE and dport < :$((BACKEND_BASE + 1000)) )" | wc -l) connections to peers open"
    fi
    "$NGINX" -p "$d" -c conf/nginx.conf -s quit
    # the next run reuses the front port
    for ((p = 0; p < 50; p++)); do [ -f "$d/logs/nginx.pid" ] || break; sleep 0.1; done
    row "$name" "1,000 peers, $type checks every 1s, keepalive=$ka, 2 workers" "" \
        "$(awk -v u=$((u1 - u0)) -v k=$((s1 - s0)) -v hz="$hz" -v s="$secs" \
            'BEGIN {printf "%.2f%% of one core (user %.2f%%, kernel %.2f%%)", 100 * (u + k) / hz / s, 100 * u / hz / s, 100 * k / hz / s}')$held" "" ""
    [ "$downs" = 0 ] || say "warning: $downs peers went down during $name"
}

scenarios=("$@"); [ ${#scenarios[@]} -gt 0 ] || scenarios=(rr2 tls2 rr100 rr1000 lc2 lc1000 slow checks1000)
say "instructions/request = slope between $N1 and $N2 requests (cachegrind, one worker); wrk: median of $ROUNDS rounds of ${DURATION}s, $CONNS connections"
row scenario configuration "instr/req" "req/s" "p50 ms" "p99 ms"
row "-------" "--------------------------------------" "---------" "--------" "-------" "-------"
for s in "${scenarios[@]}"; do
    case $s in
        rr2) compare rr2 2 "" "keepalive 64;" "lb_upstream;" "keepalive 64;" ;;
        tls2) tls2 ;;
        rr100) compare rr100 100 "" "keepalive 200;" "lb_upstream;" "lb_keepalive 2;" ;;
        rr1000) compare rr1000 1000 "" "keepalive 2000;" "lb_upstream;" "lb_keepalive 2;" ;;
        lc2) compare lc2 2 "least_conn;" "keepalive 64;" "lb_upstream least_conn;" "lb_keepalive 32;" ;;
        lc1000) compare lc1000 1000 "least_conn;" "keepalive 2000;" "lb_upstream least_conn;" "lb_keepalive 2;" ;;
        slow) slow ;;
        checks1000) checks1000 http ;;
        checks1000tls) checks1000 https ;;
        *) die "unknown scenario $s" ;;
    esac
done
if [ -n "${IPR[rr2-lb]:-}" ] && [ -n "${IPR[rr1000-lb]:-}" ]; then
    say "ours at 1,000 peers / ours at 2 peers: $(awk -v a="${IPR[rr1000-lb]}" -v b="${IPR[rr2-lb]}" 'BEGIN {printf "%.3f", a/b}') (target <= 1.2)"
fi
say "targets: instructions ours/stock <= 1.01 at 2 peers, <= 0.5 at 1,000 peers; slow peer under 20% with least_conn and p2c; checks of 1,000 peers < 5% of one core"
