#!/usr/bin/env python3
"""Two nginx hosts with ngx_http_lb_module behind a floating IP (keepalived, VRRP), each in its
own network namespace; failover and failback measured from a client. Run it through
scripts/ha-test.sh, which installs what is missing, builds, and removes the namespaces should
this process die hard.

Topology (all addresses private to the test, nothing in the host's own namespace):

    lbha-sw   a bridge, br0; every other namespace has one veth (eth0) plugged into it
    lbha-a    host A: nginx + module (nginx-conf/ha-keepalived.conf), keepalived MASTER  10.19.0.11
    lbha-b    host B: the same nginx configuration, keepalived BACKUP                    10.19.0.12
    lbha-be   three backends (stock nginx, one master each, so one can die)          10.19.0.20:8181-8183
    lbha-c    the client: a steady rate of requests to the floating IP                10.19.0.100
    floating IP 10.19.0.10, port 8088

The two hosts run the shipped files with only the changes their comments tell a user to make:
nginx-conf/ha-keepalived.conf (listen on every address, the backends' addresses, no stand-in
backends) and nginx-conf/keepalived/keepalived.conf (interface, floating IP, check script path;
state and priority on host B). Each nginx runs in its own UTS namespace with the host's name,
so `lb_add_header X-LB-Host $hostname` tells the client which host served it.

Everything started is stopped and every namespace removed at exit (finally, and on SIGTERM and
SIGINT); every wait is bounded in time.
"""

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
NGINX = os.environ.get("HA_NGINX", os.path.join(ROOT, "build/sbin/nginx"))
MODULE = os.environ.get("HA_MODULE", os.path.join(ROOT, "build/modules/ngx_http_lb_module.so"))
WORK = os.path.join(ROOT, "build/ha")
LOAD = os.path.join(ROOT, "scripts/ha/load.py")
NGINX_CONF = os.path.join(ROOT, "nginx-conf/ha-keepalived.conf")
KA_CONF = os.path.join(ROOT, "nginx-conf/keepalived/keepalived.conf")
KA_CHECK = os.environ.get("HA_CHECK_SCRIPT") or os.path.join(ROOT, "nginx-conf/keepalived/lb-alive")

PFX = os.environ.get("HA_PREFIX", "lbha")
NS = {k: f"{PFX}-{k}" for k in ("sw", "a", "b", "c", "be")}
NET = "10.19.0"
VIP = f"{NET}.10"
ADDR = {"a": f"{NET}.11", "b": f"{NET}.12", "be": f"{NET}.20", "c": f"{NET}.100"}
PORT = 8088
BACKENDS = [8181, 8182, 8183]
HOSTNAME = {"a": "lbha-a", "b": "lbha-b"}

# VRRP and check timing, as in nginx-conf/keepalived/keepalived.conf.
ADVERT = 0.5
PRIO_B = 200
SKEW_B = (256 - PRIO_B) / 256 * ADVERT
MASTER_DOWN = 3 * ADVERT + SKEW_B
# lb_check in ha-keepalived.conf: interval=1s timeout=500ms rise=2 fall=2.
CHECK_INTERVAL, CHECK_TIMEOUT, CHECK_RISE, CHECK_FALL = 1.0, 0.5, 2, 2

# Targets: the client must be served again within 3 s of the fault, whatever failed. A host
# that vanishes (its link down) cannot be noticed by VRRP before Master_Down_Interval = 3 x
# advert_int + skew (RFC 5798): 1.6 s with VRRP v3's 0.5 s adverts (with v2's whole seconds it
# would be 3.2 s, over the target).
TARGET_NGINX = 3.0
TARGET_LINK = 3.0
assert MASTER_DOWN + 0.5 <= TARGET_LINK
# Slack for "a backend's state changed on both hosts" (status polled every 100 ms, probe time).
SLACK = 0.5

RATE = 50.0          # client requests per second
REQ_TIMEOUT = 1.0    # per request: connect + answer

MODES = {
    # lead: load before the fault; after: load after the client is served again
    "short": dict(lead=1.0, after=1.0, scenarios=["kill", "hang", "backend"]),
    "full": dict(lead=2.0, after=3.0, scenarios=["kill", "link", "hang", "backend", "api"],
                 backend_failover=True),
}

ALL_PIDS = []        # (Popen) keepalived and load processes, stopped at exit
DEAD = set()         # backends killed on purpose, left out of settle()


