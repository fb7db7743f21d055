#!/usr/bin/env bash
# End-to-end benchmark: the same frontend configuration once with stock nginx round-robin and
# once with `lb_upstream`, measured in the same run.
#
# Two figures per scenario, because wall-clock numbers on a shared machine wander by 10-20%:
#  - user-space instructions per request: the frontend runs with `master_process off` under
#    `valgrind --tool=cachegrind --cache-sim=no`; the slope between N1 and N2 requests sent on one
#    keep-alive client connection (start-up and shutdown cancel out). Repeats to < 0.1%.
#  - requests/s, p50 and p99 latency from wrk, median of alternated rounds.
#
# Usage: scripts/bench.sh [scenario...]   scenarios: rr2 (default)
# Environment: N1=2000 N2=4000 ROUNDS=3 DURATION=5 (seconds per wrk round) CONNS=16
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
. scripts/lib/common.sh

need_packages valgrind wrk curl
[ -x build/sbin/nginx ] && [ -f build/modules/ngx_http_lb_module.so ] || scripts/build.sh

N1=${N1:-2000} N2=${N2:-4000} ROUNDS=${ROUNDS:-3} DURATION=${DURATION:-5} CONNS=${CONNS:-16}
NGINX=$root/build/sbin/nginx
MODULE=$root/build/modules/ngx_http_lb_module.so
work=$root/build/bench
rm -rf "$work"; mkdir -p "$work"
BACKEND_BASE=${BACKEND_BASE:-19100}
FRONT_PORT=${FRONT_PORT:-19080}

cleanup() {
    for d in "$work"/*/; do
        [ -f "$d/logs/nginx.pid" ] && kill "$(cat "$d/logs/nginx.pid")" 2>/dev/null || true
    done
}
trap cleanup EXIT

# start_backend NPEERS: one local nginx listening on NPEERS ports, answering "ok".
start_backend() {
    local n=$1 d=$work/backend listens="" i
    mkdir -p "$d/conf" "$d/logs"
    for ((i = 0; i < n; i++)); do listens+="        listen 127.0.0.1:$((BACKEND_BASE + i)) reuseport;"$'\n'; done
    cat >"$d/conf/nginx.conf" <<CONF
worker_processes 1;
pid logs/nginx.pid;
error_log logs/error.log error;
worker_rlimit_nofile 65536;
events { worker_connections 16384; }
http {
    access_log off;
    keepalive_requests 1000000;
    server {
$listens        location / { return 200 "ok"; }
    }
}
CONF
    "$NGINX" -p "$d" -c conf/nginx.conf
}

# front_conf NAME NPEERS METHOD: writes a frontend config; METHOD is "stock" or "lb".
front_conf() {
    local name=$1 n=$2 method=$3 d=$work/$1 servers="" i load="" lb=""
    mkdir -p "$d/conf" "$d/logs"
    for ((i = 0; i < n; i++)); do servers+="        server 127.0.0.1:$((BACKEND_BASE + i));"$'\n'; done
    if [ "$method" = lb ]; then
        load="load_module $MODULE;"
        lb="        lb_upstream;"
    fi
    cat >"$d/conf/nginx.conf" <<CONF
$load
worker_processes 1;
pid logs/nginx.pid;
error_log logs/error.log error;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    upstream backend {
$lb
$servers        keepalive 64;
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
    for ((i = 0; i < 200; i++)); do
        curl -s -o /dev/null "http://127.0.0.1:$1/" && return 0
        sleep 0.05
    done
    die "nothing answers on port $1"
}

# instructions NAME N: user-space instructions of the frontend serving N requests on one
# keep-alive connection, start to exit.
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
    "$NGINX" -p "$d" -c conf/nginx.conf -s quit; sleep 0.3
    awk '/Requests\/sec/ {rps=$2}
         /^ +50%/ {p50=$2} /^ +99%/ {p99=$2}
         function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /s$/) return v*1000; return v }
         END {printf "%.0f %.3f %.3f\n", rps, ms(p50), ms(p99)}' "$d/wrk.out"
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

run_scenario() {
    local scen=$1 n
    case $scen in
        rr2) n=2 ;;
        *) die "unknown scenario $scen" ;;
    esac
    start_backend "$n"
    front_conf stock "$n" stock
    front_conf lb "$n" lb
    declare -A ipr rps p50 p99
    for v in stock lb; do
        local i1 i2
        i1=$(instructions "$v" "$N1"); i2=$(instructions "$v" "$N2")
        ipr[$v]=$(( (i2 - i1) / (N2 - N1) ))
    done
    for v in stock lb; do : >"$work/$v/rounds"; done
    for ((r = 0; r < ROUNDS; r++)); do
        for v in stock lb; do wrk_round "$v" >>"$work/$v/rounds"; done
    done
    for v in stock lb; do
        rps[$v]=$(cut -d' ' -f1 "$work/$v/rounds" | median)
        p50[$v]=$(cut -d' ' -f2 "$work/$v/rounds" | median)
        p99[$v]=$(cut -d' ' -f3 "$work/$v/rounds" | median)
    done
    kill "$(cat "$work/backend/logs/nginx.pid")" 2>/dev/null || true; sleep 0.3
    printf '| %-10s | %-6s | %10s | %9s | %8s | %8s |\n' "$scen" stock "${ipr[stock]}" "${rps[stock]}" "${p50[stock]}" "${p99[stock]}"
    printf '| %-10s | %-6s | %10s | %9s | %8s | %8s |\n' "$scen" lb "${ipr[lb]}" "${rps[lb]}" "${p50[lb]}" "${p99[lb]}"
    awk -v a="${ipr[lb]}" -v b="${ipr[stock]}" -v c="${rps[lb]}" -v d="${rps[stock]}" -v s="$scen" \
        'BEGIN {printf "| %-10s | ratio  | %10.3f | %9.3f | %8s | %8s |\n", s, a/b, c/d, "", ""}'
}

scenarios=("$@"); [ ${#scenarios[@]} -gt 0 ] || scenarios=(rr2)
say "instructions/request = slope between $N1 and $N2 requests (cachegrind); wrk: median of $ROUNDS rounds of ${DURATION}s, $CONNS connections"
printf '| %-10s | %-6s | %10s | %9s | %8s | %8s |\n' scenario nginx "instr/req" "req/s" "p50 ms" "p99 ms"
printf '|%s|\n' "------------|--------|------------|-----------|----------|----------"
for s in "${scenarios[@]}"; do run_scenario "$s"; done
