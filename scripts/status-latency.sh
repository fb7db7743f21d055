#!/usr/bin/env bash
# What a status scrape costs the other requests of the same worker, and how long one takes.
#   scripts/status-latency.sh [PEERS] [FORMAT]      (defaults: 10000 json)
# Starts nginx (one worker, $LB_BUILD_DIR or build/) with one upstream of PEERS peers
# (127.A.B.C:PORT, nothing listening: no traffic goes to them), then
#   1. p99 of `wrk -c4 -d5s` on a `return 200` location, alone;
#   2. the same while a loop of curl fetches /status?format=FORMAT;
#   3. the time one scrape takes (curl's time_total, best of 3), the worker's CPU time per
#      scrape (mean of the 3; steadier than wall time on a busy machine) and its size.
# Needs wrk and curl. Prints one summary line per measurement. LB_BUILD_DIR picks the build
# (e.g. a copy of an older build/ to compare with).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
peers=${1:-10000}
format=${2:-json}
build=${LB_BUILD_DIR:-build}
case $build in /*) ;; *) build="$root/$build" ;; esac
dir=$(mktemp -d /tmp/lb-status-latency.XXXXXX)
port=$(python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
mkdir -p "$dir/logs"
python3 - "$peers" > "$dir/peers.conf" <<'PY'
import sys
n = int(sys.argv[1])
for i in range(n):
    a, b, c = (i >> 16) & 255, (i >> 8) & 255, i & 255
    print(f"        server 127.{a + 1}.{b}.{c}:{9000 + i % 1000};")
PY
cat > "$dir/nginx.conf" <<CONF
load_module $build/modules/ngx_http_lb_module.so;
worker_processes 1;
error_log $dir/logs/error.log notice;
pid $dir/nginx.pid;
events { worker_connections 1024; }
http {
    access_log off;
    upstream big {
        lb_upstream round_robin;
        include $dir/peers.conf;
    }
    server {
        listen 127.0.0.1:$port;
        location = /ok { return 200 "ok\n"; }
        location = /status { lb_status; }
        location = /proxy { proxy_pass http://big; }
    }
}
CONF
trap 'kill $(cat "$dir/nginx.pid" 2>/dev/null) 2>/dev/null; sleep 0.5; rm -rf "$dir"' EXIT
"$build/sbin/nginx" -p "$dir" -c "$dir/nginx.conf"
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/ok" >/dev/null && break; sleep 0.1; done
url="http://127.0.0.1:$port/status?format=$format"
p99() { wrk -c4 -t2 -d5s --latency "http://127.0.0.1:$port/ok" | awk '/ 99%/ {print $2}'; }
echo "peers=$peers format=$format"
echo "alone:        p99 $(p99)"
( while :; do curl -s -o /dev/null "$url"; done ) &
loop=$!
sleep 0.5
echo "with scrapes: p99 $(p99)"
kill $loop; wait $loop 2>/dev/null || true
worker=$(pgrep -P "$(cat "$dir/nginx.pid")" | head -n 1)
cpu() { awk '{print $14 + $15}' "/proc/$worker/stat"; }
best=""
c0=$(cpu)
for _ in 1 2 3; do
    t=$(curl -s -o "$dir/out" -w '%{time_total}' "$url")
    best=$(python3 -c "print(min(float('$t'), float('${best:-1e9}')))")
done
c1=$(cpu)
cpu_ms=$(( (c1 - c0) * 1000 / $(getconf CLK_TCK) / 3 ))
echo "one scrape:   ${best}s (worker CPU ${cpu_ms} ms), $(stat -c %s "$dir/out") bytes"