def now():
    return time.monotonic()


def say(msg):
    print(f"    {msg}", file=sys.stderr, flush=True)


def run(*cmd, check=True, ns=None, **kw):
    if ns:
        cmd = ("ip", "netns", "exec", ns) + cmd
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {r.returncode}: {r.stderr.strip()}")
    return r


def wait_for(cond, seconds, what, step=0.05):
    until = now() + seconds
    while now() < until:
        v = cond()
        if v:
            return v
        time.sleep(step)
    raise RuntimeError(f"timed out after {seconds} s waiting for {what}")


# ---------------------------------------------------------------------------------------------
# Namespaces

def netns_list():
    r = run("ip", "netns", "list", check=False)
    return [line.split()[0] for line in r.stdout.splitlines() if line.strip()]


def alive(pid):
    """Running, not a zombie waiting for its parent (ours, or init) to reap it."""
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def teardown_ns():
    """Stops every process in our namespaces, then deletes them (a namespace outlives
    `ip netns del` while a process is in it). Only our namespaces, found by their names."""
    ours = [n for n in netns_list() if n in NS.values()]
    for sig, pause in ((signal.SIGCONT, 0), (signal.SIGTERM, 1.0), (signal.SIGKILL, 0.2)):
        pids = set()
        for n in ours:
            r = run("ip", "netns", "pids", n, check=False)
            pids.update(int(p) for p in r.stdout.split())
        pids.discard(os.getpid())
        for p in pids:
            try:
                os.kill(p, sig)
            except ProcessLookupError:
                pass
        if pids and pause:
            until = now() + pause
            while now() < until and any(alive(p) for p in pids):
                time.sleep(0.05)
    for n in ours:
        run("ip", "netns", "del", n, check=False)


def setup_ns():
    teardown_ns()  # leftovers of a run that died harder than its cleanup
    run("ip", "netns", "add", NS["sw"])
    sw = NS["sw"]
    run("ip", "-n", sw, "link", "add", "br0", "type", "bridge")
    run("ip", "-n", sw, "link", "set", "br0", "up")
    run("ip", "-n", sw, "link", "set", "lo", "up")
    for host in ("a", "b", "be", "c"):
        ns = NS[host]
        run("ip", "netns", "add", ns)
        # Each veth is created with one end in the switch namespace and the other directly in
        # the host's: nothing appears in the machine's own namespace, not even for a moment.
        run("ip", "-n", sw, "link", "add", f"p-{host}", "type", "veth",
            "peer", "name", "eth0", "netns", ns)
        run("ip", "-n", sw, "link", "set", f"p-{host}", "master", "br0", "up")
        run("ip", "-n", ns, "link", "set", "lo", "up")
        run("ip", "-n", ns, "addr", "add", f"{ADDR[host]}/24", "dev", "eth0")
        run("ip", "-n", ns, "link", "set", "eth0", "up")


# ---------------------------------------------------------------------------------------------
# Configurations: the shipped files, changed as their comments tell a user to

def nginx_conf():
    text = open(NGINX_CONF).read()
    n = text.count("listen 127.0.0.1:8088;")
    text = text.replace("listen 127.0.0.1:8088;", f"listen {PORT};")
    for p in BACKENDS:
        text = text.replace(f"server 127.0.0.1:{p} ", f"server {ADDR['be']}:{p} ")
    text, m = re.subn(r"\n    # Stand-in backends.*?\n    }\n", "\n", text, flags=re.S)
    if n != 1 or m != 1 or "127.0.0.1:818" in text:
        raise RuntimeError(f"{NGINX_CONF} no longer has the lines this test changes")
    return text


def keepalived_conf(host, check_path):
    text = open(KA_CONF).read()
    subs = [
        (r"192\.0\.2\.10/24 dev eth0", f"{VIP}/24 dev eth0"),
        (r'script "/usr/local/sbin/lb-alive"', f'script "{check_path}"'),
        (r"router_id lb_a", f"router_id lb_{host}"),
    ]
    if host == "b":
        subs += [(r"priority 250", f"priority {PRIO_B}")]
    for pat, rep in subs:
        text, m = re.subn(pat, rep, text)
        if m != 1:
            raise RuntimeError(f"{KA_CONF}: expected one '{pat}'")
    return text


