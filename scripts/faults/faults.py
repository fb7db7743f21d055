#!/usr/bin/env python3
"""Fault-injection scenarios for ngx_http_lb_module; run it through scripts/faults.sh.

A front nginx (build/sbin/nginx + our module, 2 workers) balances over 3 backend nginx
instances, each a separate master + worker with its own prefix under build/faults/<scenario>/,
so one can be SIGKILLed, SIGSTOPped or restarted. Load: wrk (Connection: close, a fixed pause
per request, statuses counted by scripts/faults/count.lua) plus a small sampler in this process
that records the start time, latency and status of every one of its requests, so that figures
can be taken over a time window (e.g. p99 after detection). A poller reads the status page every
50 ms and a watcher reads the front's error log every 25 ms, each stamping what it sees with the
time it saw it.

Everything started is stopped at exit (finally/atexit/signals here; scripts/faults.sh also
kills what build/faults/pids lists, should this process die hard). Loopback only, every loop
bounded in time.
"""

import argparse
import atexit
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
NGINX = os.environ.get("FAULTS_NGINX", os.path.join(ROOT, "build/sbin/nginx"))
MODULE = os.environ.get("FAULTS_MODULE", os.path.join(ROOT, "build/modules/ngx_http_lb_module.so"))
WORK = os.path.join(ROOT, "build/faults")
LUA = os.path.join(ROOT, "scripts/faults/count.lua")
PIDS_FILE = os.path.join(WORK, "pids")

# Load shape (the same in both modes): wrk connections and pause per request, sampler threads.
WRK_CONNS = int(os.environ.get("FAULTS_WRK_CONNS", "8"))
WRK_PAUSE_MS = int(os.environ.get("FAULTS_WRK_PAUSE_MS", "2"))
SAMPLER_THREADS = 2
SAMPLER_PAUSE = 0.004

# Health check used by scenarios 1-6: lb_check type=http interval=1s timeout=500ms rise=2 fall=2.
INTERVAL, TIMEOUT, RISE, FALL = 1.0, 0.5, 2, 2
CHECK = "type=http interval=1s timeout=500ms rise=2 fall=2 uri=/health"
# Measurement slack on "within rise x interval": the status page is polled every 50 ms, the
# sampler and the log watcher see an event a few ms late, and a probe itself takes a little time.
SLACK = 0.5

MODES = {
    "short": dict(warm=2.0, s1_dead=12.0, s2_hang=6.0, s3_gap=0.6, s4_after=2.0, s5_gap=1.0,
                  s6_down=6.0, s7_duration=20.0, s7_period=5.0),
    "long": dict(warm=5.0, s1_dead=25.0, s2_hang=20.0, s3_gap=2.0, s4_after=5.0, s5_gap=4.0,
                 s6_down=20.0, s7_duration=300.0, s7_period=10.0),
}


def now():
    return time.monotonic()


def say(msg):
    print(f"    {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(cond, seconds, what, step=0.02):
    until = now() + seconds
    while now() < until:
        v = cond()
        if v:
            return v
        time.sleep(step)
    raise Timeout(f"timed out after {seconds}s waiting for {what}")


class Timeout(Exception):
    pass


def pct(values, q):
    if not values:
        return float("nan")
    v = sorted(values)
    return v[max(0, math.ceil(q / 100.0 * len(v)) - 1)]


def ms(x):
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x * 1000:.1f} ms"


# ---------------------------------------------------------------------------------------------
# Processes


def proc_children(ppid):
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        rest = stat[stat.rfind(")") + 2:].split()
        if int(rest[1]) == ppid:
            out.append(int(d))
    return sorted(out)


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except OSError:
        return False


