#!/usr/bin/env bash
# Runs the `server NAME resolve` code (src/shell/resolve.rs) under valgrind memcheck while peers
# join and leave: a front nginx (single process, under valgrind) with three lb_upstreams that
# follow backend.test (and other.test) through t/dns.py, a backend nginx (not under valgrind) on
# 127.0.0.1-3, parallel clients (plain, slow, lb_status in json/html/prometheus) and a loop that
# changes the DNS answers every ~1.5 s ({1}, {1,2}, {2,3}, {}, NXDOMAIN, SERVFAIL, dropped
# queries, ...). Then SIGQUIT, and valgrind's log is searched for errors with a frame in
# ngx_http_lb_module.so.
#
#   scripts/memcheck-resolve.sh [SECONDS]     (default 60; MEMCHECK_SUPP=file adds a suppression)
#
# Uses build/sbin/nginx and build/modules/ngx_http_lb_module.so as they are (builds nothing).
# Works in a new directory under /tmp (printed; kept). Exit: 0 no error in our module,
# 1 errors in our module, 2 setup failure or nginx did not exit cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
duration=${1:-60}
nginx=$root/build/sbin/nginx
module=$root/build/modules/ngx_http_lb_module.so

die() { printf 'error: %s\n' "$*" >&2; exit 2; }
say() { printf '==> %s\n' "$*" >&2; }
. scripts/lib/memcheck.sh

command -v valgrind >/dev/null || die "valgrind not found"
command -v python3 >/dev/null || die "python3 not found"
command -v curl >/dev/null || die "curl not found"
[ -x "$nginx" ] && [ -f "$module" ] || die "build/sbin/nginx or build/modules/ngx_http_lb_module.so missing"

dir=$(mktemp -d /tmp/memcheck-resolve.XXXXXX)
say "working in $dir"
mkdir -p "$dir/front/logs" "$dir/back/logs" "$dir/back/html"
chmod 755 "$dir" "$dir/back" "$dir/back/html"    # the backend's workers run as nobody

# Stops what is still running of what this script started: its background jobs (dns.py, valgrind,
# the clients) and the backend nginx (its master, from the pid file).
cleanup() {
    local p
    for p in $(jobs -p); do kill -TERM "$p" 2>/dev/null || true; done
    [ -f "$dir/back/logs/nginx.pid" ] && kill -TERM "$(cat "$dir/back/logs/nginx.pid")" 2>/dev/null || true
    return 0
}
trap cleanup EXIT
trap 'exit 2' INT TERM

# Free ports: DNS, backends (all three addresses), backup, front.
read -r pdns p2 p4 pfront < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(4)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])
for s in ss: s.close()')

# --- DNS ---------------------------------------------------------------------------------------
answers=$dir/answers.json
json_list() {  # "1 2" -> ["127.0.0.1", "127.0.0.2"]
    local out="" o
    for o in $1; do out+="${out:+, }\"127.0.0.$o\""; done
    printf '[%s]' "$out"
}
serial=0
set_answers() {  # $1: backend.test (octets, NX, SERVFAIL or DROP), $2: other.test (octets or NX)
    local a="" nx=() sf="" drop=false
    serial=$((serial + 1))
    case $1 in
        NX) nx+=('"backend.test"') ;;
        SERVFAIL) sf='"servfail": ["backend.test"], ' ;;
        DROP) drop=true ;;
        *) a="\"backend.test\": $(json_list "$1")" ;;
    esac
    case $2 in
        NX) nx+=('"other.test"') ;;
        *) a+="${a:+, }\"other.test\": $(json_list "$2")" ;;
    esac
    local nxs
    nxs=$(IFS=,; printf '%s' "${nx[*]}")
    printf '{"ttl": 1, "a": {%s}, "nxdomain": [%s], %s"drop": %s, "serial": %d}\n' \
        "$a" "$nxs" "$sf" "$drop" "$serial" >"$answers.tmp"
    mv -f "$answers.tmp" "$answers"
}
set_answers "1 2 3" "3"
python3 "$root/t/dns.py" --no-stdin --lifetime $((duration + 600)) --log "$dir/dns-queries.log" \
    "$pdns" "$answers" >"$dir/dns.out" 2>&1 &

# --- backends (a separate nginx, not under valgrind) --------------------------------------------
head -c 30000 /dev/zero | tr '\0' 'x' >"$dir/back/html/slow"
cat >"$dir/back/nginx.conf" <<EOF
worker_processes 1;
pid logs/nginx.pid;
error_log logs/error.log notice;
events { worker_connections 1024; }
http {
    access_log off;
    keepalive_timeout 3s;        # backends close idle keepalive connections now and then
    keepalive_requests 50;
    server {
        listen 127.0.0.1:$p2;
        listen 127.0.0.2:$p2;
        listen 127.0.0.3:$p2;
        listen 127.0.0.1:$p4;
        location = /health {
            if (\$server_addr = 127.0.0.3) { return 500; }
            return 200 "ok\n";
        }
        location = /slow {           # ~2 s in flight: 30000 bytes at 10k/s after the first 10k
            limit_rate 10k;
            default_type text/plain;
            alias $dir/back/html/slow;
        }
        location / {
            return 200 "\$server_addr:\$server_port\n";
        }
    }
}
EOF
"$nginx" -p "$dir/back/" -c "$dir/back/nginx.conf" -e "$dir/back/logs/error.log" \
    || die "backend nginx did not start (see $dir/back/logs/error.log)"