def backend_conf(port):
    return f"""daemon on;
worker_processes 1;
pid logs/nginx.pid;
error_log logs/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    server {{
        listen {ADDR['be']}:{port};
        location = /health {{ return 200 "ok\\n"; }}
        location / {{ return 200 "backend {port}\\n"; }}
    }}
}}
"""


# ---------------------------------------------------------------------------------------------
# Processes

def prefix(name):
    return os.path.join(WORK, name)


def master_pid(name):
    pidfile = os.path.join(prefix(name), "logs",
                           "ha-nginx.pid" if name in ("a", "b") else "nginx.pid")
    try:
        pid = int(open(pidfile).read().strip())
    except (OSError, ValueError):
        return None
    try:
        cmd = open(f"/proc/{pid}/cmdline", "rb").read()
    except OSError:
        return None
    return pid if b"nginx: master" in cmd else None


def nginx_pids(name):
    m = master_pid(name)
    if m is None:
        return []
    kids = run("pgrep", "-P", str(m), check=False).stdout.split()
    return [m] + [int(k) for k in kids]


def start_nginx(name):
    p = prefix(name)
    conf = os.path.join(p, "conf/nginx.conf")
    if name in ("a", "b"):
        # Own UTS namespace: $hostname (X-LB-Host) names the host.
        cmd = ["unshare", "--uts", "sh", "-c",
               f'hostname {HOSTNAME[name]} && exec "$0" -p "$1" -c "$2"', NGINX, p + "/", conf]
        ns = NS[name]
    else:
        cmd = [NGINX, "-p", p + "/", "-c", conf]
        ns = NS["be"]
    run(*cmd, ns=ns)
    wait_for(lambda: master_pid(name) and len(nginx_pids(name)) > 1, 5, f"nginx {name} to start")


def kill_nginx(name, sig):
    pids = nginx_pids(name)
    for p in pids:
        os.kill(p, sig)
    return pids


class Keepalived:
    """keepalived in the host's namespace, in the foreground (-n), logging to the console
    (-l); each line of its log is stamped with the time it arrived."""

    def __init__(self, host):
        self.host = host
        d = prefix(f"ka-{host}")
        os.makedirs(d, exist_ok=True)
        self.conf = os.path.join(d, "keepalived.conf")
        self.log_path = os.path.join(d, "keepalived.log")
        self.lines = []          # (time, line)
        self.lock = threading.Lock()
        self.proc = None

    def start(self, check_path):
        with open(self.conf, "w") as f:
            f.write(keepalived_conf(self.host, check_path))
        d = os.path.dirname(self.conf)
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", NS[self.host], "keepalived", "-n", "-l", "-G", "-D", "-P",
             "-f", self.conf, "-p", os.path.join(d, "keepalived.pid"),
             "-r", os.path.join(d, "vrrp.pid")],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        ALL_PIDS.append(self.proc)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        with open(self.log_path, "a") as log:
            for line in self.proc.stdout:
                t = now()
                log.write(f"{t:.3f} {line}")
                log.flush()
                with self.lock:
                    self.lines.append((t, line.rstrip("\n")))

    def states(self, since=0.0):
        """[(time, 'MASTER'|'BACKUP'|'FAULT')] entered since `since`."""
        out = []
        with self.lock:
            for t, line in self.lines:
                m = re.search(r"Entering (\w+) STATE", line)
                if m and t >= since:
                    out.append((t, m.group(1)))
        return out


def has_vip(host):
    r = run("ip", "-n", NS[host], "-4", "-o", "addr", "show", "dev", "eth0", check=False)
    return f" {VIP}/" in r.stdout


def served_by():
    """Which host answers on the floating IP now (one curl from the client), or None."""
    r = run("curl", "-s", "-m", "1", "-o", "/dev/null", "-D", "-", f"http://{VIP}:{PORT}/",
            ns=NS["c"], check=False)
    m = re.search(r"(?im)^x-lb-host:\s*(\S+)", r.stdout)
    return m.group(1) if m and r.stdout.startswith("HTTP/1.1 200") else None


def peer(host, addr):
    """The peer `addr` as `host`'s lb_status shows it (a dict), or None."""
    r = run("curl", "-s", "-m", "1", f"http://127.0.0.1:{PORT}/status?format=json",
            ns=NS[host], check=False)
    try:
        doc = json.loads(r.stdout)
    except ValueError:
        return None
    for u in doc.get("upstreams", []):
        for p in u.get("peers", []):
            if p.get("address") == addr:
                return p
    return None