def signal_pid(pid, sig):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def proc_status_kb(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return None


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


REGISTRY = []        # every Nginx, wrk and other child started, for cleanup


def record_pid(pid, kind):
    with open(PIDS_FILE, "a") as f:
        f.write(f"{pid} {kind}\n")


class Nginx:
    """One nginx (master + workers) with its own prefix directory."""

    def __init__(self, name, http_body, workers=1, load_module=False, error_level="warn"):
        self.name = name
        self.dir = os.path.join(WORK, name)
        for sub in ("conf", "logs", "html"):
            os.makedirs(os.path.join(self.dir, sub), exist_ok=True)
        self.workers = workers
        self.load_module = load_module
        self.error_level = error_level
        self.masters = set()
        self.write_conf(http_body)
        REGISTRY.append(self)

    @property
    def error_log(self):
        return os.path.join(self.dir, "logs/error.log")

    def write_conf(self, http_body):
        head = f"load_module {MODULE};\n" if self.load_module else ""
        text = f"""{head}worker_processes {self.workers};
daemon on;
master_process on;
pid logs/nginx.pid;
error_log logs/error.log {self.error_level};
worker_rlimit_nofile 8192;
events {{ worker_connections 4096; }}
http {{
    access_log off;
{http_body}
}}
"""
        with open(os.path.join(self.dir, "conf/nginx.conf"), "w") as f:
            f.write(text)

    def run(self, *args):
        return subprocess.run([NGINX, "-p", self.dir + "/", "-c", "conf/nginx.conf", *args],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def pid(self, suffix=""):
        try:
            with open(os.path.join(self.dir, "logs/nginx.pid" + suffix)) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def worker_pids(self, master=None):
        master = master or self.pid()
        if not master:
            return []
        return [p for p in proc_children(master)
                if "worker process" in cmdline(p) and "shutting down" not in cmdline(p)]

    def start(self, ports=()):
        try:
            os.unlink(os.path.join(self.dir, "logs/nginx.pid"))
        except FileNotFoundError:
            pass
        r = self.run()
        if r.returncode != 0:
            raise RuntimeError(f"nginx {self.name} did not start: {r.stdout}")
        master = wait_for(lambda: self.pid(), 5, f"{self.name} pid file")
        self.masters.add(master)
        record_pid(master, "nginx")
        wait_for(lambda: len(self.worker_pids()) >= self.workers, 5, f"{self.name} workers")
        for p in ports:
            wait_for(lambda p=p: port_open(p), 5, f"{self.name} listening on {p}")
        return master

    def kill9(self):
        """SIGKILL of the master and its workers at once (a crash of the whole instance)."""
        master = self.pid()
        pids = [master] + proc_children(master)
        for p in pids:
            signal_pid(p, signal.SIGKILL)
        wait_for(lambda: not any(alive(p) for p in pids), 5, f"{self.name} to die")
        os.unlink(os.path.join(self.dir, "logs/nginx.pid"))

    def sigstop(self, sig=signal.SIGSTOP):
        master = self.pid()
        for p in [master] + proc_children(master):
            signal_pid(p, sig)

    def reload(self, timeout=10):
        """`nginx -s reload`; returns once new workers run and the old ones have exited."""
        old = self.worker_pids()
        r = self.run("-s", "reload")
        if r.returncode != 0:
            raise RuntimeError(f"reload of {self.name} failed: {r.stdout}")

        def done():
            new = [p for p in self.worker_pids() if p not in old]
            return len(new) >= self.workers and not any(alive(p) for p in old)
        wait_for(done, timeout, "new workers after reload, old ones gone")

    def stop(self):
        for master in list(self.masters) + [self.pid(), self.pid(".oldbin")]:
            if not master or not alive(master):
                continue
            kids = proc_children(master)
            for p in [master] + kids:
                signal_pid(p, signal.SIGCONT)
            signal_pid(master, signal.SIGTERM)
            try:
                wait_for(lambda: not alive(master), 3, f"{self.name} to exit")
            except Timeout:
                for p in [master] + kids + proc_children(master):
                    signal_pid(p, signal.SIGKILL)
        self.masters.clear()


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def http_get(port, path, timeout=5.0):
    """One request on a fresh connection: (status, headers dict, body); raises OSError."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.settimeout(timeout)
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        while True:
            b = s.recv(65536)
            if not b:
                break
            chunks.append(b)
    data = b"".join(chunks)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode(errors="replace").split("\r\n")
    m = re.match(r"HTTP/1\.\d (\d+)", lines[0] if lines else "")
    if not m:
        raise OSError(f"no HTTP status line ({len(data)} bytes)")
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = dechunk(body)
    return int(m.group(1)), headers, body


def dechunk(b):
    out, i = [], 0
    while True:
        j = b.find(b"\r\n", i)
        if j < 0:
            break
        n = int(b[i:j].split(b";")[0] or b"0", 16)
        if n == 0:
            break
        out.append(b[j + 2:j + 2 + n])
        i = j + 2 + n + 2
    return b"".join(out)


# ---------------------------------------------------------------------------------------------
# Load and observers


class Wrk:
    def __init__(self, port, conns=WRK_CONNS, pause_ms=WRK_PAUSE_MS):
        self.out_path = os.path.join(WORK, f"wrk.{port}.{int(time.time() * 1000)}.out")
        self.out = open(self.out_path, "w")
        self.p = subprocess.Popen(
            ["wrk", "-t1", f"-c{conns}", "-d3600s", "--timeout", "5s", "-H", "Connection: close",
             "-s", LUA, f"http://127.0.0.1:{port}/", "--", str(pause_ms)],
            stdout=self.out, stderr=subprocess.STDOUT)
        record_pid(self.p.pid, "wrk")
        REGISTRY.append(self)
        self.stats = None

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGINT)
            try:
                self.p.wait(15)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.out.close()
        if self.stats is None:
            with open(self.out_path) as f:
                m = re.search(r"^WRKSTATS (.*)$", f.read(), re.M)
            if not m:
                raise RuntimeError(f"wrk printed no WRKSTATS line, see {self.out_path}")
            self.stats = json.loads(m.group(1))
        return self.stats


class Sampler:
    """Requests on fresh connections from a few threads; records (start, latency, status, err)."""

    def __init__(self, port, threads=SAMPLER_THREADS, pause=SAMPLER_PAUSE, path="/s"):
        self.port, self.pause, self.path = port, pause, path
        self.records = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self.loop, daemon=True) for _ in range(threads)]
        for t in self.threads:
            t.start()
        REGISTRY.append(self)

    def loop(self):
        while not self.stopping.is_set():
            t0 = now()
            try:
                status, _, _ = http_get(self.port, self.path)
                err = None
            except OSError as e:
                status, err = 0, type(e).__name__ + ": " + str(e)
            rec = (t0, now() - t0, status, err)
            with self.lock:
                self.records.append(rec)
            time.sleep(self.pause)

    def stop(self):
        self.stopping.set()
        for t in self.threads:
            t.join(10)
        return self.records

    def window(self, t_from=None, t_to=None):
        with self.lock:
            return [r for r in self.records
                    if (t_from is None or r[0] >= t_from) and (t_to is None or r[0] + r[1] <= t_to)]


class StatusPoller:
    """Reads the status page every 50 ms: list of (time, worker pid, {address: peer})."""

    def __init__(self, port, upstream="backend", period=0.05):
        self.port, self.upstream, self.period = port, upstream, period
        self.snaps = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.errors = 0
        self.t = threading.Thread(target=self.loop, daemon=True)
        self.t.start()
        REGISTRY.append(self)

    def loop(self):
        while not self.stopping.is_set():
            try:
                snap = fetch_status(self.port, self.upstream)
                with self.lock:
                    self.snaps.append(snap)
            except (OSError, ValueError):
                self.errors += 1
            time.sleep(self.period)

    def stop(self):
        self.stopping.set()
        self.t.join(10)

    def since(self, t_from, pids=None):
        with self.lock:
            return [s for s in self.snaps if s[0] >= t_from and (pids is None or s[1] in pids)]

    def first(self, t_from, pred, pids=None):
        for s in self.since(t_from, pids):
            if pred(s[2]):
                return s
        return None

    def wait(self, t_from, pred, seconds, what, pids=None):
        return wait_for(lambda: self.first(t_from, pred, pids), seconds, what, step=0.05)

    def last(self):
        with self.lock:
            return self.snaps[-1] if self.snaps else None


def fetch_status(port, upstream="backend"):
    t = now()
    status, headers, body = http_get(port, "/status", timeout=3)
    if status != 200:
        raise OSError(f"status page answered {status}")
    doc = json.loads(body)
    ups = [u for u in doc["upstreams"] if u["name"] == upstream]
    if not ups:
        raise ValueError(f"no upstream {upstream}")
    peers = {p["address"]: p for p in ups[0]["peers"]}
    return (t, int(headers.get("x-worker-pid", "0")), peers)


class LogWatcher:
    """Reads new lines of a log every 25 ms: list of (time seen, line)."""

    def __init__(self, path, period=0.025):
        self.path, self.period = path, period
        self.lines = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.pos = os.path.getsize(path) if os.path.exists(path) else 0
        self.t = threading.Thread(target=self.loop, daemon=True)
        self.t.start()
        REGISTRY.append(self)

    def loop(self):
        buf = b""
        while not self.stopping.is_set():
            try:
                with open(self.path, "rb") as f:
                    f.seek(self.pos)
                    data = f.read()
                    self.pos += len(data)
            except OSError:
                data = b""
            if data:
                buf += data
                *complete, buf = buf.split(b"\n")
                t = now()
                with self.lock:
                    self.lines.extend((t, ln.decode(errors="replace")) for ln in complete)
            time.sleep(self.period)

    def stop(self):
        self.stopping.set()
        self.t.join(10)

    def matching(self, regex, t_from=None, t_to=None):
        rx = re.compile(regex)
        with self.lock:
            return [(t, ln) for t, ln in self.lines
                    if rx.search(ln) and (t_from is None or t >= t_from)
                    and (t_to is None or t < t_to)]


def cleanup_all():
    for obj in reversed(REGISTRY):
        try:
            obj.stop()
        except Exception as e:  # noqa: BLE001 - cleanup goes on whatever one stop raises
            print(f"cleanup: {e}", file=sys.stderr)
    REGISTRY.clear()


# ---------------------------------------------------------------------------------------------
# The test bed: 3 backends + a front


def backend_body(idx, ports, flag_dir):
    listens = "".join(f"        listen 127.0.0.1:{p};\n" for p in ports)
    return f"""    log_format tiny '$msec $server_port $request_uri $status';
    server {{
{listens}        access_log logs/access.log tiny;
        location = /health {{
            access_log off;
            if (-f {flag_dir}/unhealthy) {{ return 503 "unhealthy\\n"; }}
            return 200 "ok\\n";
        }}
        location / {{ return 200 "b{idx}\\n"; }}
    }}"""


class Bed:
    def __init__(self, scenario, check=CHECK, loc_extra="", extra_port=False):
        self.dir = os.path.join(WORK, scenario)
        shutil.rmtree(self.dir, ignore_errors=True)
        self.check, self.loc_extra = check, loc_extra
        self.front_port = free_port()
        self.ports = [free_port() for _ in range(3)]
        self.extra = free_port() if extra_port else None   # a second port on backend 1
        self.backends = []
        for i, p in enumerate(self.ports):
            ports = [p] + ([self.extra] if i == 0 and self.extra else [])
            b = Nginx(f"{scenario}/b{i + 1}", "", workers=1)
            b.write_conf(backend_body(i + 1, ports, os.path.join(b.dir, "html")))
            b.ports = ports
            self.backends.append(b)
        self.front = Nginx(f"{scenario}/front", self.front_body(), workers=2, load_module=True)
        self.load = []
        self.poller = self.log = self.sampler = None

    def addr(self, i):
        return f"127.0.0.1:{self.ports[i]}"

    def front_body(self, weights=None, add_extra=False):
        weights = weights or {}
        servers = "".join(
            f"        server 127.0.0.1:{p}{(' weight=%d' % weights[i]) if i in weights else ''};\n"
            for i, p in enumerate(self.ports))
        if add_extra:
            servers += f"        server 127.0.0.1:{self.extra};\n"
        return f"""    upstream backend {{
        lb_upstream;
        lb_check {self.check};
{servers}    }}
    server {{
        listen 127.0.0.1:{self.front_port};
        location / {{
            proxy_pass http://backend;
{self.loc_extra}
        }}
        location /status {{
            lb_status;
            add_header X-Worker-Pid $pid always;
        }}
    }}"""

    def start(self, wait_up=True):
        for b in self.backends:
            b.start(b.ports)
        self.front.start([self.front_port])
        self.log = LogWatcher(self.front.error_log)
        self.poller = StatusPoller(self.front_port)
        if wait_up:
            self.poller.wait(now(), lambda peers: all(p["state"] == "up" for p in peers.values())
                             and len(peers) >= 3, 10, "all peers up")

    def start_load(self):
        self.wrk = Wrk(self.front_port)
        self.sampler = Sampler(self.front_port)
        self.t_load = now()

    def stop_load(self):
        self.wrk_stats = self.wrk.stop()
        self.samples = self.sampler.stop()
        return self.counts()

    def counts(self):
        w = self.wrk_stats
        wrk_non2xx = sum(n for code, n in w["statuses"].items() if not code.startswith("2"))
        wrk_sock = w["connect"] + w["read"] + w["write"] + w["timeout"]
        s_non2xx = sum(1 for r in self.samples if r[3] is None and not 200 <= r[2] < 300)
        s_sock = sum(1 for r in self.samples if r[3] is not None)
        return dict(requests=w["requests"] + wrk_sock + len(self.samples),
                    non2xx=wrk_non2xx + s_non2xx, sock=wrk_sock + s_sock,
                    wrk=w, sampler_n=len(self.samples), sampler_non2xx=s_non2xx,
                    sampler_sock=s_sock)

    def stop(self):
        for o in (self.poller, self.log):
            if o:
                o.stop()
        self.front.stop()
        for b in self.backends:
            b.stop()


def access_count(backend, port=None, t_wall_from=None):
    """Lines of a backend's access log (health checks are not logged), optionally for one
    port and from one wall-clock time on."""
    n = 0
    try:
        with open(os.path.join(backend.dir, "logs/access.log")) as f:
            for line in f:
                parts = line.split()
                if len(parts) < 3:
                    continue
                if port is not None and parts[1] != str(port):
                    continue
                if t_wall_from is not None and float(parts[0]) < t_wall_from:
                    continue
                n += 1
    except FileNotFoundError:
        pass
    return n


class Result:
    def __init__(self, num, name):
        self.num, self.name = num, name
        self.requests = self.non2xx = self.sock = 0
        self.figure, self.target, self.key = "", "", ""
        self.ok = True
        self.notes = []
        self.seconds = 0.0

    def check(self, cond, what):
        if not cond:
            self.ok = False
            self.notes.append("MISSED: " + what)
        return cond

    def note(self, msg):
        self.notes.append(msg)

    def set_counts(self, c):
        self.requests, self.non2xx, self.sock = c["requests"], c["non2xx"], c["sock"]


# ---------------------------------------------------------------------------------------------
# Scenarios


def s1_backend_killed(M):
    r = Result(1, "backend SIGKILLed under load")
    bed = Bed("s1")
    try:
        bed.start()
        bed.start_load()
        time.sleep(M["warm"])
        victim, addr = bed.backends[1], bed.addr(1)
        t_kill = now()
        victim.kill9()
        bed.poller.wait(t_kill, lambda p: p[addr]["state"] == "unhealthy", 10, f"{addr} unhealthy")
        time.sleep(max(0.0, t_kill + M["s1_dead"] - now()))
        req_before = bed.poller.last()[2][addr]["requests"]
        victim.start(victim.ports)
        t_restart = now()
        back = bed.poller.wait(t_restart, lambda p: p[addr]["requests"] > req_before, 15,
                               f"{addr} to get requests again")
        time.sleep(1.0)
        c = bed.stop_load()
        r.set_counts(c)

        # Out of rotation: the last proxied attempt at the dead peer, from the error log
        # ("connect() failed ... while connecting to upstream") and from its request counter.
        fails = bed.log.matching(rf'\[error\].*upstream: "http://{re.escape(addr)}/', t_kill, t_restart)
        last_fail = (fails[-1][0] - t_kill) if fails else 0.0
        snaps = bed.poller.since(t_kill)
        last_pick = 0.0
        prev = None
        for t, _, peers in snaps:
            if t >= t_restart:
                break
            if prev is not None and peers[addr]["requests"] > prev:
                last_pick = t - t_kill
            prev = peers[addr]["requests"]
        unhealthy = bed.poller.first(t_kill, lambda p: p[addr]["state"] == "unhealthy")
        t_unhealthy = unhealthy[0] - t_kill
        t_back = back[0] - t_restart
        bound_out = FALL * INTERVAL + TIMEOUT
        bound_back = RISE * INTERVAL
        r.figure = (f"out of rotation {max(last_fail, last_pick):.2f}s after kill ({len(fails)} "
                    f"upstream error lines, unhealthy at {t_unhealthy:.2f}s, last pick {last_pick:.2f}s); "
                    f"back {t_back:.2f}s after restart")
        r.key = f"out {max(last_fail, last_pick):.2f}s, back {t_back:.2f}s"
        r.target = (f"0 failed; out <= {bound_out:.1f}s; back <= {bound_back:.1f}s"
                    f" (+{SLACK}s slack)")
        r.check(c["non2xx"] + c["sock"] == 0, f"{c['non2xx'] + c['sock']} failed client requests")
        r.check(last_fail <= bound_out, f"upstream error lines until {last_fail:.2f}s after kill")
        r.check(last_pick <= bound_out + 0.1, f"peer still picked {last_pick:.2f}s after kill")
        r.check(t_back <= bound_back + SLACK, f"back in rotation only {t_back:.2f}s after restart")
    finally:
        bed.stop()
    return r


def s2_backend_hangs(M):
    r = Result(2, "backend hangs (SIGSTOP) under load")
    bed = Bed("s2", loc_extra="            proxy_read_timeout 1s;\n"
                              "            proxy_next_upstream error timeout;")
    try:
        bed.start()
        bed.start_load()
        time.sleep(M["warm"])
        victim, addr = bed.backends[1], bed.addr(1)
        t_stop = now()
        victim.sigstop(signal.SIGSTOP)
        det = bed.poller.wait(t_stop, lambda p: p[addr]["state"] == "unhealthy", 10,
                              f"{addr} unhealthy")
        t_det = det[0]
        time.sleep(M["s2_hang"])
        t_cont = now()
        victim.sigstop(signal.SIGCONT)
        bed.poller.wait(t_cont, lambda p: p[addr]["state"] == "up", 10, f"{addr} up again")
        t_up = now() - t_cont
        time.sleep(0.5)
        c = bed.stop_load()
        r.set_counts(c)

        base = [x[1] for x in bed.sampler.window(bed.t_load + 0.5, t_stop)]
        before_det = bed.sampler.window(t_stop, t_det)
        after = [x[1] for x in bed.sampler.window(t_det, t_cont)]
        p99_base, p99_after = pct(base, 99), pct(after, 99)
        max_after = max(after) if after else float("nan")
        slow_after = sum(1 for x in after if x >= 0.5)
        slow_before = sum(1 for x in before_det if x[1] >= 0.5)
        r.figure = (f"detected {t_det - t_stop:.2f}s after SIGSTOP; p99 before {ms(p99_base)}, "
                    f"after detection {ms(p99_after)} (max {ms(max_after)}, n={len(after)}); "
                    f"{slow_before} sampled requests waited >=0.5s before detection; "
                    f"up {t_up:.2f}s after SIGCONT")
        r.key = f"detect {t_det - t_stop:.2f}s, p99 {p99_base * 1000:.1f}->{p99_after * 1000:.1f} ms"
        r.target = "0 failed; after detection no request >= 0.5s and p99 <= 2 x before + 20 ms"
        r.check(c["non2xx"] + c["sock"] == 0, f"{c['non2xx'] + c['sock']} failed client requests")
        r.check(t_det - t_stop <= FALL * INTERVAL + TIMEOUT + SLACK,
                f"detection took {t_det - t_stop:.2f}s")
        r.check(slow_after == 0, f"{slow_after} requests after detection took >= 0.5s")
        r.check(p99_after <= 2 * p99_base + 0.020,
                f"p99 after detection {ms(p99_after)} vs {ms(p99_base)} before")
    finally:
        bed.stop()
    return r


def s3_reload(M):
    r = Result(3, "10 x reload under load")
    bed = Bed("s3", extra_port=True)
    try:
        bed.start()
        bed.start_load()
        time.sleep(M["warm"])
        a1, a2, a3 = bed.addr(0), bed.addr(1), bed.addr(2)
        ax = f"127.0.0.1:{bed.extra}"
        b3 = bed.backends[2]
        open(os.path.join(b3.dir, "html/unhealthy"), "w").close()
        bed.poller.wait(now(), lambda p: p[a3]["state"] == "unhealthy", 10, f"{a3} unhealthy")
        time.sleep(0.3)                      # requests already sent to it finish
        b3_before = access_count(b3)
        s_first = fetch_status(bed.front_port)[2]
        prev = s_first
        decreased = []
        weights, add_extra = {}, False
        t_reload0 = now()
        reload_times = []
        for i in range(1, 11):
            if i == 3:
                weights = {0: 3}               # a weight changes
            if i == 6:
                add_extra = True               # a peer is added
            bed.front.write_conf(bed.front_body(weights, add_extra))
            t0 = now()
            bed.front.reload()
            reload_times.append(now() - t0)
            cur = fetch_status(bed.front_port)[2]
            for a in (a1, a2, a3):
                if cur[a]["requests"] < prev[a]["requests"]:
                    decreased.append(f"{a} {prev[a]['requests']}->{cur[a]['requests']} at reload {i}")
            prev = cur
            time.sleep(M["s3_gap"])
        time.sleep(1.0)
        c = bed.stop_load()
        r.set_counts(c)
        s_last = fetch_status(bed.front_port)[2]
        b3_after = access_count(b3) - b3_before
        b3_status = s_last[a3]["requests"] - s_first[a3]["requests"]
        added = s_last.get(ax, {}).get("requests", 0)
        r2_growth = s_last[a2]["requests"] - s_first[a2]["requests"]
        r.figure = (f"reloads took {min(reload_times):.2f}-{max(reload_times):.2f}s; unhealthy peer got "
                    f"{b3_after} requests after them (status {b3_status:+d}, state "
                    f"{s_last[a3]['state']}); unchanged peer {a2} requests "
                    f"{s_first[a2]['requests']} -> {s_last[a2]['requests']}; weight of {a1} now "
                    f"{s_last[a1]['weight']}; added peer got {added}")
        r.key = f"unhealthy peer got {b3_after}, counters kept"
        r.target = "0 failed; unhealthy peer 0 requests; counters never go back; new weight and peer in effect"
        r.check(c["non2xx"] + c["sock"] == 0, f"{c['non2xx'] + c['sock']} failed client requests")
        r.check(b3_after == 0 and b3_status == 0, f"the unhealthy peer got {b3_after} requests")
        r.check(s_last[a3]["state"] == "unhealthy", f"{a3} is {s_last[a3]['state']} after the reloads")
        r.check(not decreased, "counters went back: " + "; ".join(decreased))
        r.check(r2_growth > 0, f"{a2} counter did not grow")
        r.check(s_last[a1]["weight"] == 3, "weight change not in effect")
        r.check(added > 0, "the added peer got no request")
        r.note(f"reloads ran {now() - t_reload0:.1f}s")
    finally:
        bed.stop()
    return r


def s4_binary_upgrade(M):
    r = Result(4, "binary upgrade (USR2, WINCH, QUIT)")
    bed = Bed("s4")
    try:
        bed.start()
        bed.start_load()
        time.sleep(M["warm"])
        a3 = bed.addr(2)
        bed.backends[2].kill9()
        bed.poller.wait(now(), lambda p: p[a3]["state"] == "unhealthy", 10, f"{a3} unhealthy")
        time.sleep(0.5)
        old_master = bed.front.pid()
        old_workers = bed.front.worker_pids()
        req_old = bed.poller.last()[2][bed.addr(0)]["requests"]
        t_usr2 = now()
        os.kill(old_master, signal.SIGUSR2)
        new_master = wait_for(lambda: bed.front.pid(".oldbin") == old_master
                              and bed.front.pid() not in (None, old_master) and bed.front.pid(),
                              10, "nginx.pid.oldbin and a new nginx.pid")
        bed.front.masters.add(new_master)
        record_pid(new_master, "nginx")
        new_workers = wait_for(lambda: (len(bed.front.worker_pids(new_master)) >= 2
                                        and bed.front.worker_pids(new_master)), 10,
                               "the new master's workers")
        t_new = now()
        os.kill(old_master, signal.SIGWINCH)
        wait_for(lambda: not any(alive(p) for p in old_workers), 10, "old workers to exit")
        t_winch = now() - t_usr2
        os.kill(old_master, signal.SIGQUIT)
        wait_for(lambda: not alive(old_master), 10, "the old master to exit")
        t_quit = now() - t_usr2
        # State as the new workers see it.
        first = bed.poller.wait(t_usr2, lambda p: True, 10, "a status page from a new worker",
                                pids=set(new_workers))
        reest = bed.poller.wait(t_usr2, lambda p: p[a3]["state"] == "unhealthy", 15,
                                f"{a3} unhealthy in the new master", pids=set(new_workers))
        time.sleep(M["s4_after"])
        c = bed.stop_load()
        r.set_counts(c)
        st0 = first[2][a3]
        carried = st0["state"] == "unhealthy"
        fails = bed.log.matching(rf'\[error\].*upstream: "http://{re.escape(a3)}/', t_usr2)
        t_re = reest[0] - t_new
        req_new_first = first[2][bed.addr(0)]["requests"]
        r.figure = (f"health state {'CARRIED OVER' if carried else 'not carried over'}: new workers "
                    f"first saw {a3} '{st0['state']}' (checks={st0['health_checks']['checks']}, "
                    f"counters {'reset' if req_new_first < req_old else 'kept'}: "
                    f"{req_old} -> {req_new_first}); re-established {t_re:.2f}s after the new "
                    f"workers started ({len(fails)} proxied attempts at the dead peer meanwhile, "
                    f"all retried); old workers gone {t_winch:.2f}s, old master {t_quit:.2f}s "
                    f"after USR2")
        bound = FALL * INTERVAL + TIMEOUT
        r.key = f"{'carried over' if carried else 'fresh'}, re-established {t_re:.2f}s"
        r.target = f"0 failed; dead peer known dead again <= {bound:.1f}s (+{SLACK}s slack)"
        r.check(c["non2xx"] + c["sock"] == 0, f"{c['non2xx'] + c['sock']} failed client requests")
        r.check(carried or t_re <= bound + SLACK, f"re-established only after {t_re:.2f}s")
    finally:
        bed.stop()
    return r


def s5_worker_killed(M, kills=5):
    r = Result(5, "worker SIGKILLed 5 times")
    bed = Bed("s5")
    try:
        bed.start()
        bed.start_load()
        time.sleep(M["warm"])
        per_kill, problems, respawns, newserved = [], [], [], 0
        for k in range(kills):
            workers = bed.front.worker_pids()
            victim = workers[k % len(workers)]
            checks0 = sum(p["health_checks"]["checks"] for p in fetch_status(bed.front_port)[2].values())
            t_k = now()
            os.kill(victim, signal.SIGKILL)
            new = wait_for(lambda: [p for p in bed.front.worker_pids() if p not in workers]
                           if len(bed.front.worker_pids()) == 2 and victim not in bed.front.worker_pids()
                           else None, 5, "the master to respawn the worker")
            respawns.append(now() - t_k)
            # The status page keeps answering, also from the new worker.
            deadline = now() + 3
            seen_new = False
            while now() < deadline and not seen_new:
                seen_new = fetch_status(bed.front_port)[1] in new
            newserved += seen_new
            # Probes go on: every peer checked at least once more.
            try:
                wait_for(lambda: sum(p["health_checks"]["checks"] for p in
                                     fetch_status(bed.front_port)[2].values()) >= checks0 + 3,
                         2 * INTERVAL + 1, "checks to go on", step=0.1)
                checks1 = sum(p["health_checks"]["checks"] for p in fetch_status(bed.front_port)[2].values())
            except Timeout:
                checks1 = sum(p["health_checks"]["checks"] for p in fetch_status(bed.front_port)[2].values())
                problems.append(f"kill {k + 1}: checks {checks0} -> {checks1} only")
            time.sleep(M["s5_gap"])
            win = [x for x in bed.sampler.window(t_k - 0.2, now())]
            per_kill.append(sum(1 for x in win if x[3] is not None or not 200 <= x[2] < 300))
            r.note(f"kill {k + 1}: worker {victim} respawned as {new} in {respawns[-1]:.2f}s, "
                   f"checks {checks0} -> {checks1}, status from the new worker: {'yes' if seen_new else 'no'}")
        c = bed.stop_load()
        r.set_counts(c)
        time.sleep(1.5)
        st = fetch_status(bed.front_port)[2]
        active = {a: p["active"] for a, p in st.items()}
        failed = c["non2xx"] + c["sock"]
        w = c["wrk"]
        r.figure = (f"{failed} failed in {kills} kills ({failed / kills:.1f}/kill: wrk read {w['read']}, "
                    f"write {w['write']}, connect {w['connect']}, timeout {w['timeout']}, "
                    f"non-2xx {c['non2xx']}; sampler {c['sampler_sock']}); respawn "
                    f"{min(respawns):.2f}-{max(respawns):.2f}s; checks went on after every kill: "
                    f"{'yes' if not problems else 'NO'}; 'active' once idle: "
                    f"{sum(active.values())}")
        inflight = WRK_CONNS + SAMPLER_THREADS      # client connections that can be in flight
        r.key = f"{failed / kills:.1f} failed/kill, active leak {sum(active.values())}"
        r.target = (f"respawned; status + probes go on; only in-flight requests fail "
                    f"(<= {inflight} client connections per kill)")
        r.check(not problems, "; ".join(problems))
        r.check(failed <= inflight * kills, f"{failed} failed requests for {kills} kills")
        if sum(active.values()):
            bed.front.reload()
            time.sleep(0.5)
            after = {a: p["active"] for a, p in fetch_status(bed.front_port)[2].items()}
            r.note(f"'active' stays at {active} with no traffic ({after} after a reload): "
                   "attempts in flight on a killed worker are never given back, and they count "
                   "against max_conns")
    finally:
        bed.stop()
    return r


def s6_all_down(M):
    r = Result(6, "all backends down, then one back")
    bed = Bed("s6")
    try:
        bed.start()
        bed.start_load()
        time.sleep(M["warm"])
        t0 = now()
        for b in bed.backends:
            b.kill9()
        time.sleep(M["s6_down"])
        b1 = bed.backends[0]
        b1.start(b1.ports)
        t_r = now()

        def resumed():
            ok = [x for x in bed.sampler.window(t_r) if x[3] is None and 200 <= x[2] < 300]
            return ok[0] if ok else None
        first_ok = wait_for(resumed, 30, "traffic to resume", step=0.05)
        t_resume = first_ok[0] + first_ok[1] - t_r
        time.sleep(1.0)
        c = bed.stop_load()
        r.set_counts(c)
        down = bed.sampler.window(t0 + 0.1, t_r)
        e502 = [x[1] for x in down if x[2] == 502]
        other = [x for x in down if x[2] != 502]
        p99 = pct(e502, 99)
        why = bed.log.matching(r'lb: no available peer in upstream "backend"', t0)
        live = bed.log.matching(r"no live upstreams", t0)
        a1 = bed.addr(0)
        state_at = [(round(t - t_r, 2), p[a1]["state"]) for t, _, p in bed.poller.since(t_r)]
        transitions = []
        for t, s in state_at:
            if not transitions or transitions[-1][1] != s:
                transitions.append((t, s))
        r.figure = (f"{len(e502)} sampled 502s, p99 {ms(p99)} (max {ms(max(e502) if e502 else None)}); "
                    f"'no available peer' logged {len(why)}x; traffic back {t_resume:.2f}s after "
                    f"restart ({a1} state after restart: "
                    + ", ".join(f"{s}@{t:.2f}s" for t, s in transitions) + ")")
        r.key = f"502 p99 {p99 * 1000:.1f} ms, resume {t_resume:.2f}s"
        r.target = f"502 p99 < 100 ms; reason logged; resumes <= {RISE * INTERVAL:.1f}s (+{SLACK}s slack)"
        r.check(p99 < 0.100, f"p99 of the 502s is {ms(p99)}")
        r.check(len(why) > 0 and len(live) > 0, "'no available peer'/'no live upstreams' not logged")
        r.check(not other, f"{len(other)} answers other than 502 while everything was down")
        r.check(t_resume <= RISE * INTERVAL + SLACK, f"traffic resumed only {t_resume:.2f}s after restart")
        r.note(f"fail_timeout (default 10s) against the down time ({M['s6_down']:.0f}s): see "
               "the state transitions above")
    finally:
        bed.stop()
    return r


def worker_sample(front):
    """(pid -> (min fd count, min VmRSS kB)) over 5 samples 0.1 s apart."""
    res = {}
    for _ in range(5):
        for p in front.worker_pids():
            try:
                fds, rss = fd_count(p), proc_status_kb(p, "VmRSS")
            except OSError:
                continue
            a, b = res.get(p, (fds, rss))
            res[p] = (min(a, fds), min(b, rss))
        time.sleep(0.1)
    return res


def s7_soak(M):
    dur, period = M["s7_duration"], M["s7_period"]
    r = Result(7, f"memory/fds, {dur:.0f}s, probes 100ms, flapping")
    bed = Bed("s7", check="type=http interval=100ms timeout=100ms rise=2 fall=2 uri=/health")
    try:
        bed.start()
        warm = Wrk(bed.front_port)
        time.sleep(3.0)
        warm.stop()
        time.sleep(1.0)
        start = worker_sample(bed.front)
        bed.start_load()
        t0 = now()
        flaps = 0
        k = 0
        while now() - t0 < dur:
            b = bed.backends[k % 3]
            t_cycle = now()
            b.kill9()
            flaps += 1
            time.sleep(max(0.0, min(period / 2, t0 + dur - now())))
            b.start(b.ports)
            time.sleep(max(0.0, min(t_cycle + period - now(), t0 + dur - now())))
            k += 1
        c = bed.stop_load()
        r.set_counts(c)
        bed.poller.wait(now(), lambda p: all(x["state"] == "up" for x in p.values()), 10,
                        "all peers up at the end")
        time.sleep(1.0)
        end = worker_sample(bed.front)
        st = fetch_status(bed.front_port)[2]
        checks = sum(p["health_checks"]["checks"] for p in st.values())
        same = sorted(start) == sorted(end)
        parts = []
        worst_fd, worst_rss = 0, 0.0
        for p in sorted(start):
            if p not in end:
                continue
            (f0, r0), (f1, r1) = start[p], end[p]
            worst_fd = max(worst_fd, abs(f1 - f0))
            worst_rss = max(worst_rss, (r1 - r0) / r0)
            parts.append(f"worker {p}: fds {f0}->{f1}, RSS {r0}->{r1} kB ({(r1 - r0) / r0 * 100:+.1f}%)")
        r.figure = "; ".join(parts) + f"; {flaps} flaps, {checks} checks"
        r.key = f"fds +-{worst_fd}, RSS {worst_rss * 100:+.1f}%"
        r.target = "same workers; fds +-2; RSS growth < 10%"
        r.check(same, f"worker pids changed: {sorted(start)} -> {sorted(end)}")
        r.check(worst_fd <= 2, f"fd count moved by {worst_fd}")
        r.check(worst_rss < 0.10, f"RSS grew {worst_rss * 100:.1f}%")
        r.note(f"failed client requests during flapping: {c['non2xx'] + c['sock']} (not a target)")
    finally:
        bed.stop()
    return r


SCENARIOS = {
    "1": s1_backend_killed, "kill": s1_backend_killed,
    "2": s2_backend_hangs, "hang": s2_backend_hangs,
    "3": s3_reload, "reload": s3_reload,
    "4": s4_binary_upgrade, "upgrade": s4_binary_upgrade,
    "5": s5_worker_killed, "worker": s5_worker_killed,
    "6": s6_all_down, "alldown": s6_all_down,
    "7": s7_soak, "soak": s7_soak,
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--short", action="store_const", dest="mode", const="short")
    g.add_argument("--long", action="store_const", dest="mode", const="long")
    ap.add_argument("scenario", nargs="*", help="1-7 or kill hang reload upgrade worker alldown soak")
    args = ap.parse_args()
    mode = args.mode or "short"
    M = MODES[mode]
    names = args.scenario or [str(i) for i in range(1, 8)]
    for n in names:
        if n not in SCENARIOS:
            ap.error(f"unknown scenario {n!r}")

    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    atexit.register(cleanup_all)

    def on_signal(sig, _frame):
        raise SystemExit(128 + sig)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    print(f"==> faults ({mode}): nginx {NGINX}, wrk -c{WRK_CONNS} with {WRK_PAUSE_MS} ms pause "
          f"+ {SAMPLER_THREADS} sampler threads, Connection: close", flush=True)
    results = []
    t_all = now()
    for n in names:
        fn = SCENARIOS[n]
        t0 = now()
        try:
            res = fn(M)
        except (Timeout, RuntimeError, OSError, KeyError, ValueError) as e:
            res = Result(int(fn.__name__[1]), fn.__name__)
            res.ok = False
            res.figure = "scenario aborted"
            res.notes.append(f"ERROR: {type(e).__name__}: {e}")
        finally:
            cleanup_all()
        res.seconds = now() - t0
        results.append(res)
        print(f"[{'PASS' if res.ok else 'FAIL'}] {res.num}. {res.name}: requests {res.requests}, "
              f"non-2xx {res.non2xx}, socket errors {res.sock}; {res.figure} "
              f"[target: {res.target}] ({res.seconds:.0f}s)", flush=True)
        for note in res.notes:
            print(f"       {note}", flush=True)

    print(f"\n==> summary ({mode}, {now() - t_all:.0f}s)")
    w = max(len(r.name) for r in results)
    k = max([len(r.key) for r in results] + [6])
    print(f"{'#':<2} {'scenario':<{w}} {'requests':>9} {'non-2xx':>8} {'sock err':>8} "
          f"{'figure':<{k}} {'time':>5}  result")
    for r in results:
        print(f"{r.num:<2} {r.name:<{w}} {r.requests:>9} {r.non2xx:>8} {r.sock:>8} "
              f"{r.key:<{k}} {r.seconds:>4.0f}s  {'PASS' if r.ok else 'FAIL'}")
    failed = [r for r in results if not r.ok]
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
