#!/usr/bin/env bash
# Runs lb_api (src/shell/api.rs: peers added, removed, drained, set down and up, reweighted;
# lb_state written after each change), lb_status, lb_check, lb_slow_start, lb_outlier, lb_panic
# and lb_keepalive under valgrind memcheck together: a front nginx (single process, under
# valgrind) with one lb_upstream with `zone` (max_added=4), a backend nginx (not under
# valgrind) on 127.0.0.1-4, and parallel clients: plain requests through the upstream, a loop
# that adds and deletes peers 127.0.0.2-4 through lb_api, PATCHes them (drain, up, down,
# weight) and sends bad requests (malformed JSON, unknown field, 405, 409, 404), and a loop on
# lb_status in json/html/prometheus. Meanwhile flag files are toggled every ~2 s: one backend
# address answers 500 for / (outlier ejections), two answer 500 on /health (down and up again:
# slow start, panic mode). Then SIGQUIT, and valgrind's log is searched for errors with a frame
# in ngx_http_lb_module.so.
#
#   scripts/memcheck-api.sh [SECONDS]     (default 60; MEMCHECK_SUPP=file adds a suppression)
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

dir=$(mktemp -d /tmp/memcheck-api.XXXXXX)
say "working in $dir"
mkdir -p "$dir/front/logs" "$dir/front/state" "$dir/back/logs" "$dir/flags"
chmod 755 "$dir" "$dir/back" "$dir/flags"    # the backend's workers run as nobody
chmod 777 "$dir/front/state"                 # lb_state: written by nginx (whatever its user)

# Stops what is still running of what this script started: its background jobs (valgrind, the
# clients) and the backend nginx (its master, from the pid file).
cleanup() {
    local p
    for p in $(jobs -p); do kill -TERM "$p" 2>/dev/null || true; done
    [ -f "$dir/back/logs/nginx.pid" ] && kill -TERM "$(cat "$dir/back/logs/nginx.pid")" 2>/dev/null || true
    return 0
}
trap cleanup EXIT
trap 'exit 2' INT TERM

# Free ports: backends (good, 500 for / on flag, 500 on /health on flag), front.
read -r p1 p2 p3 pfront < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(4)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])
for s in ss: s.close()')

# --- flags -------------------------------------------------------------------------------------
# flags/5xx: 127.0.0.1:$p2 answers 500 for / (outlier ejections).
# flags/health: 127.0.0.1:$p3 and 127.0.0.3:$p1 answer 500 on /health (checks down, then up:
# slow start; with 127.0.0.1:$p2 ejected too, panic mode).
set_flags() {  # $1: 5xx (0|1), $2: health (0|1)
    if [ "$1" = 1 ]; then touch "$dir/flags/5xx"; else rm -f "$dir/flags/5xx"; fi
    if [ "$2" = 1 ]; then touch "$dir/flags/health"; else rm -f "$dir/flags/health"; fi
}
set_flags 0 0

# --- backends (a separate nginx, not under valgrind) --------------------------------------------
cat >"$dir/back/nginx.conf" <<EOF
worker_processes 1;
pid logs/nginx.pid;
error_log logs/error.log notice;
events { worker_connections 1024; }
http {
    access_log off;
    keepalive_timeout 3s;        # backends close idle keepalive connections now and then
    keepalive_requests 50;
    server {                     # always good (127.0.0.2 and .4: added through lb_api)
        listen 127.0.0.1:$p1;
        listen 127.0.0.2:$p1;
        listen 127.0.0.4:$p1;
        location = /health { return 200 "ok\n"; }
        location / { return 200 "\$server_addr:\$server_port\n"; }
    }
    server {                     # 500 for / while flags/5xx exists
        listen 127.0.0.1:$p2;
        location = /health { return 200 "ok\n"; }
        location / {
            if (-f $dir/flags/5xx) { return 500; }
            return 200 "\$server_addr:\$server_port\n";
        }
    }
    server {                     # 500 on /health while flags/health exists (.3: added)
        listen 127.0.0.1:$p3;
        listen 127.0.0.3:$p1;
        location = /health {
            if (-f $dir/flags/health) { return 500; }
            return 200 "ok\n";
        }
        location / { return 200 "\$server_addr:\$server_port\n"; }
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
    lb_state $dir/front/state/lb.state;

    upstream u {
        lb_upstream max_added=4;
        zone u 256k;
        server 127.0.0.1:$p1;
        server 127.0.0.1:$p2;
        server 127.0.0.1:$p3;
        lb_check type=http uri=/health interval=200ms timeout=150ms rise=1 fall=1;
        lb_slow_start 2s;
        lb_outlier consecutive_5xx=3 base_ejection=1s max_percent=50;
        lb_panic 50%;
        lb_keepalive 4;
    }

    server {
        listen 127.0.0.1:$pfront;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_next_upstream error timeout http_502;
        location / { proxy_pass http://u; }
        location /lb-api/ { lb_api write=on; }
        location /status { lb_status; }
    }
}
EOF
memcheck_start_front
say "front under valgrind (pid $vgpid) on 127.0.0.1:$pfront, backends on :$p1 :$p2 :$p3"

# --- clients -----------------------------------------------------------------------------------
cat >"$dir/client.py" <<'EOF'
import collections, http.client, json, os, random, sys, threading, time
port, p1, duration, out, quit_file = (int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]),
                                      sys.argv[4], sys.argv[5])