def peer_state(host, addr):
    p = peer(host, addr)
    return p.get("state") if p else None


# ---------------------------------------------------------------------------------------------
# Load and measurement

class Load:
    """scripts/ha/load.py in the client's namespace; records (seq, sent, ended, status, host,
    error) for every request."""

    def __init__(self, max_seconds):
        self.recs = []
        self.lock = threading.Lock()
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", NS["c"], sys.executable, LOAD, "--host", VIP,
             "--port", str(PORT), "--rate", str(RATE), "--timeout", str(REQ_TIMEOUT),
             "--max", str(max_seconds)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        ALL_PIDS.append(self.proc)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            f = line.split()
            if len(f) != 7:
                continue
            rec = dict(seq=int(f[0]), sent=float(f[1]), ended=float(f[2]), status=int(f[3]),
                       host=f[4], backend=f[5], err=f[6])
            with self.lock:
                self.recs.append(rec)

    def first_ok(self, host, sent_after):
        with self.lock:
            ok = [r for r in self.recs
                  if not failed(r) and r["host"] == host and r["sent"] >= sent_after]
        return min(ok, key=lambda r: r["ended"]) if ok else None

    def stop(self):
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        self.proc.wait(timeout=REQ_TIMEOUT + 5)
        self.reader.join(timeout=2)
        with self.lock:
            return sorted(self.recs, key=lambda r: r["seq"])


def failed(r):
    return r["status"] != 200 or r["err"] != "-"


def judge_window(recs, w0, w1):
    """Failed requests, and those of them that fall outside [w0, w1]: a request is allowed to
    fail only if it was in flight at some moment of the window."""
    bad = [r for r in recs if failed(r)]
    outside = [r for r in bad if r["ended"] < w0 or r["sent"] > w1]
    return bad, outside


def describe_errors(rs):
    kinds = {}
    for r in rs:
        k = r["err"] if r["err"] != "-" else f"HTTP {r['status']}"
        kinds[k] = kinds.get(k, 0) + 1
    return ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) or "none"


def settle():
    """A is master, B backup, the client is served by A, both hosts see every backend up
    (or draining, as the api scenario leaves one until it ends), but those killed on purpose."""
    wait_for(lambda: has_vip("a") and not has_vip("b"), 15, "the floating IP on A only")
    wait_for(lambda: served_by() == HOSTNAME["a"], 10, "the client served by A")
    for h in ("a", "b"):
        for p in BACKENDS:
            if f"{ADDR['be']}:{p}" in DEAD:
                continue
            wait_for(lambda: peer_state(h, f"{ADDR['be']}:{p}") in ("up", "draining"), 10,
                     f"backend {p} up on {h}")


class Result:
    def __init__(self, key, title):
        self.key, self.title = key, title
        self.ok = True
        self.notes = []
        self.total = self.failed = 0
        self.seconds = None      # failover (or failback) time
        self.what = "served again"
        self.target = None

    def miss(self, why):
        self.ok = False
        self.notes.append("MISSED: " + why)

    def line(self):
        if self.key == "error":  # the run could not go on (setup, or a wait that timed out)
            return f"FAIL {self.key:<9} {self.title}"
        t = f"{self.seconds:.2f}s" if self.seconds is not None else "-"
        if self.target is not None:
            t += f" (target {self.target:.2f}s)"
        verdict = "ok  " if self.ok else "FAIL"
        return (f"{verdict} {self.key:<9} {self.title}: {self.what} {t}, "
                f"{self.failed} failed of {self.total}; " + "; ".join(self.notes))


