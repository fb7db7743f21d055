#!/usr/bin/env python3
"""Misbehaving TCP/HTTP peers for the health-check tests (Python 3, standard library only).

    python3 t/misbehave.py [--ttl SECONDS] [--no-stdin] MODE=PORT[:ARG][@DELAY] ...

Serves every MODE on 127.0.0.1:PORT (PORT 0: a free port chosen by the kernel), one thread per
connection. Once every socket listens it prints one line "MODE=PORT" per argument, in order,
then "ready", and flushes stdout. With @DELAY (seconds; needs a fixed PORT) that port only
starts listening DELAY seconds later (its line is printed at once): a peer that comes to life.

Modes:
  hang      accept, read whatever comes, never answer (until the client closes)
  reset     accept, wait up to 0.5 s for the request, then close with SO_LINGER 0 (an RST)
  garbage   answer "SSH-2.0-garbage\\r\\n" and binary junk, then close
  endless   read the request, send "HTTP/1.1 200 OK\\r\\n\\r\\n", then body bytes until the
            client closes
  badtls    read the ClientHello, answer random bytes that are not TLS, close
  flip      HTTP/1.1 server: 200 "up" for N seconds, then 500 "down" for N seconds, and so on
            (flip=PORT:N, or flip=PORT:UP:DOWN for different lengths); the clock starts at the
            first connection, so it follows the first probe, not the start of this process
  flop      like flip but starting with the 500 "down" phase (flop=PORT:DOWN[:UP])
  ok        HTTP/1.1 server always answering 200 "ok"
  early     HTTP/1.1 server answering "103 Early Hints" (with a Link header), then, 0.05 s later
            in a separate write, "100 Continue" and 200 "ok": interim 1xx responses before the
            final one, as HTTP/1.1 allows
  stale     answers the first request of a connection with 200 "ok" and keeps the connection
            open; the next request on it is not answered: the connection is closed (a reset,
            as it still holds the unread request). This is the race of a keep-alive connection
            closed by the server just as the client reuses it.

Every HTTP answer has Content-Length and, except in stale mode, Connection: close (and no body
for HEAD).
The process never outlives its user: it exits when its stdin reaches end of file (so a pipe
from the parent is enough: when the parent dies, the pipe closes), or after --ttl seconds
(default 600); --no-stdin disables the stdin watch for manual use.
"""

import os
import socket
import struct
import sys
import threading
import time

MODES = ("hang", "reset", "garbage", "endless", "badtls", "flip", "flop", "ok", "stale",
         "early")


def log(msg):
    if os.environ.get("MISBEHAVE_DEBUG"):
        sys.stderr.write("misbehave[%d]: %s\n" % (os.getpid(), msg))
        sys.stderr.flush()


def read_request(conn, timeout=5.0, limit=65536):
    """Reads up to the end of the request headers; returns the bytes read (b'' on EOF)."""
    conn.settimeout(timeout)
    data = b""
    try:
        while b"\r\n\r\n" not in data and len(data) < limit:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
    except (socket.timeout, OSError):
        pass
    return data


def close_gracefully(conn, drain=2.0):
    """FIN after our data, then read until the client closes, so that no RST is sent."""
    try:
        conn.shutdown(socket.SHUT_WR)
        conn.settimeout(drain)
        while conn.recv(4096):
            pass
    except OSError:
        pass
    finally:
        conn.close()


def http_answer(conn, status, body, interim=()):
    req = read_request(conn)
    head_only = req.startswith(b"HEAD ")
    reason = {200: "OK", 500: "Internal Server Error"}.get(status, "Status")
    try:
        for part in interim:
            conn.sendall(part)
            time.sleep(0.05)
    except OSError:
        pass
    out = ("HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
           "Connection: close\r\n\r\n" % (status, reason, len(body))).encode()
    if not head_only:
        out += body
    try:
        conn.sendall(out)
    except OSError:
        pass
    close_gracefully(conn)


