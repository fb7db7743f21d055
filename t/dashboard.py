#!/usr/bin/python3
"""The lb_status dashboard in a real browser: Debian's headless chromium, driven over the
DevTools protocol (python3-websocket). Run by t/141-dashboard.t, which starts nginx; prints one
"ok - ..." or "not ok - ..." line per check (and "# ..." lines to explain), which the .t turns
into Test::More results.

    dashboard.py --base http://127.0.0.1:PORT --upstream u --flip-dir DIR --shots DIR
                 [--status /status] [--ro /ro] [--api /lb-api/]

A backend of the .t answers its health check with 500 while DIR/down_PORT exists. Light traffic
(loopback, about 20 requests/s, stopped with the run) goes to BASE/ so that the charts move.
"""

import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import websocket  # Debian's python3-websocket

CHROMIUM = os.environ.get("CHROMIUM", "chromium")


def report(ok, what, *diag):
    print(("ok" if ok else "not ok") + " - " + what, flush=True)
    for d in diag:
        for line in str(d).splitlines():
            print("# " + line, flush=True)
    return ok


class Browser:
    """One headless chromium with one page, spoken to over its DevTools websocket."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="lb-chromium-")
        self.log = open(os.path.join(self.dir, "stderr.log"), "w")
        # Only the page under test: no background requests of the browser's own.
        args = [
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--no-default-browser-check", "--disable-extensions", "--disable-sync",
            "--disable-background-networking", "--disable-component-update",
            "--disable-default-apps", "--disable-domain-reliability", "--no-pings",
            "--disable-breakpad", "--metrics-recording-only", "--mute-audio",
            "--hide-scrollbars", "--disable-features=Translate,MediaRouter,OptimizationHints",
            "--user-data-dir=" + self.dir, "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0", "about:blank",
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=self.log)
        port_file = os.path.join(self.dir, "DevToolsActivePort")
        until = time.time() + 20
        while not (os.path.exists(port_file) and open(port_file).read().count("\n") >= 1):
            if time.time() > until or self.proc.poll() is not None:
                raise RuntimeError("chromium did not start: " + open(self.log.name).read()[-2000:])
            time.sleep(0.05)
        port = int(open(port_file).read().split("\n")[0])
        targets = json.load(urllib.request.urlopen("http://127.0.0.1:%d/json/list" % port, timeout=5))
        page = next(t for t in targets if t["type"] == "page")
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=15,
                                              suppress_origin=True)
        self.next_id = 0
        self.events = []
        for domain in ("Page", "Runtime", "Network", "Log"):
            self.call(domain + ".enable")

    def call(self, method, **params):
        self.next_id += 1
        me = self.next_id
        self.ws.send(json.dumps({"id": me, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == me:
                if "error" in msg:
                    raise RuntimeError("%s: %s" % (method, msg["error"]))
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)

    def pump(self):
        """Takes the events that arrived meanwhile."""
        self.call("Runtime.evaluate", expression="0")

    def js(self, expression):
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                      awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError("page script failed: %s" % json.dumps(r["exceptionDetails"])[:500])
        return r["result"].get("value")

    def wait(self, expression, seconds):
        """Waits for a page expression to be truthy; returns (value, seconds waited)."""
        t0 = time.time()
        while True:
            v = self.js(expression)
            if v or time.time() - t0 > seconds:
                return v, time.time() - t0
            time.sleep(0.05)

    def goto(self, url):
        """Loads url and returns once its load event fired."""
        seen = len(self.events)
        self.call("Page.navigate", url=url)
        until = time.time() + 10
        while not any(e["method"] == "Page.loadEventFired" for e in self.events[seen:]):
            if time.time() > until:
                raise RuntimeError("%s did not load within 10 s" % url)
            time.sleep(0.05)
            self.pump()

    def size(self, width, height, mobile=False):
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                  deviceScaleFactor=1, mobile=mobile)

    def click(self, selector):
        """A real click (mouse events at the element's centre), as a person makes it."""
        box = self.js("(function(){var e=document.querySelector(%s); if(!e) return null;"
                      "e.scrollIntoView({block:'center'}); var r=e.getBoundingClientRect();"
                      "return [r.left+r.width/2, r.top+r.height/2];})()" % json.dumps(selector))
        if not box:
            raise RuntimeError("nothing to click at " + selector)
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1],
                      button="left", clickCount=1)

    def screenshot(self, path):
        shot = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        with open(path, "wb") as f:
            f.write(base64.b64decode(shot["data"]))

    def close(self):
        try:
            self.ws.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            shutil.rmtree(self.dir, ignore_errors=True)