def failover(key, title, fault, recover, target, kas, mode, results, check=None):
    """Load; the fault at A; the client must be served by B within `target`, failing only
    requests in flight during [fault, served again]. Then A recovers; the failback is measured
    the same way (served by A again, failing only requests in flight during the handover).
    `check(recs)`, if given, returns what else is wrong with each phase's requests.
    The fault and the recovery come at a random moment within a second (an advert interval,
    a check interval), so that repeated runs see the range of delays, not one phase."""
    lead, after = mode["lead"], mode["after"]
    res = Result(key, title)
    res.target = target
    load = Load(lead + target + 16 + after)
    time.sleep(lead + random.uniform(0, 1))
    before = load.first_ok(HOSTNAME["a"], 0)
    if before is None:
        load.stop()
        raise RuntimeError(f"{key}: the client was not served by A before the fault")
    t_fault = now()
    fault()
    try:
        r = wait_for(lambda: load.first_ok(HOSTNAME["b"], t_fault), target + 10,
                     "the client served by B", step=0.02)
    except RuntimeError:
        r = None
    if r is not None:
        time.sleep(after)
    recs = load.stop()
    res.total = len(recs)
    if r is None:
        res.miss(f"never served by B within {target + 10:.0f} s")
        bad = [x for x in recs if failed(x)]
        res.failed = len(bad)
    else:
        res.seconds = r["ended"] - t_fault
        bad, outside = judge_window(recs, t_fault, r["ended"])
        res.failed = len(bad)
        if res.seconds > target:
            res.miss(f"served again after {res.seconds:.2f} s > {target:.2f} s")
        if outside:
            res.miss(f"{len(outside)} failed outside the failover window")
        b_master = [t for t, s in kas["b"].states(t_fault) if s == "MASTER"]
        a_states = [f"{s} +{t - t_fault:.2f}s" for t, s in kas["a"].states(t_fault)]
        if b_master:
            res.notes.append(f"B master +{b_master[0] - t_fault:.2f}s")
        if a_states:
            res.notes.append("A " + ", ".join(a_states))
        later = [x for x in recs if x["sent"] > r["ended"] and not failed(x)
                 and x["host"] != HOSTNAME["b"]]
        if later:
            res.miss(f"{len(later)} requests served by another host than B after the failover")
    for why in check(recs) if check else []:
        res.miss(why)
    res.notes.append(f"errors: {describe_errors(bad)}")
    results.append(res)
    say(res.line())

    # Failback: A recovers, takes the floating IP back (preemption), the client follows.
    fb = Result(f"{key}-back", f"failback after {key}")
    fb.what = "served by A again"
    load = Load(lead + 21 + after)
    time.sleep(lead / 2 + random.uniform(0, 1))
    t_rec = now()
    recover()
    try:
        r = wait_for(lambda: load.first_ok(HOSTNAME["a"], t_rec), 20,
                     "the client served by A again", step=0.02)
    except RuntimeError:
        r = None
    if r is not None:
        time.sleep(after)
    recs = load.stop()
    fb.total = len(recs)
    bad = [x for x in recs if failed(x)]
    fb.failed = len(bad)
    if r is None:
        fb.miss("A never served again within 20 s")
    else:
        fb.seconds = r["ended"] - t_rec
        # The handover: from the last request B served to the first A served.
        last_b = max((x["sent"] for x in recs if not failed(x) and x["host"] == HOSTNAME["b"]
                      and x["sent"] < r["sent"]), default=t_rec)
        _, outside = judge_window(recs, last_b, r["ended"])
        if outside:
            fb.miss(f"{len(outside)} failed outside the handover")
        a_master = [t for t, s in kas["a"].states(t_rec) if s == "MASTER"]
        if a_master:
            fb.notes.append(f"A master +{a_master[0] - t_rec:.2f}s")
    for why in check(recs) if check else []:
        fb.miss(why)
    fb.notes.append(f"errors: {describe_errors(bad)}")
    results.append(fb)
    say(fb.line())
    settle()


def api_on_both(method, path, body):
    """What the operator's tooling does: the same lb_api call on each host, on the host itself
    (the API answers 127.0.0.1 only), each answer checked."""
    for h in ("a", "b"):
        r = run("curl", "-s", "-m", "2", "-o", "/dev/null", "-w", "%{http_code}", "-X", method,
                "-H", "Content-Type: application/json", "-d", body,
                f"http://127.0.0.1:{PORT}{path}", ns=NS[h], check=False)
        if r.stdout.strip() != "200":
            raise RuntimeError(f"{method} {path} {body} on {h.upper()}: HTTP {r.stdout.strip()}")


