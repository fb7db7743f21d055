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
#   rr2recover  rr2 with ours only: lb_upstream alone vs lb_upstream + lb_outlier + lb_panic 50%
#           + lb_slow_start 30s
#           (the response-time histograms are always on): what the recovery features cost
#   outlier 4 peers, two frontend workers, wrk -c16 for OUTLIER_SECONDS (4): one peer starts
#           answering 500 after a second; failed client requests with stock round-robin and with
#           lb_outlier consecutive_5xx=5 (target: at most 5 x 2 workers)
#   slowstart  2 peers, lb_slow_start 4s, two workers: one peer's checks fail, then pass again;
#           its share in each of the next five seconds under wrk load (-c16), per method
#   rr2zone the same with `zone` in the upstream (our upstream can then gain peers through
#           lb_api: each request holds its set of peers, a reference count)
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
#   stream2, stream1000  TCP: a stream {} frontend over 2 and 1,000 stream peers (a stream
#           server per port answering "ok" and closing), stock stream round-robin vs
#           lb_upstream: user-space instructions per TCP connection proxied (slope between
#           STREAM_N1=2000 and STREAM_N2=6000 connections made one after another by
#           scripts/bench/tcp_conns.py; the median of STREAM_ROUNDS=3 rounds, as the event
#           loop's wake-ups per connection vary by ~100 instructions from run to run; a line
#           per variant also gives the slopes and the instructions in the balancer's own
#           functions), and connections/s of that client (one at a time, so mostly the
#           client's and the kernel's time). Targets: <= 1.01 at 2, <= 0.5 at 1,000
#   stream2zone  as stream2, stock with `zone` (peers' state shared by the workers, as ours
#           always is); not in the default set
#   checks1000stream  as checks1000 for a stream upstream: 1,000 peers, lb_check type=tcp
#           interval=1s, two workers (a connect and a reset per probe)
#   resolve1000  1,000 addresses behind one name (`server backend.test:PORT resolve`, nginx's
#           resolver asking t/dns.py with `valid=1s`, so nginx asks again every ~2 s and each
#           answer brings ~2 addresses out, ~2 in), one address replaced every second
#           (scripts/bench/resolve_churn.py; one backend on every 127.x address): stock (zone,
#           keepalive 2000) vs lb_upstream max_resolved=1250 + lb_keepalive 2. Runs under
#           callgrind instead of cachegrind (the same instruction counts, but per function):
#           instructions per request without the DNS and change handling (slope between N1
#           and N2 requests, each run RESOLVE_SECONDS=12 long from counters zeroed once the
#           name has resolved; the change handling is counted apart, so that it does not swamp
#           the slope), and that handling: nginx's resolver and its zone handler per answer
#           (both), lb_upstream's `resolve::apply` per change applied and per address that
#           joined or left; wrk with the addresses changing. About 1.5 minutes
#   (default: rr2 rr2zone tls2 rr100 rr1000 lc2 lc1000 slow checks1000 resolve1000 stream2
#   stream1000 checks1000stream)
#   By hand only (long, not in the default set):
#   scale   one upstream of N peers (SCALE_PEERS="10000 100000"; addresses 127.A.B.C spread
#           over 127.0.0.0/8 on SCALE_PORTS=4 ports from BACKEND_BASE, one backend listening on
#           every address), stock (server lines + keepalive 64) vs ours (lb_upstream;
#           lb_keepalive 64; lb_check type=tcp interval=10m;), one worker unless said:
#           - worker RSS (VmRSS, RssAnon, RssShmem) SCALE_SETTLE=3 s after start, and
#             (ours - stock) / N bytes per peer (target <= 512);
#           - `nginx -t`, median of 3 (target ours/stock <= 1.5);
#           - reload: from running `nginx -s reload` (which parses and checks the whole
#             configuration itself before it signals the master) until a new worker has
#             answered a request and every old worker has exited; median of 3, with the
#             medians of when the command returned, a new worker first answered, the last old
#             worker exited (nginx's master waits 100 ms before it tells the old ones to quit);
#           - health-check CPU: 10,000 peers (SCALE_CHECK_PEERS), type=tcp interval=10s,
#             4 workers, no traffic: utime+stime of the workers over SCALE_CHECK_SECONDS=30 s
#             from SCALE_CHECK_SETTLE=12 s after start (the first probes are due an interval
#             after start), % of one core (target < 5%), and checks/s from lb_status;
#           - lb_status at 10,000 peers (SCALE_STATUS_PEERS): one JSON and one Prometheus
#             scrape, median of 5; p99 of `return 200` requests in the same worker (wrk -c4,
#             SCALE_WRK_SECONDS=5 s) without and with status scrapes looping in the background
#             (target: p99 at most +10 ms).
#           About 1.5 minutes at the defaults
# Environment: N1=2000 N2=4000 ROUNDS=3 DURATION=5 CONNS=16 RESOLVE_N=1000 (addresses of
# resolve1000; 2,000 works, 3,000 did not resolve even for stock nginx here);
# BENCH_NGINX=build/sbin/nginx BENCH_MODULE=build/modules/ngx_http_lb_module.so: the nginx
# and the module to measure (paths from the repository root; e.g. a copy kept aside while
# build/ is rebuilt; with either set, nothing is built); the SCALE_* variables above; ports:
# FRONT_PORT=19080 (the frontend), BACKEND_BASE=20000 (backends; scale uses SCALE_PORTS of
# them), SLOW_PORT=19999, DNS_PORT=19053
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
. scripts/lib/common.sh

need_packages valgrind wrk curl python3
NGINX=$(realpath -m "${BENCH_NGINX:-build/sbin/nginx}")
MODULE=$(realpath -m "${BENCH_MODULE:-build/modules/ngx_http_lb_module.so}")
if ! [ -x "$NGINX" ] || ! [ -f "$MODULE" ]; then
    [ -z "${BENCH_NGINX:-}${BENCH_MODULE:-}" ] || die "BENCH_NGINX=$NGINX or BENCH_MODULE=$MODULE missing"
    scripts/build.sh
fi

N1=${N1:-2000} N2=${N2:-4000} ROUNDS=${ROUNDS:-3} DURATION=${DURATION:-5} CONNS=${CONNS:-16}
RESOLVE_N=${RESOLVE_N:-1000}; RESOLVE_MAX=$((RESOLVE_N + RESOLVE_N / 4))
work=$root/build/bench
BACKEND_BASE=${BACKEND_BASE:-20000}
FRONT_PORT=${FRONT_PORT:-19080}
SLOW_PORT=${SLOW_PORT:-19999}
DNS_PORT=${DNS_PORT:-19053}