deadline = time.time() + duration
counts = collections.Counter()
unexpected = collections.Counter()
lock = threading.Lock()

def running():
    return time.time() < deadline and not os.path.exists(quit_file)

def note(key, bad=False):
    if os.path.exists(quit_file):
        key = "after SIGQUIT: " + key
    with lock:
        counts[key] += 1
        if bad:
            unexpected[key] += 1

class Client:
    def __init__(self):
        self.conn = None

    # One request; the status (None on a connection error) and the body.
    def request(self, method, path, body=None, key=None):
        key = key or "%s %s" % (method, path.split("?")[0])
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            headers = {"Content-Type": "application/json"} if body is not None else {}
            self.conn.request(method, path, body=body, headers=headers)
            r = self.conn.getresponse()
            data = r.read()
            if r.getheader("Connection", "").lower() == "close":
                self.conn.close(); self.conn = None
            return r.status, data, key
        except Exception as e:
            note("%s error %s" % (key, type(e).__name__))
            if self.conn is not None:
                self.conn.close()
            self.conn = None
            time.sleep(0.05)
            return None, b"", key

def plain():
    c = Client()
    while running():
        status, _, key = c.request("GET", "/", key="GET /")
        if status is not None:
            note("%s %d" % (key, status))

def status_loop():
    c = Client()
    paths = ["/status", "/status?format=json", "/status?format=html",
             "/status?format=prometheus", "/status?upstream=u&format=prometheus",
             "/lb-api/upstreams", "/lb-api/upstreams/u/peers"]
    while running():
        path = random.choice(paths)
        status, body, _ = c.request("GET", path, key="GET " + path)
        if status is None:
            continue
        bad = status != 200
        if status == 200 and "html" not in path and "prometheus" not in path:
            try:
                json.loads(body)
            except ValueError:
                bad = True
                note("GET %s invalid JSON" % path, True)
        note("GET %s %d" % (path, status), bad)

API = "/lb-api/upstreams/u/peers"

def api(c, method, path, body, expect):
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
    status, data, key = c.request(method, path, body)
    if status is None:
        return None
    if status >= 400:
        try:
            json.loads(data)["error"]
        except (ValueError, KeyError, TypeError):
            note("%s %d without a JSON error" % (key, status), True)
    elif status == 200 or status == 201:
        json.loads(data)
    note("%s %d" % (key, status), status not in expect)
    return status