def api_drain(kas, mode, results):
    """A backend drained through lb_api on both hosts; then a failover (nginx on A hangs, so
    A keeps its state) and the failback: neither host sends it a request at any point."""
    port = BACKENDS[2]
    path = f"/lb-api/upstreams/backend/peers/{ADDR['be']}:{port}"
    api_on_both("PATCH", path, '{"admin": "drain"}')

    def none_to_drained(recs):
        n = sum(1 for x in recs if not failed(x) and x["backend"] == str(port))
        return [f"{n} requests went to the drained backend {port}"] if n else []

    pids = []
    failover("api", f"backend {port} drained on both hosts (lb_api), nginx on A hangs",
             lambda: pids.extend(kill_nginx("a", signal.SIGSTOP)),
             lambda: [os.kill(p, signal.SIGCONT) for p in pids],
             TARGET_NGINX, kas, mode, results, check=none_to_drained)
    api_on_both("PATCH", path, '{"admin": "up"}')


def wait_states(addr, state, t0, seconds):
    """{host: seconds after t0} for each host whose status showed `addr` in `state`."""
    seen = {}
    until = t0 + seconds
    while now() < until and len(seen) < 2:
        for h in ("a", "b"):
            if h not in seen and peer_state(h, addr) == state:
                seen[h] = now() - t0
        time.sleep(0.1)
    return seen


def backend_dies(kas, mode, results):
    """A backend is killed under load: both hosts' own checks take it out (B has no traffic:
    only its probes can tell it), no client request fails (proxy_next_upstream). In the full
    mode nginx on A then hangs while the backend is dead: B, now serving, must not send the
    dead backend a single request (it knew before it got the IP). Restarted, both hosts'
    checks bring the backend back."""
    res = Result("backend", "a backend killed and restarted under load")
    res.what = "out on both hosts after"
    port = BACKENDS[1]
    addr = f"{ADDR['be']}:{port}"
    out_target = CHECK_FALL * CHECK_INTERVAL + CHECK_TIMEOUT + SLACK
    in_target = CHECK_RISE * CHECK_INTERVAL + SLACK
    res.target = out_target
    recs = []

    load = Load(mode["lead"] + out_target + 10)
    time.sleep(mode["lead"])
    t_kill = now()
    kill_nginx(f"be{port}", signal.SIGKILL)
    DEAD.add(addr)
    seen = wait_states(addr, "unhealthy", t_kill, out_target + 5)
    for h in ("a", "b"):
        if h not in seen:
            res.miss(f"{h.upper()} never marked {addr} unhealthy")
        elif seen[h] > out_target:
            res.miss(f"{h.upper()} marked it unhealthy after {seen[h]:.2f} s > {out_target:.1f} s")
    res.notes.append("out: " + ", ".join(f"{h.upper()} {seen[h]:.2f}s" for h in sorted(seen)))
    res.seconds = max(seen.values()) if seen else None
    recs += load.stop()

    if mode.get("backend_failover"):
        before = (peer("b", addr) or {}).get("requests")

        def b_never_tries_it(_recs):
            after = (peer("b", addr) or {}).get("requests")
            if before is None or after is None:
                return [f"B's status did not show {addr}"]
            if after != before:
                return [f"B sent {after - before} request(s) to {addr}, which its checks knew dead"]
            return []

        pids = []
        failover("dead-be", f"nginx on A hangs while backend {port} is dead",
                 lambda: pids.extend(kill_nginx("a", signal.SIGSTOP)),
                 lambda: [os.kill(p, signal.SIGCONT) for p in pids],
                 TARGET_NGINX, kas, mode, results, check=b_never_tries_it)

    load = Load(mode["lead"] + in_target + 10 + mode["after"])
    time.sleep(mode["lead"])
    t_start = now()
    start_nginx(f"be{port}")
    back = wait_states(addr, "up", t_start, in_target + 5)
    DEAD.discard(addr)
    for h in ("a", "b"):
        if h not in back:
            res.miss(f"{h.upper()} never marked {addr} up again")
        elif back[h] > in_target:
            res.miss(f"{h.upper()} marked it up after {back[h]:.2f} s > {in_target:.1f} s")
    res.notes.append("back: " + ", ".join(f"{h.upper()} {back[h]:.2f}s" for h in sorted(back)))
    time.sleep(mode["after"])
    recs += load.stop()

    res.total = len(recs)
    bad = [x for x in recs if failed(x)]
    res.failed = len(bad)
    if bad:
        res.miss(f"{len(bad)} client requests failed ({describe_errors(bad)})")
    wrong = [x for x in recs if not failed(x) and x["host"] != HOSTNAME["a"]]
    if wrong:
        res.miss(f"{len(wrong)} requests served by B while A was master")
    results.append(res)
    say(res.line())