cleanup() {
    local pidfile p
    for pidfile in "$work"/*/logs/nginx.pid; do
        if [ -f "$pidfile" ]; then kill "$(cat "$pidfile")" 2>/dev/null || true; fi
    done
    for p in "${slow_pid:-}" "${dns_pid:-}" "${churn_pid:-}" "${scrape_pid:-}"; do
        if [ -n "$p" ]; then kill "$p" 2>/dev/null || true; fi
    done
    true
}
trap cleanup EXIT
rm -rf "$work"; mkdir -p "$work"
ulimit -n 65536 2>/dev/null || true

# stop_backends: the http and the stream backends (they listen on the same ports).
stop_backends() {
    local b i
    for b in backend stream-backend; do
        if [ -f "$work/$b/logs/nginx.pid" ]; then
            kill "$(cat "$work/$b/logs/nginx.pid")" 2>/dev/null || true
            for ((i = 0; i < 50; i++)); do [ -f "$work/$b/logs/nginx.pid" ] || break; sleep 0.1; done
        fi
    done
}

# start_backend NPEERS [ssl] [any]: one local nginx listening on NPEERS ports, answering "ok"
# (over TLS with "ssl", with the test certificates of t/gen-certs.sh); on 127.0.0.1, or with
# "any" on every address (all of 127.0.0.0/8).
start_backend() {
    local n=$1 ssl=${2:-} d=$work/backend listens="" i tls="" host=127.0.0.1:
    [ "${3:-}" = any ] && host=""
    stop_backends
    rm -rf "$d"; mkdir -p "$d/conf" "$d/logs"
    if [ -n "$ssl" ]; then
        local certs
        certs=$("$root/t/gen-certs.sh" "$work/certs")
        tls="        ssl_certificate $certs/localhost.crt; ssl_certificate_key $certs/localhost.key;"
        ssl=" ssl"
    fi
    for ((i = 0; i < n; i++)); do listens+="        listen $host$((BACKEND_BASE + i))$ssl;"$'\n'; done
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

# start_stream_backend NPEERS: one local nginx with a stream server on each of NPEERS ports,
# answering "ok" and closing.
start_stream_backend() {
    local n=$1 d=$work/stream-backend listens="" i
    stop_backends
    rm -rf "$d"; mkdir -p "$d/conf" "$d/logs"
    for ((i = 0; i < n; i++)); do listens+="        listen 127.0.0.1:$((BACKEND_BASE + i));"$'\n'; done
    cat >"$d/conf/nginx.conf" <<CONF
worker_processes 1;
pid logs/nginx.pid;
error_log logs/error.log error;
worker_rlimit_nofile 65536;
events { worker_connections 16384; }
stream {
    server {
$listens        return "ok";
    }
}
CONF
    "$NGINX" -p "$d" -c conf/nginx.conf
}

# stream_front NAME NPEERS BALANCING: a stream {} frontend on FRONT_PORT whose upstream has
# NPEERS peers; BALANCING is the upstream's first line(s) ("" for stock round-robin).
stream_front() {
    local name=$1 n=$2 balancing=$3 d=$work/$1 servers="" i load=""
    mkdir -p "$d/conf" "$d/logs"
    for ((i = 0; i < n; i++)); do servers+="        server 127.0.0.1:$((BACKEND_BASE + i));"$'\n'; done
    case "$balancing" in *lb_*) load="load_module $MODULE;" ;; esac
    cat >"$d/conf/nginx.conf" <<CONF
$load
worker_processes 1;
pid logs/nginx.pid;
error_log logs/error.log error;
worker_rlimit_nofile 65536;
events { worker_connections 16384; }
stream {
    upstream backend {
        $balancing
$servers    }
    server { listen 127.0.0.1:$FRONT_PORT; proxy_pass backend; }
}
CONF
}

# stream_instructions NAME N: user-space instructions of the stream frontend proxying N TCP
# connections made one after another, from start to exit.
stream_instructions() {
    local d=$work/$1 n=$2 out
    out=$d/cg.$n
    valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file="$out" \
        "$NGINX" -p "$d" -c conf/nginx.conf -g 'daemon off; master_process off;' 2>"$d/valgrind.$n.log" &
    local vpid=$!
    python3 scripts/bench/tcp_conns.py --wait "$FRONT_PORT" >/dev/null
    python3 scripts/bench/tcp_conns.py "$FRONT_PORT" "$n" >"$d/conns.$n"
    kill -QUIT "$vpid"; wait "$vpid" || true
    awk '/^summary:/ {print $2}' "$out"
}

# balancer_instructions NAME: instructions per connection or request in the balancers' own
# functions, from NAME's last two cachegrind runs (N1 and N2 of them): stock's round-robin and
# least_conn hooks and its keepalive module's (http and stream), or every function of our
# module (with nginx's keepalive module when the configuration has it). Unlike the whole
# slope, this part does not depend on how the event loop's wake-ups or the heap happened to
# fall.
balancer_instructions() {
    local d=$work/$1 n1=$2 n2=$3
    cg_diff "$d/cg.$n1" "$d/cg.$n2" >"$d/cg.diff" 2>/dev/null
    cg_annotate --threshold=0 "$d/cg.diff" 2>/dev/null | awk -v n=$((n2 - n1)) '
        /file:function/ {on = 1; next}
        on && /^-+$/ && seen {on = 0}
        on && /^ *[0-9,]+ / {
            seen = 1; c = $1; gsub(",", "", c)
            if ($0 ~ /ngx_http_lb_module::|ngx_(http|stream)_upstream_(init|get|free|notify)_(round_robin|least_conn|keepalive)_peer|ngx_(http|stream)_upstream_get_peer|ngx_rwlock_/) t += c
        }
        END {printf "%.0f", t / n}'
}

# stream_compare SCEN NPEERS: stock stream round-robin vs lb_upstream, per TCP connection:
# the median slope of STREAM_ROUNDS rounds (stock and ours in turn), as the event loop's
# wake-ups per connection vary by some 100 instructions from run to run.
stream_compare() {
    local scen=$1 n=$2 v r N1=${STREAM_N1:-2000} N2=${STREAM_N2:-6000} rounds=${STREAM_ROUNDS:-3}
    local stock_bal=${3:-}
    start_stream_backend "$n"
    stream_front "$scen-stock" "$n" "$stock_bal"
    stream_front "$scen-lb" "$n" "lb_upstream;"
    declare -A slopes=()
    for ((r = 0; r < rounds; r++)); do
        for v in stock lb; do
            local i1 i2
            i1=$(stream_instructions "$scen-$v" "$N1"); i2=$(stream_instructions "$scen-$v" "$N2")
            slopes[$v]+="$(( (i2 - i1) / (N2 - N1) )) "
        done
    done
    for v in stock lb; do
        local d=$work/$scen-$v
        IPR[$scen-$v]=$(printf '%s\n' ${slopes[$v]} | median)
        BAL[$scen-$v]=$(balancer_instructions "$scen-$v" "$N1" "$N2")
        "$NGINX" -p "$d" -c conf/nginx.conf
        python3 scripts/bench/tcp_conns.py --wait "$FRONT_PORT" >/dev/null
        python3 scripts/bench/tcp_conns.py "$FRONT_PORT" "$N2" >"$d/conns.rate"
        "$NGINX" -p "$d" -c conf/nginx.conf -s quit; sleep 0.5
        row "$scen" "$([ $v = lb ] && echo 'ours: lb_upstream;' || echo "stock: stream round_robin${stock_bal:+ + $stock_bal}")" \
            "${IPR[$scen-$v]}" "$(awk '{print $2}' "$d/conns.rate") conn/s" "" ""
        say "$scen $v: slopes ${slopes[$v]}(median ${IPR[$scen-$v]}); in the balancer's functions ${BAL[$scen-$v]}"
    done
    row "$scen" "ratio ours/stock (instructions)" \
        "$(awk -v a="${IPR[$scen-lb]}" -v b="${IPR[$scen-stock]}" 'BEGIN {printf "%.3f", a/b}')" "" "" ""
    say "$scen: the same ratio counting only the balancers' difference (${BAL[$scen-lb]} - ${BAL[$scen-stock]} instructions over stock's ${IPR[$scen-stock]}, free of the event loop's noise): $(awk -v o="${BAL[$scen-lb]}" -v t="${BAL[$scen-stock]}" -v b="${IPR[$scen-stock]}" 'BEGIN {printf "%.3f", (b + o - t) / b}')"
}

# wait_port PORT: until something answers; with WAIT_FOR_200 set, until it answers 200 (e.g.
# once a resolved name has addresses: before, the frontend answers 502).
wait_port() {
    local i code
    for ((i = 0; i < 400; i++)); do
        code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/") &&
            { [ -z "${WAIT_FOR_200:-}" ] || [ "$code" = 200 ]; } && return 0
        sleep 0.05
    done
    die "nothing answers${WAIT_FOR_200:+ 200} on port $1"
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

declare -A IPR BAL
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
    # A baseline that is the module itself (rr2recover) is not "stock".
    local base=stock
    case "$3" in *lb_upstream*) base=base ;; esac
    for v in stock lb; do
        local label
        if [ $v = stock ]; then label="$base: ${3:-round_robin} ${4}"; else label="ours: $5 $6"; fi
        row "$scen" "$label" "${IPR[$scen-$v]}" \
            "$(cut -d' ' -f1 "$work/$scen-$v/rounds" | median)" \
            "$(cut -d' ' -f2 "$work/$scen-$v/rounds" | median)" \
            "$(cut -d' ' -f3 "$work/$scen-$v/rounds" | median)"
    done
    row "$scen" "ratio ours/$base (instructions)" \
        "$(awk -v a="${IPR[$scen-lb]}" -v b="${IPR[$scen-stock]}" 'BEGIN {printf "%.3f", a/b}')" "" "" ""
    for v in stock lb; do BAL[$scen-$v]=$(balancer_instructions "$scen-$v" "$N1" "$N2"); done
    say "$scen: in the balancers' functions ${BAL[$scen-lb]} (ours) vs ${BAL[$scen-stock]} ($base) per request; the ratio counting only that difference over $base's ${IPR[$scen-stock]}: $(awk -v o="${BAL[$scen-lb]}" -v t="${BAL[$scen-stock]}" -v b="${IPR[$scen-stock]}" 'BEGIN {printf "%.3f", (b + o - t) / b}')"
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

# outlier: a peer that starts answering 500 under load; the client requests that fail.
outlier() {
    local secs=${OUTLIER_SECONDS:-4} v name flags=$work/outlier-flags bad
    start_backend 4
    rm -rf "$flags"; mkdir -p "$flags"; chmod 755 "$flags"
    sed -i "s|location / { return 200 \"ok\"; }|location / { if (-f $flags/bad_\$server_port) { return 500; } return 200 \"ok\"; }|" \
        "$work/backend/conf/nginx.conf"
    "$NGINX" -p "$work/backend" -c conf/nginx.conf -s reload; sleep 0.5
    bad=$flags/bad_$((BACKEND_BASE + 1))
    for v in "stock|round_robin||keepalive 64;" "lb|lb_outlier consecutive_5xx=5|lb_upstream; lb_outlier consecutive_5xx=5;|keepalive 64;"; do
        local who method bal cache
        IFS='|' read -r who method bal cache <<<"$v"
        name=outlier-$who
        rm -f "$bad"
        front_conf "$name" 4 "$bal" "$cache"
        sed -i 's/^worker_processes 1;/worker_processes 2;/' "$work/$name/conf/nginx.conf"
        "$NGINX" -p "$work/$name" -c conf/nginx.conf
        wait_port "$FRONT_PORT"
        wrk -t2 -c16 -d"${secs}s" "http://127.0.0.1:$FRONT_PORT/" >"$work/$name/wrk.out" 2>&1 &
        local wrk_pid=$!
        sleep 1; touch "$bad"
        wait "$wrk_pid" || true
        "$NGINX" -p "$work/$name" -c conf/nginx.conf -s quit; sleep 0.5
        local failed total
        failed=$(awk '/Non-2xx or 3xx responses:/ {print $NF}' "$work/$name/wrk.out"); failed=${failed:-0}
        total=$(awk '/requests in/ {print $1}' "$work/$name/wrk.out")
        row outlier "$who: $method (failed of $total)" "" "$failed" "" ""
    done
    rm -f "$bad"
}

# slowstart: a peer whose checks pass again, and its share per second while it ramps up.
slowstart() {
    local flags=$work/slowstart-flags method name sick
    start_backend 2
    rm -rf "$flags"; mkdir -p "$flags"; chmod 755 "$flags"
    sed -i "s|location / { return 200 \"ok\"; }|location /health { if (-f $flags/sick_\$server_port) { return 500; } return 200; } location / { return 200 \"\$server_port\"; }|" \
        "$work/backend/conf/nginx.conf"
    "$NGINX" -p "$work/backend" -c conf/nginx.conf -s reload; sleep 0.5
    sick=$flags/sick_$((BACKEND_BASE + 1))
    for method in round_robin least_conn; do
        name=slowstart-$method
        rm -f "$sick"
        front_conf "$name" 2 "lb_upstream $method; lb_slow_start 4s; lb_check type=http uri=/health interval=100ms timeout=100ms rise=1 fall=1;" "keepalive 64;"
        sed -i 's/^worker_processes 1;/worker_processes 2;/' "$work/$name/conf/nginx.conf"
        "$NGINX" -p "$work/$name" -c conf/nginx.conf
        wait_port "$FRONT_PORT"
        sleep 0.5; touch "$sick"; sleep 0.5; rm -f "$sick"; sleep 0.3
        cat >"$work/$name/count.lua" <<LUA
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) hit = 0; total = 0 end
function response(status, headers, body)
    total = total + 1
    if body == "$((BACKEND_BASE + 1))" then hit = hit + 1 end
end
function done(summary, latency, requests)
    local h, t = 0, 0
    for _, th in ipairs(threads) do h = h + th:get("hit"); t = t + th:get("total") end
    io.write(string.format("SHARE %d %d\n", h, t))
end
LUA
        local shares="" sec h t
        for sec in 1 2 3 4 5; do
            wrk -t2 -c16 -d1s -s "$work/$name/count.lua" "http://127.0.0.1:$FRONT_PORT/" >"$work/$name/wrk.$sec" 2>&1 || true
            read -r _ h t < <(grep '^SHARE' "$work/$name/wrk.$sec")
            shares+="$(awk -v h="$h" -v t="$t" 'BEGIN {printf "%.0f%%", t ? 100*h/t : 0}') "
        done
        "$NGINX" -p "$work/$name" -c conf/nginx.conf -s quit; sleep 0.5
        row slowstart "ours: $method, seconds 1-5 after checks pass" "" "$shares" "" ""
    done
    rm -f "$sick"
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
    if [ "$type" = stream ]; then
        name=checks1000stream
        stream_front "$name" 1000 "lb_upstream; lb_check type=tcp interval=1s timeout=500ms;"
    else
        front_conf "$name" 1000 "lb_upstream; lb_check type=$type interval=1s timeout=500ms uri=/ keepalive=$ka;" ""
    fi
    d=$work/$name
    sed -i 's/^worker_processes 1;/worker_processes 2;/; s/^error_log logs\/error.log error;/error_log logs\/error.log warn;/' "$d/conf/nginx.conf"
    "$NGINX" -p "$d" -c conf/nginx.conf
    if [ "$type" = stream ]; then
        python3 scripts/bench/tcp_conns.py --wait "$FRONT_PORT" >/dev/null
    else
        wait_port "$FRONT_PORT"
    fi
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
    local what="$type checks every 1s, keepalive=$ka"
    [ "$type" = stream ] && what="stream tcp checks every 1s"
    row "$name" "1,000 peers, $what, 2 workers" "" \
        "$(awk -v u=$((u1 - u0)) -v k=$((s1 - s0)) -v hz="$hz" -v s="$secs" \
            'BEGIN {printf "%.2f%% of one core (user %.2f%%, kernel %.2f%%)", 100 * (u + k) / hz / s, 100 * u / hz / s, 100 * k / hz / s}')$held" "" ""
    [ "$downs" = 0 ] || say "warning: $downs peers went down during $name"
    if [ "$type" = stream ]; then
        # What the kernel alone costs for the same connects and resets, from one process
        # (scripts/bench/connect_floor.py): the floor of any connect-based checker here.
        local fr fu fk
        read -r fr fu fk < <(scripts/bench/connect_floor.py 1000 "$BACKEND_BASE" 1000 1000 "$secs" 127.0.0.1)
        row "$name" "kernel floor: the same connects, no nginx" "" \
            "$fr probes/s: kernel ${fk}% of one core (+ python's user ${fu}%)" "" ""
    fi
}

# resolve1000: 1,000 addresses behind one name, one of them replaced every second.
# The DNS and change handling of one run, by function (LABEL=REGEX for callgrind_calls.py):
# nginx's resolver reading answers (the zone handler runs inside) and sending queries, and our
# `resolve::apply` (from our poll timer or a request; Members::new runs inside).
RESOLVE_FUNCS=('read=^ngx_resolver_(udp|tcp)_read$' 'write=^ngx_resolver_tcp_write$'
    'timer=^ngx_http_upstream_zone_resolve_timer$' 'resend=^ngx_resolver_resend_handler$'
    'apply=shell::resolve::apply$' 'zone=^ngx_http_upstream_zone_resolve_handler$'
    'copy=shell::resolve::read_list$' 'plan=membership::plan$'
    'follow=shell::table::Members::follow$' 'rebuild=shell::table::Members::new$')
resolve1000() {
    local d=$work/resolve1000 v WAIT_FOR_200=1 secs=${RESOLVE_SECONDS:-12} lifetime
    local n=$RESOLVE_N pool=$((RESOLVE_N * 11 / 10))
    mkdir -p "$d"
    # The backend answers on every 127.x address at one port.
    start_backend 1 "" any
    # The churn runs for the whole scenario: 4 callgrind runs, the wrk rounds, start-ups.
    lifetime=$((4 * (secs + 30) + 2 * ROUNDS * (DURATION + 10) + 60))
    python3 "$root/scripts/bench/resolve_churn.py" "$d/answers.json" backend.test "$n" "$pool" 1 --once
    python3 "$root/t/dns.py" --no-stdin --lifetime "$lifetime" "$DNS_PORT" "$d/answers.json" \
        >"$d/dns.out" 2>&1 &
    dns_pid=$!
    python3 "$root/scripts/bench/resolve_churn.py" "$d/answers.json" backend.test "$n" "$pool" 1 \
        "$lifetime" &
    churn_pid=$!
    local servers="zone backend $((n / 500 + 1))m;
        server backend.test:$BACKEND_BASE resolve;"
    front_conf resolve1000-stock 0 "$servers" "keepalive 2000;"
    front_conf resolve1000-lb 0 "lb_upstream max_resolved=$RESOLVE_MAX;
        $servers" "lb_keepalive 2;"
    for v in stock lb; do
        sed -i "s|^    keepalive_requests 1000000;|&\\n    resolver 127.0.0.1:$DNS_PORT valid=1s;|;
                s|^error_log logs/error.log error;|error_log logs/error.log notice;|" \
            "$work/resolve1000-$v/conf/nginx.conf"
    done
    local n r
    for v in stock lb; do
        for n in "$N1" "$N2"; do
            resolve_run "resolve1000-$v" "$n" "$secs" >"$work/resolve1000-$v/run.$n"
        done
        : >"$work/resolve1000-$v/rounds"
    done
    for ((r = 0; r < ROUNDS; r++)); do
        for v in stock lb; do wrk_round "resolve1000-$v" >>"$work/resolve1000-$v/rounds"; done
    done
    kill "$churn_pid" "$dns_pid" 2>/dev/null || true
    resolve_report "$secs"
}

# resolve_run NAME N SECONDS: one callgrind run of the frontend (master_process off). Once it
# answers 200 (the name has resolved), the counters are zeroed and N requests are sent on one
# keep-alive connection; the run ends SECONDS after the zeroing, so that runs with different N
# see about as many DNS answers. Prints callgrind_calls.py's lines for RESOLVE_FUNCS ("LABEL
# CALLS INSTRUCTIONS"), then "changes K 0" (addresses that joined or left: our notice lines)
# and "failed F 0" (requests not answered 200).
resolve_run() {
    local d=$work/$1 n=$2 secs=$3 out t0 c0 c1 ok
    out=$d/callgrind.$n
    : >"$d/logs/error.log"
    valgrind --tool=callgrind --callgrind-out-file="$out" \
        "$NGINX" -p "$d" -c conf/nginx.conf -g 'daemon off; master_process off;' 2>"$d/valgrind.$n.log" &
    local vpid=$!
    wait_port "$FRONT_PORT"
    callgrind_control -z "$vpid" >/dev/null 2>&1
    t0=$(date +%s%N)
    c0=$(grep -cE '\) (joined|left)$' "$d/logs/error.log" || true)
    ok=$(curl -s -o /dev/null -w '%{http_code}\n' "http://127.0.0.1:$FRONT_PORT/r?[1-$n]" | grep -c '^200$' || true)
    sleep "$(awk -v t0="$t0" -v now="$(date +%s%N)" -v s="$secs" 'BEGIN {r = s - (now - t0) / 1e9; print (r > 0) ? r : 0}')"
    c1=$(grep -cE '\) (joined|left)$' "$d/logs/error.log" || true)
    kill -QUIT "$vpid"; wait "$vpid" || true
    { grep -E 'ignored|memory exhausted|could not be resolved' "$d/logs/error.log" || true; } |
        head -3 | while read -r l; do say "warning: $1: $l"; done
    python3 "$root/scripts/bench/callgrind_calls.py" "$out" "${RESOLVE_FUNCS[@]}"
    echo "changes $((c1 - c0)) 0"
    echo "failed $((n - ok)) 0"
}

# resolve_report SECONDS: the rows of resolve1000 from the runs' figures.
resolve_report() {
    local secs=$1 v n k calls ir
    local -A C I
    for v in stock lb; do
        for n in "$N1" "$N2"; do
            while read -r k calls ir; do
                [ "$k" = total ] && ir=$calls calls=1
                C[$v.$n.$k]=$calls I[$v.$n.$k]=$ir
                # Both runs of a configuration together, for the per-event costs.
                C[$v.$k]=$((${C[$v.$k]:-0} + calls)) I[$v.$k]=$((${I[$v.$k]:-0} + ir))
            done <"$work/resolve1000-$v/run.$n"
            [ "${C[$v.$n.failed]}" = 0 ] ||
                say "warning: resolve1000-$v: ${C[$v.$n.failed]} of $n requests not answered 200"
            # Instructions outside the DNS and change handling.
            I[$v.$n.rest]=$((I[$v.$n.total] - I[$v.$n.read] - I[$v.$n.write] - I[$v.$n.timer] - I[$v.$n.resend] - I[$v.$n.apply]))
        done
        IPR[resolve1000-$v]=$(((I[$v.$N2.rest] - I[$v.$N1.rest]) / (N2 - N1)))
    done
    local label
    for v in stock lb; do
        if [ $v = stock ]; then label="stock: zone, resolve; keepalive 2000;"; else label="ours: lb_upstream max_resolved=$RESOLVE_MAX; lb_keepalive 2;"; fi
        row resolve1000 "$label" "${IPR[resolve1000-$v]}" \
            "$(cut -d' ' -f1 "$work/resolve1000-$v/rounds" | median)" \
            "$(cut -d' ' -f2 "$work/resolve1000-$v/rounds" | median)" \
            "$(cut -d' ' -f3 "$work/resolve1000-$v/rounds" | median)"
    done
    row resolve1000 "ratio ours/stock (instructions)" \
        "$(awk -v a="${IPR[resolve1000-lb]}" -v b="${IPR[resolve1000-stock]}" 'BEGIN {printf "%.3f", a/b}')" "" "" ""
    div() { awk -v a="$1" -v b="$2" 'BEGIN {if (b) printf "%.0f", a / b; else print "-"}'; }
    row resolve1000 "stock: nginx reads an answer (instr)" "$(div "${I[stock.read]}" "${C[stock.zone]}")" "" "" ""
    row resolve1000 "stock: of which zone handler (instr)" "$(div "${I[stock.zone]}" "${C[stock.zone]}")" "" "" ""
    row resolve1000 "ours: nginx reads an answer (instr)" "$(div "${I[lb.read]}" "${C[lb.zone]}")" "" "" ""
    row resolve1000 "ours: of which zone handler (instr)" "$(div "${I[lb.zone]}" "${C[lb.zone]}")" "" "" ""
    row resolve1000 "ours: resolve::apply, per change (instr)" "$(div "${I[lb.apply]}" "${C[lb.apply]}")" "" "" ""
    row resolve1000 "ours: of which copying nginx's list" "$(div "${I[lb.copy]}" "${C[lb.apply]}")" "" "" ""
    row resolve1000 "ours: of which the plan (who stays)" "$(div "${I[lb.plan]}" "${C[lb.apply]}")" "" "" ""
    row resolve1000 "ours: of which the new snapshot" "$(div "$(( ${I[lb.follow]:-0} + ${I[lb.rebuild]:-0} ))" "${C[lb.apply]}")" "" "" ""
    row resolve1000 "ours: apply per address joined/left" "$(div "${I[lb.apply]}" "${C[lb.changes]}")" "" "" ""
    say "resolve1000: in 2 runs of ${secs}s each, ours read ${C[lb.zone]} answers, applied ${C[lb.apply]} changes," \
        "${C[lb.changes]} addresses joined or left; one change costs ours as much as" \
        "$(div "$(div "${I[lb.apply]}" "${C[lb.apply]}")" "${IPR[resolve1000-lb]}") requests;" \
        "stock's zone handler, one answer as much as" \
        "$(div "$(div "${I[stock.zone]}" "${C[stock.zone]}")" "${IPR[resolve1000-stock]}") of its requests"
}

# scale: one upstream of many peers (see the usage comment at the top).
SCALE_PORTS=${SCALE_PORTS:-4}

# thousands N: 100000 -> 100,000
thousands() { printf '%s' "$1" | sed ':a; s/\B[0-9]\{3\}\>/,&/; ta'; }

# scale_conf NAME NPEERS WORKERS BALANCING CACHE: a frontend on FRONT_PORT with one upstream of
# NPEERS peers 127.A.B.C:PORT (A fastest, each of A, B, C in 1-250: the whole 127.0.0.0/8, no
# network or broadcast address) on SCALE_PORTS ports from BACKEND_BASE; locations /pid (the
# worker's pid), /cheap (return 200) and, with the module, /status (lb_status).
scale_conf() {
    local name=$1 n=$2 workers=$3 balancing=$4 cache=$5 d=$work/$1 load="" status=""
    [ "$n" -le $((250 * 250 * 250)) ] || die "scale: at most 15,625,000 peers"
    mkdir -p "$d/conf" "$d/logs"
    case "$balancing$cache" in
        *lb_*) load="load_module $MODULE;" status="location = /status { lb_status; }" ;;
    esac
    {
        cat <<CONF
$load
worker_processes $workers;
pid logs/nginx.pid;
error_log logs/error.log notice;
worker_rlimit_nofile $(ulimit -n);
events { worker_connections 16384; }
http {
    access_log off;
    keepalive_requests 1000000;
    upstream backend {
        $balancing
CONF
        awk -v n="$n" -v base="$BACKEND_BASE" -v np="$SCALE_PORTS" 'BEGIN {
            for (i = 0; i < n; i++)
                printf "        server 127.%d.%d.%d:%d;\n", 1 + i % 250, 1 + int(i / 250) % 250,
                    1 + int(i / 62500) % 250, base + int(i / 250) % np }'
        cat <<CONF
        $cache
    }
    server {
        listen 127.0.0.1:$FRONT_PORT;
        location = /pid { return 200 "\$pid"; }
        location = /cheap { return 200 "ok"; }
        $status
        location / {
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://backend;
        }
    }
}
CONF
    } >"$d/conf/nginx.conf"
}

# scale_start NAME / scale_stop NAME: start the frontend and wait until it answers; stop it
# (SIGQUIT to the master: `nginx -s quit` would parse the whole configuration first) and wait
# until it has exited.
scale_start() {
    "$NGINX" -p "$work/$1" -c conf/nginx.conf
    wait_port "$FRONT_PORT"
}
scale_stop() {
    local pidfile=$work/$1/logs/nginx.pid i
    [ -f "$pidfile" ] || return 0
    kill -QUIT "$(cat "$pidfile")" 2>/dev/null || true
    for ((i = 0; i < 600; i++)); do [ -f "$pidfile" ] || return 0; sleep 0.05; done
    say "warning: $1 did not exit within 30 s"
}

scale_workers() { pgrep -P "$(cat "$work/$1/logs/nginx.pid")"; }

# alive PID: running (not a zombie waiting for the master to reap it).
alive() {
    local st
    st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
    [ -n "$st" ] && [ "$st" != Z ]
}

now_us() { echo "${EPOCHREALTIME/./}"; }

# scale_t NAME: ms of one `nginx -t`.
scale_t() {
    local t0
    t0=$(now_us)
    "$NGINX" -t -q -p "$work/$1" -c conf/nginx.conf || die "scale: nginx -t failed for $1"
    echo $((($(now_us) - t0) / 1000))
}

# scale_reload NAME: one reload of the running frontend; prints "TOTAL COMMAND ANSWERED GONE"
# in ms from starting `nginx -s reload`: until a new worker has answered /pid and no old worker
# is left (TOTAL), until the command returned (it parses the configuration before it signals
# the master), until a new worker answered, until the last old worker had exited.
scale_reload() {
    local d=$work/$1 old t0 t1 answered="" gone="" left p pid url="http://127.0.0.1:$FRONT_PORT/pid"
    old=" $(scale_workers "$1" | tr '\n' ' ')"
    t0=$(now_us)
    "$NGINX" -p "$d" -c conf/nginx.conf -s reload 2>>"$d/reload.err"
    t1=$(now_us)
    while :; do
        if [ -z "$answered" ]; then
            pid=$(curl -s --max-time 2 "$url" || true)
            case "$pid" in '' | *[!0-9]*) ;; *) [[ $old == *" $pid "* ]] || answered=$(now_us) ;; esac
        fi
        if [ -z "$gone" ]; then
            left=0
            for p in $old; do if alive "$p"; then left=1; break; fi; done
            [ $left = 1 ] || gone=$(now_us)
        fi
        [ -n "$answered" ] && [ -n "$gone" ] && break
        if (($(now_us) - t0 > 60000000)); then
            say "warning: $1: reload not done after 60 s (new worker answered: ${answered:+yes}, old workers gone: ${gone:+yes})"
            break
        fi
        sleep 0.005
    done
    local end
    end=$(now_us)
    echo "$(((end - t0) / 1000)) $(((t1 - t0) / 1000)) $(((${answered:-$end} - t0) / 1000)) $(((${gone:-$end} - t0) / 1000))"
}

# scale_rss PID: "VMRSS RSSANON RSSSHMEM" in kB.
scale_rss() {
    awk '/^VmRSS:/ {r = $2} /^RssAnon:/ {a = $2} /^RssShmem:/ {s = $2} END {print r, a, s}' "/proc/$1/status"
}

mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.2f", a / b; else print "-"}'; }
# verdict OK: "ok" or "MISS"
verdict() { if [ "$1" = 1 ]; then echo ok; else echo MISS; fi; }

# scale_checks_done: health checks done so far over all peers (lb_status JSON).
scale_checks_done() {
    curl -s "http://127.0.0.1:$FRONT_PORT/status?format=json" | python3 -c '
import json, sys
try:
    print(sum((p.get("health_checks") or {}).get("checks", 0)
              for u in json.load(sys.stdin)["upstreams"] for p in u["peers"]))
except Exception:
    print(-1)'
}

# wrk_p99 FILE, wrk_p50 FILE: latency in ms from wrk --latency output; wrk_rps FILE.
wrk_pct() {
    awk -v pct="$1" 'function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /s$/) return v*1000; return v }
         $1 == pct "%" && NF == 2 {p = $2} END {printf "%.2f\n", ms(p)}' "$2"
}
wrk_p99() { wrk_pct 99 "$1"; }
wrk_p50() { wrk_pct 50 "$1"; }
wrk_rps() { awk '/Requests\/sec/ {printf "%.0f\n", $2}' "$1"; }

scale() {
    local peers=${SCALE_PEERS:-10000 100000} settle=${SCALE_SETTLE:-3} n v name i r
    local t_start summary=()
    t_start=$(now_us)
    start_backend "$SCALE_PORTS" "" any
    local stock_bal="" stock_cache="keepalive 64;"
    local lb_bal="lb_upstream; lb_keepalive 64; lb_check type=tcp interval=10m;"
    for n in $peers; do
        local N
        N=$(thousands "$n")
        scale_conf "scale$n-stock" "$n" 1 "$stock_bal" "$stock_cache"
        scale_conf "scale$n-lb" "$n" 1 "$lb_bal" ""
        # nginx -t, alternated
        local -A T=() RSS=() RL=() RLC=() RLS=()
        for ((r = 0; r < 3; r++)); do
            for v in stock lb; do T[$v]+="$(scale_t "scale$n-$v") "; done
        done
        for v in stock lb; do
            name=scale$n-$v
            scale_start "$name"
            sleep "$settle"
            local w
            w=$(scale_workers "$name")
            [ "$(echo "$w" | wc -w)" = 1 ] || die "scale: $name has workers '$w', expected one"
            RSS[$v]=$(scale_rss "$w")
            : >"$work/$name/reloads"
            for ((r = 0; r < 3; r++)); do scale_reload "$name" >>"$work/$name/reloads"; sleep 0.5; done
            scale_stop "$name"
            RLS[$v]=$(cut -d' ' -f1 "$work/$name/reloads" | tr '\n' ' ')
            RL[$v]=$(cut -d' ' -f1 "$work/$name/reloads" | median)
            RLC[$v]="command $(cut -d' ' -f2 "$work/$name/reloads" | median), new worker answered $(cut -d' ' -f3 "$work/$name/reloads" | median), old exited $(cut -d' ' -f4 "$work/$name/reloads" | median)"
            { grep -E 'worker_connections are not enough|\[(alert|crit|emerg)\]' "$work/$name/logs/error.log" | sed 's/^[0-9/: ]*//; s/^\(\[[a-z]*\]\) [0-9#]*: /\1 /' || true; } |
                sort | uniq -c | sort -rn | head -3 | while read -r l; do say "warning: $name error.log: $l"; done
        done
        local rs ra rsh ls la lsh per
        read -r rs ra rsh <<<"${RSS[stock]}"
        read -r ls la lsh <<<"${RSS[lb]}"
        row scale "$N peers: worker RSS, stock" "" "$(mib "$rs") MiB (anon $(mib "$ra"), shmem $(mib "$rsh"))" "" ""
        row scale "$N peers: worker RSS, ours" "" "$(mib "$ls") MiB (anon $(mib "$la"), shmem $(mib "$lsh"))" "" ""
        per=$(awk -v a="$ls" -v b="$rs" -v n="$n" 'BEGIN {printf "%.0f", (a - b) * 1024 / n}')
        row scale "$N peers: RSS (ours-stock)/peers" "" "$per B/peer (+$(mib $((ls - rs))) MiB; target <= 512)" "" ""
        local ts tl
        ts=$(echo "${T[stock]}" | tr ' ' '\n' | grep . | median)
        tl=$(echo "${T[lb]}" | tr ' ' '\n' | grep . | median)
        row scale "$N peers: nginx -t, stock" "" "$ts ms, median of 3 (${T[stock]% })" "" ""
        row scale "$N peers: nginx -t, ours" "" "$tl ms (${T[lb]% })" "" ""
        row scale "$N peers: nginx -t, ours / stock" "" "$(ratio "$tl" "$ts") (target <= 1.5)" "" ""
        row scale "$N peers: reload, stock" "" "${RL[stock]} ms, median of 3 (${RLS[stock]% }); medians: ${RLC[stock]}" "" ""
        row scale "$N peers: reload, ours" "" "${RL[lb]} ms (${RLS[lb]% }); ${RLC[lb]}" "" ""
        row scale "$N peers: reload, ours / stock" "" "$(ratio "${RL[lb]}" "${RL[stock]}")" "" ""
        summary+=("$N peers: RSS +$per B/peer (target <= 512: $(verdict "$(awk -v p="$per" 'BEGIN {print (p <= 512)}')"))"
            "$N peers: nginx -t ours/stock $(ratio "$tl" "$ts") (target <= 1.5: $(verdict "$(awk -v a="$tl" -v b="$ts" 'BEGIN {print (a <= 1.5 * b)}')"))"
            "$N peers: reload ours/stock $(ratio "${RL[lb]}" "${RL[stock]}") (${RL[lb]} vs ${RL[stock]} ms)")
        rm -rf "$work/scale$n-stock/conf" "$work/scale$n-lb/conf"
    done

    # Health-check CPU: 4 workers probing SCALE_CHECK_PEERS peers every 10 s, no traffic.
    local cn=${SCALE_CHECK_PEERS:-10000} secs=${SCALE_CHECK_SECONDS:-30} hz u0=0 s0=0 u1=0 s1=0 c0 c1 p u s fr fu fk
    name=scale-checks
    scale_conf "$name" "$cn" 4 "lb_upstream; lb_check type=tcp interval=10s;" ""
    scale_start "$name"
    # The first probes are due an interval after the start: measure from the second round on.
    sleep "${SCALE_CHECK_SETTLE:-12}"
    hz=$(getconf CLK_TCK)
    w=$(scale_workers "$name")
    c0=$(scale_checks_done)
    for p in $w; do
        read -r u s < <(awk '{print $14, $15}' "/proc/$p/stat"); u0=$((u0 + u)) s0=$((s0 + s))
    done
    sleep "$secs"
    for p in $w; do
        read -r u s < <(awk '{print $14, $15}' "/proc/$p/stat"); u1=$((u1 + u)) s1=$((s1 + s))
    done
    c1=$(scale_checks_done)
    local downs cpu
    downs=$(grep -c "is down after" "$work/$name/logs/error.log" || true)
    scale_stop "$name"
    cpu=$(awk -v u=$((u1 - u0)) -v k=$((s1 - s0)) -v hz="$hz" -v s="$secs" 'BEGIN {printf "%.2f", 100 * (u + k) / hz / s}')
    row scale "$(thousands "$cn") peers: 4 workers checking" "" \
        "$cpu% of one core over ${secs}s, type=tcp interval=10s (user $(awk -v u=$((u1 - u0)) -v hz="$hz" -v s="$secs" 'BEGIN {printf "%.2f", 100 * u / hz / s}')%, kernel $(awk -v k=$((s1 - s0)) -v hz="$hz" -v s="$secs" 'BEGIN {printf "%.2f", 100 * k / hz / s}')%), $(awk -v c0="$c0" -v c1="$c1" -v s="$secs" 'BEGIN {if (c0 < 0 || c1 < 0) printf "?"; else printf "%.0f", (c1 - c0) / s}') checks/s (expected $((cn / 10)))" "" ""
    [ "$downs" = 0 ] || say "warning: $downs peers went down during $name"
    # The kernel's floor for the same probes: the same system calls per probe, at the same
    # rate, from one Python process (its user time is Python's, not a floor).
    local floor
    read -r fr fu fk < <("$root/scripts/bench/connect_floor.py" "$cn" "$BACKEND_BASE" "$SCALE_PORTS" $((cn / 10)) "$secs")
    floor="kernel $fk% of one core at $fr probes/s (user, Python's: $fu%)"
    row scale "the same probes' system calls, no nginx" "" "$floor" "" ""
    summary+=("checks of $(thousands "$cn") peers every 10s: $cpu% of one core (target < 5%: $(verdict "$(awk -v c="$cpu" 'BEGIN {print (c < 5)}')")); the system calls alone: $floor")

    # lb_status at SCALE_STATUS_PEERS peers: scrape times; p99 of cheap requests without and
    # with scrapes looping in the background.
    local sn=${SCALE_STATUS_PEERS:-10000} wsecs=${SCALE_WRK_SECONDS:-5} fmt base="http://127.0.0.1:$FRONT_PORT"
    local -A ST=() SZ=()
    name=scale-status
    scale_conf "$name" "$sn" 1 "$lb_bal" ""
    scale_start "$name"
    sleep "$settle"
    for fmt in json prometheus; do
        : >"$work/$name/scrape.$fmt"
        for ((i = 0; i < 5; i++)); do
            curl -s -o "$work/$name/out.$fmt" -w '%{http_code} %{time_total} %{size_download}\n' \
                "$base/status?format=$fmt" >>"$work/$name/scrape.$fmt"
        done
        grep -qv '^200 ' "$work/$name/scrape.$fmt" && say "warning: $name: a $fmt scrape did not answer 200"
        ST[$fmt]=$(awk '{print $2 * 1000}' "$work/$name/scrape.$fmt" | median | xargs printf "%.1f")
        SZ[$fmt]=$(awk 'END {printf "%.0f", $3 / 1024}' "$work/$name/scrape.$fmt")
    done
    wrk -t1 -c4 -d"${wsecs}s" --latency "$base/cheap" >"$work/$name/wrk.quiet"
    : >"$work/$name/scraping"; : >"$work/$name/scrapes"
    (while [ -f "$work/$name/scraping" ]; do
        curl -s -o /dev/null "$base/status?format=json"; echo >>"$work/$name/scrapes"
    done) &
    scrape_pid=$!
    wrk -t1 -c4 -d"${wsecs}s" --latency "$base/cheap" >"$work/$name/wrk.scraped"
    rm -f "$work/$name/scraping"; wait "$scrape_pid" || true; scrape_pid=""
    scale_stop "$name"
    local q99 s99 nscr
    q99=$(wrk_p99 "$work/$name/wrk.quiet"); s99=$(wrk_p99 "$work/$name/wrk.scraped")
    nscr=$(wc -l <"$work/$name/scrapes")
    row scale "$(thousands "$sn") peers: status JSON scrape" "" "${ST[json]} ms, ${SZ[json]} KiB (median of 5)" "" ""
    row scale "$(thousands "$sn") peers: status Prometheus scrape" "" "${ST[prometheus]} ms, ${SZ[prometheus]} KiB" "" ""
    row scale "wrk -c4 /cheap, same worker: quiet" "" "$(wrk_rps "$work/$name/wrk.quiet")" "$(wrk_p50 "$work/$name/wrk.quiet")" "$q99"
    row scale "the same, JSON scrapes looping" "" "$(wrk_rps "$work/$name/wrk.scraped")" "$(wrk_p50 "$work/$name/wrk.scraped")" "$s99"
    local delta
    delta=$(awk -v a="$s99" -v b="$q99" 'BEGIN {printf "%+.2f", a - b}')
    row scale "p99 delta ($nscr scrapes in ${wsecs}s)" "" "$delta ms (target <= +10)" "" ""
    summary+=("status at $(thousands "$sn") peers: JSON ${ST[json]} ms, Prometheus ${ST[prometheus]} ms; p99 of other requests $q99 -> $s99 ms ($delta ms, target <= +10: $(verdict "$(awk -v d="$delta" 'BEGIN {print (d <= 10)}')"))")

    for i in "${summary[@]}"; do say "scale: $i"; done
    say "scale: took $((($(now_us) - t_start) / 1000000)) s"
}

scenarios=("$@"); [ ${#scenarios[@]} -gt 0 ] || scenarios=(rr2 rr2zone tls2 rr100 rr1000 lc2 lc1000 slow checks1000 resolve1000 stream2 stream1000 checks1000stream)
say "instructions/request = slope between $N1 and $N2 requests (cachegrind, one worker); wrk: median of $ROUNDS rounds of ${DURATION}s, $CONNS connections"
row scenario configuration "instr/req" "req/s" "p50 ms" "p99 ms"
row "-------" "--------------------------------------" "---------" "--------" "-------" "-------"
for s in "${scenarios[@]}"; do
    case $s in
        rr2) compare rr2 2 "" "keepalive 64;" "lb_upstream;" "keepalive 64;" ;;
        rr2recover) compare rr2recover 2 "lb_upstream;" "keepalive 64;" "lb_upstream; lb_outlier; lb_panic 50%; lb_slow_start 30s;" "keepalive 64;" ;;
        outlier) outlier ;;
        slowstart) slowstart ;;
        rr2zone) compare rr2zone 2 "zone backend 64k;" "keepalive 64;" "zone backend 64k; lb_upstream;" "keepalive 64;" ;;
        tls2) tls2 ;;
        rr100) compare rr100 100 "" "keepalive 200;" "lb_upstream;" "lb_keepalive 2;" ;;
        rr1000) compare rr1000 1000 "" "keepalive 2000;" "lb_upstream;" "lb_keepalive 2;" ;;
        lc2) compare lc2 2 "least_conn;" "keepalive 64;" "lb_upstream least_conn;" "lb_keepalive 32;" ;;
        lc1000) compare lc1000 1000 "least_conn;" "keepalive 2000;" "lb_upstream least_conn;" "lb_keepalive 2;" ;;
        slow) slow ;;
        checks1000) checks1000 http ;;
        checks1000tls) checks1000 https ;;
        stream2) stream_compare stream2 2 ;;
        stream2zone) stream_compare stream2zone 2 "zone backend 1m;" ;;
        stream1000) stream_compare stream1000 1000 ;;
        checks1000stream) start_stream_backend 1000; checks1000_run on stream ;;
        resolve1000) resolve1000 ;;
        scale) scale ;;
        *) die "unknown scenario $s" ;;
    esac
done
if [ -n "${IPR[rr2-lb]:-}" ] && [ -n "${IPR[rr1000-lb]:-}" ]; then
    say "ours at 1,000 peers / ours at 2 peers: $(awk -v a="${IPR[rr1000-lb]}" -v b="${IPR[rr2-lb]}" 'BEGIN {printf "%.3f", a/b}') (target <= 1.2)"
fi
[ "${scenarios[*]}" = scale ] ||
    say "targets: instructions ours/stock <= 1.01 at 2 peers, <= 0.5 at 1,000 peers; slow peer under 20% with least_conn and p2c; checks of 1,000 peers < 5% of one core"
