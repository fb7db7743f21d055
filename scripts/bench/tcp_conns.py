#!/usr/bin/env python3
"""TCP connections one after another to a stream frontend, for scripts/bench.sh.

    tcp_conns.py PORT N     N connections to 127.0.0.1:PORT, each read until the server
                            closes it; prints "N RATE" (connections per second) and fails if
                            any connection did not get an answer
    tcp_conns.py --wait PORT
                            until a connection to PORT gets an answer (at most 20 s)
"""
import socket
import sys
import time


def one(port, timeout=5.0):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        got = b""
        while True:
            b = s.recv(4096)
            if not b:
                return got
            got += b
    finally:
        s.close()


def main():
    if sys.argv[1] == "--wait":
        port = int(sys.argv[2])
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                if one(port, 1.0):
                    return 0
            except OSError:
                pass
            time.sleep(0.05)
        print("nothing answers on port %d" % port, file=sys.stderr)
        return 1
    port, n = int(sys.argv[1]), int(sys.argv[2])
    t0 = time.time()
    bad = 0
    for _ in range(n):
        if not one(port):
            bad += 1
    took = time.time() - t0
    print("%d %.0f" % (n, n / took if took > 0 else 0))
    if bad:
        print("%d connection(s) got no answer" % bad, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
