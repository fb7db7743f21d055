#!/usr/bin/env bash
# Two nginx hosts with the module behind a floating IP moved by keepalived (VRRP), each host in
# its own network namespace, a client in a third, three backends in a fourth; failover and
# failback measured from the client under a steady load (scripts/ha/ha.py says how).
#
#   scripts/ha-test.sh [--short|--full] [scenario...]
#
#   --full    (default) kill, link, hang, backend (with a failover while the backend is
#             dead), api: about 95 s
#   --short   kill, hang, backend, shorter load around each fault: about 35 s (CI)
#   scenario  kill   kill -9 of nginx on host A (master and workers)
#             link   host A's link down (ip link set eth0 down in its namespace)
#             hang   nginx on host A stopped (SIGSTOP of master and workers)
#             backend  a backend killed and restarted: both hosts' own checks see it
#             api    a backend drained through lb_api on both hosts, then nginx on A hangs:
#                    neither host sends it a request
#   Each failover is followed by A's recovery and the failback to A.
#
# One line per scenario, then `ha: failover <s>s, <failed> failed of <total> requests` (the worst
# failover); exits 1 if a target is missed, 77 if this machine cannot run it (not root, or no
# network namespaces; the reason is printed). Needs root; installs keepalived if missing.
# Everything it creates (namespaces lbha-*, their links and bridge, every process in them) is
# removed at exit, also on failure, Ctrl-C or SIGTERM. Logs and configurations of the last run
# stay in build/ha/. Environment: HA_CHECK_SCRIPT, another check script for keepalived than
# nginx-conf/keepalived/lb-alive; HA_NGINX and HA_MODULE, another nginx and module than build/'s
# (Debian's 1.22: HA_NGINX=/usr/sbin/nginx
# HA_MODULE=$PWD/build/debian/modules/ngx_http_lb_module.so).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/common.sh

skip() { printf 'ha-test: SKIPPED: %s\n' "$*" >&2; exit 77; }

[ "$(id -u)" -eq 0 ] || skip "needs root (network namespaces, keepalived)"
command -v ip >/dev/null 2>&1 || need_packages iproute2
probe="lbha-probe-$$"
if ! err=$(ip netns add "$probe" 2>&1); then
    skip "this machine does not allow network namespaces (ip netns add: ${err:-failed})"
fi
ip netns del "$probe"

need_packages keepalived curl python3
[ -x build/sbin/nginx ] && [ -f build/modules/ngx_http_lb_module.so ] || scripts/build.sh

# The namespaces have fixed names: one run at a time on this machine, whatever the checkout.
exec 9>/run/lbha-test.lock
if ! flock -n 9; then
    say "another scripts/ha-test.sh is running; waiting (at most 3 minutes)"
    flock -w 180 9 || die "another scripts/ha-test.sh still holds /run/lbha-test.lock"
fi

# ha.py removes what it created; should it die hard, remove the namespaces and every process
# in them here. It runs in the background so that a signal to this script is acted on at once
# (bash runs traps only between commands): passed on as TERM, then the EXIT trap sweeps up.
py=""
cleanup() { python3 scripts/ha/ha.py --teardown || true; }
on_signal() {
    [ -n "$py" ] && kill -TERM "$py" 2>/dev/null && wait "$py" 2>/dev/null
    exit "$1"
}
trap cleanup EXIT
trap 'on_signal 130' INT
trap 'on_signal 143' TERM

python3 scripts/ha/ha.py "$@" &
py=$!
wait "$py"
