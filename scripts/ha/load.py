#!/usr/bin/env python3
"""Steady request load for scripts/ha/ha.py: runs in the client's network namespace.

Sends `GET /` to HOST:PORT at a fixed rate, each request on a new connection (`Connection:
close`) in its own thread, each bounded by TIMEOUT seconds (connect + response). Prints one
line per finished request, in the order they finish:

    <seq> <sent> <ended> <status or 0> <X-LB-Host or -> <backend or -> <error or ->

times in seconds of CLOCK_MONOTONIC (the same clock as the orchestrator's time.monotonic()).
Stops sending when stdin is closed or after MAX seconds, whichever comes first, then waits for
the requests in flight (at most TIMEOUT) and exits.
"""

import argparse
import socket
import sys
import threading
import time


def one(seq, host, port, timeout, out, lock):
    sent = time.monotonic()
    status, lbhost, backend, err = 0, "-", "-", "-"
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(max(0.001, sent + timeout - time.monotonic()))
            s.sendall(b"GET / HTTP/1.1\r\nHost: ha-test\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                left = sent + timeout - time.monotonic()
                if left <= 0:
                    raise socket.timeout("timed out")
                s.settimeout(left)
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            raw_head, _, body = data.partition(b"\r\n\r\n")
            head = raw_head.decode("latin-1").split("\r\n")
            parts = head[0].split(" ")
            if not data:
                err = "closed-without-answer"
            elif len(parts) < 2 or not parts[0].startswith("HTTP/1."):
                err = "bad-response"
            else:
                status = int(parts[1])
                for line in head[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "x-lb-host":
                        lbhost = value.strip() or "-"
                # The backends answer "backend PORT".
                words = body.split()
                if len(words) == 2 and words[0] == b"backend":
                    backend = words[1].decode("latin-1")
                elif status == 200:
                    err = "incomplete-body"
    except socket.timeout:
        err = "timeout"
    except OSError as e:
        err = (e.strerror or type(e).__name__).replace(" ", "-")
    except ValueError:
        err = "bad-response"
    ended = time.monotonic()
    with lock:
        out.write(f"{seq} {sent:.6f} {ended:.6f} {status} {lbhost} {backend} {err}\n")
        out.flush()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--rate", type=float, default=50.0)
    ap.add_argument("--timeout", type=float, default=1.0)
    ap.add_argument("--max", type=float, default=30.0)
    a = ap.parse_args()

    stop = threading.Event()

    def watch_stdin():
        sys.stdin.read()
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    lock = threading.Lock()
    period = 1.0 / a.rate
    start = time.monotonic()
    threads = []
    seq = 0
    while not stop.is_set() and time.monotonic() - start < a.max:
        t = threading.Thread(target=one, args=(seq, a.host, a.port, a.timeout, sys.stdout, lock))
        t.start()
        threads.append(t)
        seq += 1
        # A steady rate: the next request is due at start + seq * period, whatever the last
        # one took (no drift), and no catching up in a burst after a stall of this process.
        delay = start + seq * period - time.monotonic()
        if delay > 0:
            stop.wait(delay)
        elif delay < -period:
            start -= delay  # fell behind (this process stalled): skip, do not burst
        threads = [t for t in threads if t.is_alive()]
    for t in threads:
        t.join()


if __name__ == "__main__":
    main()