# ---------------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--short", action="store_const", dest="mode", const="short", default="full")
    ap.add_argument("--full", action="store_const", dest="mode", const="full")
    ap.add_argument("--teardown", action="store_true",
                    help="only remove the namespaces (and their processes) of a run")
    ap.add_argument("scenarios", nargs="*")
    a = ap.parse_args()
    if a.teardown:
        teardown_ns()
        return 0
    mode = dict(MODES[a.mode])
    if a.scenarios:
        mode["scenarios"] = a.scenarios
    for s in mode["scenarios"]:
        if s not in ("kill", "link", "hang", "backend", "api"):
            ap.error(f"unknown scenario {s!r} (kill, link, hang, backend, api)")

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    results = []
    t0 = now()
    try:
        shutil.rmtree(WORK, ignore_errors=True)
        os.makedirs(WORK)
        setup_ns()
        # The check script, root-owned in a root-owned directory (enable_script_security).
        check_path = os.path.join(WORK, "lb-alive")
        shutil.copy(KA_CHECK, check_path)
        os.chmod(check_path, 0o755)
        for port in BACKENDS:
            p = prefix(f"be{port}")
            os.makedirs(os.path.join(p, "conf"))
            os.makedirs(os.path.join(p, "logs"))
            with open(os.path.join(p, "conf/nginx.conf"), "w") as f:
                f.write(backend_conf(port))
            start_nginx(f"be{port}")
        conf = nginx_conf()
        for h in ("a", "b"):
            p = prefix(h)
            for d in ("conf", "logs", "modules"):
                os.makedirs(os.path.join(p, d))
            os.symlink(MODULE, os.path.join(p, "modules/ngx_http_lb_module.so"))
            with open(os.path.join(p, "conf/nginx.conf"), "w") as f:
                f.write(conf)
            start_nginx(h)
        kas = {h: Keepalived(h) for h in ("a", "b")}
        for h in ("a", "b"):
            kas[h].start(check_path)
        t_ka = now()
        settle()
        say(f"set up in {now() - t0:.1f} s (A master {now() - t_ka:.1f} s after keepalived started)")

        for s in mode["scenarios"]:
            if s == "kill":
                failover("kill", "kill -9 of nginx on A (master and workers)",
                         lambda: kill_nginx("a", signal.SIGKILL), lambda: start_nginx("a"),
                         TARGET_NGINX, kas, mode, results)
            elif s == "link":
                failover("link", "A's link down (ip link set eth0 down)",
                         lambda: run("ip", "-n", NS["a"], "link", "set", "eth0", "down"),
                         lambda: run("ip", "-n", NS["a"], "link", "set", "eth0", "up"),
                         TARGET_LINK, kas, mode, results)
            elif s == "hang":
                pids = []
                failover("hang", "nginx on A hangs (SIGSTOP of master and workers)",
                         lambda: pids.extend(kill_nginx("a", signal.SIGSTOP)),
                         lambda: [os.kill(p, signal.SIGCONT) for p in pids],
                         TARGET_NGINX, kas, mode, results)
            elif s == "backend":
                backend_dies(kas, mode, results)
            elif s == "api":
                api_drain(kas, mode, results)
    except KeyboardInterrupt as e:
        say(f"interrupted ({e}); cleaning up")
        return 130
    except RuntimeError as e:
        say(f"error: {e}")
        results.append(Result("error", str(e)))
        results[-1].ok = False
    finally:
        for p in ALL_PIDS:
            if p.poll() is None:
                try:
                    p.terminate()
                except OSError:
                    pass
        teardown_ns()
        for p in ALL_PIDS:
            try:
                p.wait(timeout=3)
            except subprocess.TimeoutExpired:
                p.kill()

    print("", file=sys.stderr)
    for r in results:
        print(r.line(), flush=True)
    fails = [r for r in results if r.key in ("kill", "link", "hang", "api", "dead-be") and r.seconds is not None]
    ok = all(r.ok for r in results) and bool(results)
    if fails:
        worst = max(fails, key=lambda r: r.seconds)
        print(f"ha: failover {worst.seconds:.2f}s, {worst.failed} failed of {worst.total} "
              f"requests (worst: {worst.key}); {'all targets met' if ok else 'TARGET MISSED'}; "
              f"{now() - t0:.0f} s", flush=True)
    else:
        print(f"ha: no failover measured; {'ok' if ok else 'TARGET MISSED'}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