def get_json(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.load(r)


def traffic(base, stop):
    """About 20 requests/s to the upstream until `stop` is set (bounded by the run)."""
    until = time.time() + 120
    while not stop.is_set() and time.time() < until:
        try:
            urllib.request.urlopen(base + "/", timeout=2).read()
        except (urllib.error.URLError, OSError):
            pass
        stop.wait(0.05)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--flip-dir", required=True)
    ap.add_argument("--shots", required=True)
    ap.add_argument("--status", default="/status")
    ap.add_argument("--ro", default="/ro")
    ap.add_argument("--api", default="/lb-api/")
    # A peer of a stream upstream named as --upstream (the page keeps the two apart).
    ap.add_argument("--stream-peer")
    a = ap.parse_args()
    os.makedirs(a.shots, exist_ok=True)
    page = a.base + a.status + "?format=html"
    status_json = a.base + a.status + "?format=json"

    def upstream(kind="http"):
        return next(u for u in get_json(status_json)["upstreams"]
                    if u["name"] == a.upstream and u.get("kind", "http") == kind)

    def api_peer(addr, kind="http"):
        return get_json("%s%supstreams/%s/peers/%s%s" % (a.base, a.api, urllib.parse.quote(a.upstream, safe=""), addr,
                                                          "?kind=stream" if kind == "stream" else ""))

    # The http upstream's section (a stream upstream may have the same name).
    sec = "section.u[data-upstream=%s][data-kind=http]" % json.dumps(a.upstream)

    def row(addr, what):
        return "(function(){var r=document.querySelector('tr.peer[data-address=\"%s\"]');" \
               "return r ? %s : null;})()" % (addr, what)

    stop = threading.Event()
    feeder = threading.Thread(target=traffic, args=(a.base, stop), daemon=True)
    feeder.start()
    b = Browser()
    try:
        b.size(1280, 900)
        b.goto(page)
        polls, took = b.wait("document.body && +(document.body.getAttribute('data-polls')||0) >= 2", 10)
        report(bool(polls), "the page polled the JSON twice (%.1f s after load)" % took)

        peers = upstream()["peers"]
        n = len(peers)
        charts = b.js("Array.from(document.querySelectorAll('%s svg.chart'))"
                      ".map(function(s){return s.querySelectorAll('path[data-peer]').length;})" % sec)
        # The rate chart has a line for every peer (0 for the backup), the latency chart for
        # those that answered.
        report(charts is not None and len(charts) == 2 and charts[0] == n and charts[1] >= 1,
               "two charts for the upstream, a line per peer in the rate chart", "lines: %s, peers: %d" % (charts, n))

        def rows_match(kind="http"):
            want = sorted((p["address"], p["state"], str(p["weight"])) for p in upstream(kind)["peers"])
            got = b.js("Array.from(document.querySelectorAll('section.u[data-upstream=%s][data-kind=%s] tr.peer'))"
                       ".map(function(r){return [r.getAttribute('data-address'),"
                       "r.querySelector('.state').textContent, r.querySelector('input.weight').value];})"
                       % (json.dumps(a.upstream), kind))
            return sorted(tuple(g) for g in got) == want, want, got

        for _ in range(20):
            same, want, got = rows_match()
            if same:
                break
            time.sleep(0.1)
        report(same, "peer rows match the JSON (address, state, weight)", "JSON: %s" % want, "page: %s" % got)

        # Every upstream, its name as written (one of the .t's names is HTML markup), http and
        # stream ones apart.
        names = sorted((u.get("kind", "http"), u["name"]) for u in get_json(status_json)["upstreams"])
        shown = b.js("Array.from(document.querySelectorAll('section.u')).map(function(s){"
                     "return [s.getAttribute('data-kind'), s.getAttribute('data-upstream'),"
                     " s.querySelector('h2').textContent, s.querySelector('h2').children.length];})")
        heading = {"http": "upstream ", "stream": "stream upstream "}
        report(sorted((x[0], x[1]) for x in shown) == names
               and all(x[2] == heading[x[0]] + x[1] and x[3] == 0 for x in shown),
               "a section per upstream, stream ones apart, names shown as text (markup in a name stays text)",
               shown)
        if a.stream_peer:
            for _ in range(20):
                same, want, got = rows_match("stream")
                if same:
                    break
                time.sleep(0.1)
            report(same, "the stream upstream of the same name has its own rows, matching its JSON",
                   "JSON: %s" % want, "page: %s" % got)

        wide = b.js("[document.documentElement.scrollWidth, window.innerWidth]")
        report(wide[0] <= wide[1], "no horizontal scrolling at 1280 px", "scrollWidth %d, window %d" % tuple(wide))

        # A backend's health flips: its row says so within 3 s, with the reason.
        victim = peers[1]["address"]
        flag = os.path.join(a.flip_dir, "down_" + victim.rsplit(":", 1)[1])
        open(flag, "w").close()
        t0 = time.time()
        state, took = b.wait(row(victim, "r.querySelector('.state').textContent === 'unhealthy'"), 5)
        report(bool(state) and took <= 3.0, "a backend failing its checks shows as unhealthy within 3 s",
               "after %.2f s" % took)
        why = b.js(row(victim, "r.querySelector('.since').textContent"))
        report(why is not None and "HTTP 500" in why, "its row gives the reason", why)
        change = b.js("Array.from(document.querySelectorAll('ol.changes li')).map(function(l){return l.textContent;})")
        report(any(victim in c and "up \u2192 unhealthy" in c and "HTTP 500" in c for c in change or []),
               "the state change is listed with its time and reason", change)
        band = b.js(row(victim, "r.querySelectorAll('svg.tl rect[data-state=unhealthy]').length"))
        report(band and band >= 1, "its health timeline has an unhealthy band")
        os.unlink(flag)
        state, took = b.wait(row(victim, "r.querySelector('.state').textContent === 'up'"), 5)
        report(bool(state) and took <= 3.0, "and shows up again within 3 s", "after %.2f s" % took)
        time.sleep(1.5)   # a little traffic on every peer for the picture
        b.screenshot(os.path.join(a.shots, "dashboard-1280.png"))
        print("# screenshot: %s/dashboard-1280.png" % a.shots)

        # The admin buttons call lb_api.
        target = peers[0]["address"]
        b.click('tr.peer[data-address="%s"] button.admin-drain' % target)
        t0 = time.time()
        admin = None
        while time.time() - t0 < 3:
            admin = api_peer(target)["admin"]
            if admin == "drain":
                break
            time.sleep(0.05)
        report(admin == "drain", "clicking drain drains the peer through lb_api", "admin %s after %.2f s" % (admin, time.time() - t0))
        state, took = b.wait(row(target, "r.querySelector('.state').textContent === 'draining'"), 3)
        report(bool(state), "and the page shows it draining", "after %.2f s" % took)
        b.click('tr.peer[data-address="%s"] button.admin-up' % target)
        ok = False
        for _ in range(60):
            if api_peer(target)["admin"] == "up":
                ok = True
                break
            time.sleep(0.05)
        report(ok, "clicking up brings it back")
        b.js(row(target, "(function(){var i=r.querySelector('input.weight'); i.focus(); i.select(); return 1;})()"))
        b.call("Input.insertText", text="3")
        b.click('tr.peer[data-address="%s"] button.set-weight' % target)
        w = None
        for _ in range(60):
            w = api_peer(target)["weight"]
            if w == 3:
                break
            time.sleep(0.05)
        report(w == 3, "typing 3 in its weight field and clicking set changes its weight", "weight %s" % w)
        b.wait("/done$/.test(document.getElementById('note').textContent)", 2)
        note = b.js("document.getElementById('note').textContent")
        report(note is not None and "done" in note, "the page says the change was made", note)

        if a.stream_peer:
            # The stream peer's buttons act on the stream upstream (?kind=stream), not on the
            # http one of the same name.
            b.click('section.u[data-kind=stream] tr.peer[data-address="%s"] button.admin-drain' % a.stream_peer)
            admin = None
            for _ in range(60):
                admin = api_peer(a.stream_peer, "stream")["admin"]
                if admin == "drain":
                    break
                time.sleep(0.05)
            http_admins = sorted(set(p["admin"] for p in upstream()["peers"]))
            report(admin == "drain" and http_admins == ["up"],
                   "clicking drain on a stream peer drains it in the stream upstream only",
                   "stream peer admin %s, http peers %s" % (admin, http_admins))
            # As for the http peer: up once the page shows the drain (a poll redraws the row).
            srow = "(function(){var r=document.querySelector('section.u[data-kind=stream] " \
                   "tr.peer[data-address=\"%s\"]');return r ? %s : null;})()"
            state, took = b.wait(srow % (a.stream_peer, "r.querySelector('.state').textContent === 'draining'"), 3)
            report(bool(state), "and the page shows the stream peer draining", "after %.2f s" % took)
            b.click('section.u[data-kind=stream] tr.peer[data-address="%s"] button.admin-up' % a.stream_peer)
            for _ in range(60):
                admin = api_peer(a.stream_peer, "stream")["admin"]
                if admin == "up":
                    break
                time.sleep(0.05)
            report(admin == "up", "and up brings it back", "admin %s" % admin)

        # Phone width: no sideways scrolling either.
        b.size(390, 844, mobile=True)
        b.wait("+(document.body.getAttribute('data-polls')) > %d" % b.js("+document.body.getAttribute('data-polls')"), 3)
        narrow = b.js("[document.documentElement.scrollWidth, window.innerWidth]")
        report(narrow[0] <= narrow[1], "no horizontal scrolling at 390 px (a phone)", "scrollWidth %d, window %d" % tuple(narrow))
        b.screenshot(os.path.join(a.shots, "dashboard-phone.png"))
        b.size(1280, 900)

        # Without lb_api named, the page is read-only and says so.
        b.goto(a.base + a.ro + "?format=html")
        b.wait("document.body && +(document.body.getAttribute('data-polls')||0) >= 1", 5)
        ro = b.js("[document.getElementById('ro').textContent, document.querySelectorAll('#dash button, #dash input').length,"
                  " document.querySelectorAll('#dash %s tr.peer').length]" % sec)
        report(ro[0].startswith("read-only") and ro[1] == 0 and ro[2] == n,
               "without api= the page lists the peers, read-only, with no buttons", ro)

        # Every request stayed on the page's server; nothing went wrong in the console.
        b.pump()
        origin = a.base.rstrip("/")
        urls = [e["params"]["request"]["url"] for e in b.events if e["method"] == "Network.requestWillBeSent"]
        away = [u for u in urls if not (u.startswith(origin + "/") or u.startswith("data:") or u.startswith("about:"))]
        report(not away and len(urls) > 3, "%d requests, all to %s" % (len(urls), origin), *away)
        errors = []
        for e in b.events:
            m, p = e["method"], e["params"]
            if m == "Runtime.exceptionThrown":
                errors.append("exception: " + json.dumps(p["exceptionDetails"])[:300])
            elif m == "Runtime.consoleAPICalled" and p["type"] in ("error", "assert", "warning"):
                errors.append("console.%s: %s" % (p["type"], json.dumps(p["args"])[:300]))
            elif m == "Log.entryAdded" and p["entry"]["level"] in ("error", "warning"):
                errors.append("log %s: %s %s" % (p["entry"]["level"], p["entry"]["text"], p["entry"].get("url", "")))
        report(not errors, "no console error or warning (CSP violations included)", *errors)

        # Without JavaScript: today's table, refreshing itself.
        b.call("Emulation.setScriptExecutionDisabled", value=True)
        b.goto(page)
        nojs = b.js("[document.body.classList.contains('live'), document.querySelectorAll('#tables tr').length,"
                    " getComputedStyle(document.getElementById('tables')).display,"
                    " document.documentElement.scrollWidth <= window.innerWidth]")
        ups = get_json(status_json)["upstreams"]
        rows = sum(len(u["peers"]) + 1 for u in ups)    # a heading row per table
        report(nojs[0] is False and nojs[1] == rows and nojs[2] != "none" and nojs[3],
               "without JavaScript the page shows the table (a row per peer), no sideways scrolling", nojs)
        b.screenshot(os.path.join(a.shots, "dashboard-nojs.png"))
    finally:
        stop.set()
        b.close()


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # a broken run is a failed check, with what broke it
        report(False, "the browser run completed", repr(e))
        sys.exit(1)