def api_loop():
    c = Client()
    added = ["127.0.0.%d:%d" % (o, p1) for o in (2, 3, 4)]
    round_ = 0
    while running():
        round_ += 1
        for i, a in enumerate(added):
            body = {"address": a, "weight": 2} if i == 1 else {"address": a}
            if i == 2:
                body.update({"max_fails": 1, "fail_timeout": "2s"})
            api(c, "POST", API, body, (201,))
        api(c, "GET", API, None, (200,))
        time.sleep(0.5)
        # admin and weight changes, on added and configured peers
        api(c, "PATCH", API + "/" + added[0], {"admin": "drain"}, (200,))
        api(c, "PATCH", API + "/" + added[1], {"weight": 5}, (200,))
        api(c, "PATCH", API + "/127.0.0.1:%d" % p1, {"weight": 3}, (200,))
        time.sleep(0.3)
        api(c, "PATCH", API + "/" + added[0], {"admin": "up"}, (200,))
        api(c, "PATCH", API + "/" + added[2], {"admin": "down", "weight": 4}, (200,))
        api(c, "PATCH", API + "/127.0.0.1:%d" % p1, {"weight": None}, (200,))
        time.sleep(0.3)
        api(c, "PATCH", API + "/" + added[2], {"admin": "up"}, (200,))
        api(c, "GET", API + "/" + added[2], None, (200,))
        # bad requests
        api(c, "POST", API, '{"address": "127.0.0.2:', (400,))
        api(c, "POST", API, {"address": added[0], "bogus": 1}, (400,))
        api(c, "POST", API, {"address": "localhost:80"}, (400,))
        api(c, "PATCH", API + "/" + added[1], {"weight": 0}, (400,))
        api(c, "PATCH", API + "/" + added[1], {}, (400,))
        api(c, "PATCH", API + "/" + added[1], '{"admin": drain}', (400,))
        api(c, "PUT", API, {"address": added[0]}, (405,))
        api(c, "DELETE", API, None, (405,))
        api(c, "POST", "/lb-api/upstreams/u", {"address": added[0]}, (405,))
        api(c, "POST", API, {"address": added[0]}, (409,))
        api(c, "DELETE", API + "/127.0.0.1:%d" % p1, None, (409,))
        api(c, "GET", "/lb-api/upstreams/nope/peers", None, (404,))
        api(c, "DELETE", API + "/127.0.0.9:1", None, (404,))
        if round_ % 3 == 0:  # one more than max_added=4 allows
            api(c, "POST", API, {"address": "127.0.0.2:%d" % (p1 + 1)}, (201,))
            api(c, "POST", API, {"address": "127.0.0.4:%d" % (p1 + 1)}, (507,))
            api(c, "DELETE", API + "/127.0.0.2:%d" % (p1 + 1), None, (204,))
        time.sleep(1.0)
        # remove them all, or (every other round) all but one: the next round's POST of
        # that one answers 409
        keep = added[round_ % 3] if round_ % 2 else None
        for a in added:
            if a != keep:
                api(c, "DELETE", API + "/" + a, None, (204,))
        if keep:
            api(c, "POST", API, {"address": keep}, (409,))
            api(c, "DELETE", API + "/" + keep, None, (204,))
        time.sleep(0.3)

threads = [threading.Thread(target=plain) for _ in range(6)]
threads += [threading.Thread(target=status_loop) for _ in range(2)]
threads += [threading.Thread(target=api_loop)]
for t in threads: t.start()
for t in threads: t.join()
with open(out, "w") as f:
    json.dump({"counts": dict(sorted(counts.items())),
               "unexpected": dict(sorted(unexpected.items()))}, f, indent=1)
print("requests: %d" % sum(counts.values()))
EOF
python3 "$dir/client.py" "$pfront" "$p1" $((duration + 60)) "$dir/client-counts.json" "$dir/quit" \
    >"$dir/client.out" 2>&1 &
client=$!

# --- flag changes ------------------------------------------------------------------------------
# "5xx health", one step every 2 s.
steps=("1 0" "1 1" "0 1" "0 0" "1 0" "0 1" "1 1" "1 1" "0 0" "0 1" "1 0" "0 0")
changes=0
end=$((SECONDS + duration))
while [ "$SECONDS" -lt "$end" ]; do
    # shellcheck disable=SC2086
    set_flags ${steps[changes % ${#steps[@]}]}
    changes=$((changes + 1))
    sleep 2
done
set_flags 0 0
sleep 1.5

# --- stop (clients still running), read valgrind's log -----------------------------------------
kill -0 "$client" 2>/dev/null || die "the clients stopped early (see $dir/client.out)"
touch "$dir/quit"
memcheck_stop_front
wait "$client" || true

log=$dir/front/logs/error.log
count() { grep -Ec "$1" "$log" || true; }
echo "dir: $dir"
echo "flag changes: $changes"
echo "requests: $(python3 -c 'import json,sys; c=json.load(open(sys.argv[1]))["counts"]; print(sum(c.values()), "-", ", ".join("%s: %d" % kv for kv in c.items()))' "$dir/client-counts.json")"
echo "unexpected answers: $(python3 -c 'import json,sys; c=json.load(open(sys.argv[1]))["unexpected"]; print(sum(c.values()), "-", ", ".join("%s: %d" % kv for kv in c.items()) or "none")' "$dir/client-counts.json")"
echo "ejected: $(count ' ejected'), back from ejection: $(count 'back from outlier ejection'), panic mode: $(count 'panic mode') (entered: $(count ' in panic mode'), left: $(count 'leaves panic mode'))"
echo "joined: $(count ' joined'), left: $(count ' left'), checks down: $(count ' is down after'), up: $(count ' is up after')"
echo "api: added: $(count 'lb: api: peer .* added to'), removed: $(count 'lb: api: peer .* removed from'), set: $(count 'lb: api: peer .* set to'); lb_state file: $([ -f "$dir/front/state/lb.state" ] && echo present || echo missing)"
echo "alerts/crit/emerg: $(count '\[(alert|crit|emerg)\]')"
memcheck_report