# --- front nginx under valgrind ----------------------------------------------------------------
cat >"$dir/front/nginx.conf" <<EOF
load_module $module;
pid logs/nginx.pid;
error_log logs/error.log notice;
events { worker_connections 1024; }
http {
    access_log off;
    resolver 127.0.0.1:$pdns valid=1s;
    resolver_timeout 1s;

    upstream u {
        lb_upstream least_conn;
        zone u 256k;
        server backend.test:$p2 resolve;
        server 127.0.0.1:$p4 backup;
        lb_check type=http uri=/health interval=200ms timeout=150ms rise=1 fall=1;
        lb_keepalive 4;
    }
    upstream v {
        lb_upstream max_resolved=2;
        zone v 256k;
        server backend.test:$p2 resolve;
        server other.test:$p2 resolve weight=2;
        lb_check type=http uri=/health interval=300ms timeout=200ms keepalive=off;
        lb_keepalive 2;
    }
    upstream w {
        lb_upstream p2c;
        zone w 256k;
        server backend.test:$p2 resolve max_fails=1 fail_timeout=1s;
        server 127.0.0.1:$p4;
        lb_check type=tcp interval=250ms timeout=200ms;
        lb_keepalive 4;
    }

    server {
        listen 127.0.0.1:$pfront;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_next_upstream error timeout http_502;
        location /a/ { proxy_pass http://u/; }
        location /b/ { proxy_pass http://v/; }
        location /c/ { proxy_pass http://w/; }
        location /status { lb_status; }
    }
}
EOF
memcheck_start_front
say "front under valgrind (pid $vgpid) on 127.0.0.1:$pfront, dns on $pdns, backends on :$p2"

# --- clients -----------------------------------------------------------------------------------
cat >"$dir/client.py" <<'EOF'
import collections, http.client, json, os, random, sys, threading, time
port, duration, out, quit_file = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3], sys.argv[4]
deadline = time.time() + duration
counts = collections.Counter()
lock = threading.Lock()

def note(key):
    if os.path.exists(quit_file):
        key = "after SIGQUIT: " + key
    with lock:
        counts[key] += 1

def worker(paths):
    conn = None
    while time.time() < deadline and not os.path.exists(quit_file):
        path = random.choice(paths)
        try:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            conn.request("GET", path)
            r = conn.getresponse()
            body = r.read()
            if path.startswith("/status") and r.status == 200 and "json" in path:
                json.loads(body)
            note("%s %d" % (path.split("?")[0].rstrip("/") if not path.startswith("/status") else path, r.status))
            if r.getheader("Connection", "").lower() == "close":
                conn.close(); conn = None
        except Exception as e:
            note("%s error %s" % (path, type(e).__name__))
            if conn is not None:
                conn.close()
            conn = None
            time.sleep(0.05)

plain = ["/a/", "/b/", "/c/"]
slow = ["/a/slow", "/b/slow", "/c/slow"]
status = ["/status?format=json", "/status?format=html", "/status?format=prometheus",
          "/status?upstream=u", "/status?upstream=v&format=prometheus"]
threads = [threading.Thread(target=worker, args=(plain,)) for _ in range(6)]
threads += [threading.Thread(target=worker, args=(slow,)) for _ in range(3)]
threads += [threading.Thread(target=worker, args=(status,)) for _ in range(2)]
for t in threads: t.start()
for t in threads: t.join()
with open(out, "w") as f:
    json.dump(dict(sorted(counts.items())), f, indent=1)
print("requests: %d" % sum(counts.values()))
EOF
python3 "$dir/client.py" "$pfront" $((duration + 60)) "$dir/client-counts.json" "$dir/quit" >"$dir/client.out" 2>&1 &
client=$!

# --- DNS changes -------------------------------------------------------------------------------
# backend.test | other.test, one step every 1.5 s; DROP x2 = 3 s without answers (> resolver_timeout).
steps=("1|3" "1 2|3" "2 3|1 3" "|1 3" "NX|2" "1 2 3|2" "DROP|NX" "DROP|NX" "3|3" "1 3|1 2 3"
       "SERVFAIL|1" "2|1" "1 2 3|NX" "|" "1|2 3" "NX|NX" "1 2|1")
changes=0
end=$((SECONDS + duration))
while [ "$SECONDS" -lt "$end" ]; do
    step=${steps[changes % ${#steps[@]}]}
    set_answers "${step%%|*}" "${step#*|}"
    changes=$((changes + 1))
    sleep 1.5
done
set_answers "1 2 3" "3"
sleep 1.5

# --- stop (clients still running: slow and keepalive requests in flight), read valgrind's log --
kill -0 "$client" 2>/dev/null || die "the clients stopped early (see $dir/client.out)"
touch "$dir/quit"
memcheck_stop_front
wait "$client" || true

echo "dir: $dir"
echo "dns changes: $changes (queries answered: $(grep -vc DROP "$dir/dns-queries.log" || true), dropped: $(grep -c DROP "$dir/dns-queries.log" || true))"
echo "requests: $(python3 -c 'import json,sys; c=json.load(open(sys.argv[1])); print(sum(c.values()), "-", ", ".join("%s: %d" % kv for kv in c.items()))' "$dir/client-counts.json")"
echo "joined: $(grep -c ' joined' "$dir/front/logs/error.log" || true), left: $(grep -c ' left' "$dir/front/logs/error.log" || true), alerts/crit/emerg: $(grep -Ec '\[(alert|crit|emerg)\]' "$dir/front/logs/error.log" || true)"
memcheck_report
