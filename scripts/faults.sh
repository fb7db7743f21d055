#!/usr/bin/env bash
# Fault-injection scenarios: a front nginx with ngx_http_lb_module balancing over 3 local backend
# nginx instances (each its own master + worker and prefix under build/faults/), under load from
# wrk plus a sampler that times every one of its requests. One line per scenario (requests,
# non-2xx, socket errors, the measured figure, the target), then a summary table; exits non-zero
# if any scenario misses its target.
#
#   scripts/faults.sh [--short|--long] [scenario...]
#
#   --short   (default) every scenario bounded to ~10-25 s, scenario 7 for 20 s: under 4 minutes
#   --long    longer outages and load, scenario 7 for 5 minutes (about 10 minutes in all)
#   scenario  1..7 or kill hang reload upgrade worker alldown soak (default: all)
#
#   1 kill     SIGKILL of one backend under load; out of rotation, back after restart
#   2 hang     one backend SIGSTOPped (accepts, never answers); latency after detection
#   3 reload   10 x nginx -s reload (a weight change, an added peer) with an unhealthy peer
#   4 upgrade  binary upgrade: USR2, WINCH, QUIT; what happens to health state
#   5 worker   kill -9 of a front worker, 5 times
#   6 alldown  every backend killed: fast 502s, the reason logged, recovery when one is back
#   7 soak     probes every 100 ms, a backend killed/restarted every 5-10 s: worker RSS and fds
#
# Loopback only. Every process started is stopped at exit, also on failure or Ctrl-C.
# Logs and configurations of the last run stay in build/faults/<scenario>/{front,b1,b2,b3}/.
# Environment: FAULTS_WRK_CONNS (8), FAULTS_WRK_PAUSE_MS (2): wrk's connections and pause per
# request (Connection: close, so each request is a new connection).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
. scripts/lib/common.sh

need_packages wrk python3 curl
[ -x build/sbin/nginx ] && [ -f build/modules/ngx_http_lb_module.so ] || scripts/build.sh

pids_file=$root/build/faults/pids

# Belt and braces: faults.py stops what it started itself; if it died hard, stop whatever it
# recorded (nginx masters with their workers, wrk), checking each pid is still ours.
cleanup() {
    local pid kind kid
    [ -f "$pids_file" ] || return 0
    while read -r pid kind; do
        [ -r "/proc/$pid/cmdline" ] || continue
        case $kind in
            nginx) tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "nginx: master" || continue
                   for kid in $(pgrep -P "$pid" 2>/dev/null); do kill -CONT "$kid" 2>/dev/null || true; done
                   kill -CONT "$pid" 2>/dev/null || true
                   kill -TERM "$pid" 2>/dev/null || true ;;
            wrk)   tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "^wrk " || continue
                   kill -TERM "$pid" 2>/dev/null || true ;;
        esac
    done <"$pids_file"
}
# faults.py runs in the background so that a signal to this script is acted on at once (bash
# runs traps only between commands): it is passed on as TERM, faults.py stops what it started,
# then the EXIT trap sweeps up anything left.
py=""
on_signal() {
    [ -n "$py" ] && kill -TERM "$py" 2>/dev/null && wait "$py" 2>/dev/null
    exit "$1"
}
trap cleanup EXIT
trap 'on_signal 130' INT
trap 'on_signal 143' TERM

python3 scripts/faults/faults.py "$@" &
py=$!
wait "$py"