class Server(object):
    def __init__(self, mode, port, arg, delay=0.0):
        self.mode = mode
        self.arg = arg
        self.delay = delay
        self.first = None          # time of the first connection (flip/flop clock)
        self.lock = threading.Lock()
        self.sock = None
        self.port = port
        if not delay:
            self.listen()
        if mode in ("flip", "flop"):
            parts = [float(x) for x in arg.split(":")] if arg else [2.0]
            first = parts[0]
            second = parts[1] if len(parts) > 1 else first
            if first <= 0 or second <= 0:
                raise ValueError("%s needs positive seconds" % mode)
            self.phases = (first, second)

    def listen(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]

    def serve(self):
        if self.sock is None:
            time.sleep(self.delay)
            try:
                self.listen()
            except OSError as e:
                sys.stderr.write("misbehave.py: %s=%d: %s\n" % (self.mode, self.port, e))
                return
            log("%s: listening on %d" % (self.mode, self.port))
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                if self.first is None:
                    self.first = time.time()
            t = threading.Thread(target=self.handle, args=(conn,))
            t.daemon = True
            t.start()

    def healthy_now(self):
        """flip: up first; flop: down first."""
        a, b = self.phases
        pos = (time.time() - self.first) % (a + b)
        first_phase = pos < a
        return first_phase if self.mode == "flip" else not first_phase

    def handle(self, conn):
        mode = self.mode
        log("%s: connection" % mode)
        try:
            if mode == "hang":
                conn.settimeout(None)
                while conn.recv(4096):
                    pass
                conn.close()
            elif mode == "reset":
                conn.settimeout(0.5)
                try:
                    conn.recv(4096)
                except OSError:
                    pass
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()
            elif mode == "garbage":
                conn.sendall(b"SSH-2.0-garbage\r\n" + b"\x00\xff\xfe" + os.urandom(64)
                             + b"\r\n\r\n")
                read_request(conn, timeout=1.0)
                close_gracefully(conn)
            elif mode == "endless":
                read_request(conn)
                conn.settimeout(30)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n")
                chunk = b"x" * 4095 + b"\n"
                while True:
                    conn.sendall(chunk)
            elif mode == "badtls":
                conn.settimeout(5)
                try:
                    conn.recv(16384)
                except OSError:
                    pass
                # 0x00 is no TLS record type, so no client can take this for TLS.
                conn.sendall(b"\x00this is not TLS\r\n" + os.urandom(256))
                close_gracefully(conn)
            elif mode in ("flip", "flop"):
                if self.healthy_now():
                    http_answer(conn, 200, b"up")
                else:
                    http_answer(conn, 500, b"down")
            elif mode == "ok":
                http_answer(conn, 200, b"ok")
            elif mode == "early":
                http_answer(conn, 200, b"ok", interim=(
                    b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n",
                    b"HTTP/1.1 100 Continue\r\n\r\n"))
            elif mode == "stale":
                if not read_request(conn):
                    return
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                             b"Content-Length: 2\r\n\r\nok")
                conn.settimeout(60)
                if conn.recv(4096):
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                    struct.pack("ii", 1, 0))
                conn.close()
        except OSError:
            pass
        finally:
            try:
                conn.close()
            except OSError:
                pass


def usage(msg):
    sys.stderr.write("misbehave.py: %s\nusage: misbehave.py [--ttl SECONDS] [--no-stdin] "
                     "MODE=PORT[:ARG] ...  (modes: %s)\n" % (msg, ", ".join(MODES)))
    sys.exit(2)


def main(argv):
    ttl = 600.0
    watch_stdin = True
    specs = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--ttl":
            i += 1
            if i >= len(argv):
                usage("--ttl needs a value")
            ttl = float(argv[i])
        elif a.startswith("--ttl="):
            ttl = float(a[len("--ttl="):])
        elif a == "--no-stdin":
            watch_stdin = False
        elif "=" in a:
            mode, rest = a.split("=", 1)
            if mode not in MODES:
                usage("unknown mode %r" % mode)
            rest, _, delay = rest.partition("@")
            port, _, arg = rest.partition(":")
            if not port.isdigit() or int(port) > 65535:
                usage("bad port in %r" % a)
            try:
                delay = float(delay) if delay else 0.0
            except ValueError:
                usage("bad delay in %r" % a)
            if delay and int(port) == 0:
                usage("%r: a delayed port must be given, not 0" % a)
            specs.append((mode, int(port), arg, delay))
        else:
            usage("bad argument %r" % a)
        i += 1
    if not specs:
        usage("no MODE=PORT given")

    try:
        servers = [Server(m, p, arg, d) for m, p, arg, d in specs]
    except (OSError, ValueError) as e:
        sys.stderr.write("misbehave.py: %s\n" % e)
        sys.exit(1)

    for s in servers:
        t = threading.Thread(target=s.serve)
        t.daemon = True
        t.start()

    if ttl > 0:
        killer = threading.Timer(ttl, lambda: os._exit(0))
        killer.daemon = True
        killer.start()

    out = "".join("%s=%d\n" % (s.mode, s.port) for s in servers) + "ready\n"
    sys.stdout.write(out)
    sys.stdout.flush()

    if watch_stdin:
        try:
            while os.read(0, 4096):
                pass
        except OSError:
            pass
        os._exit(0)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main(sys.argv[1:])
