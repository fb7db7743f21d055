#!/usr/bin/env python3
"""Rewrites t/dns.py's answers file so that one name's addresses change at a steady pace.

    resolve_churn.py ANSWERS.json NAME COUNT POOL INTERVAL_S [LIFETIME_S | --once]

NAME has COUNT A records taken from a pool of POOL loopback addresses 127.1.X.Y (all of
127.0.0.0/8 is loopback on Linux, so one backend listening on the wildcard address answers on
every one of them). Every INTERVAL_S seconds the window moves by one: one address leaves, the
next one of the pool joins (a rotating window, so the answer always has COUNT addresses and a
change is one address out, one in). The file is replaced atomically (temporary file, rename),
as t/dns.py expects; its "serial" counts the moves.

--once writes the first answer and exits. Otherwise it runs for LIFETIME_S seconds (default
900), or until it is killed.
"""
import json
import os
import sys
import time


def address(i):
    return "127.1.%d.%d" % (i // 250, i % 250 + 1)


def write(path, name, count, pool, serial):
    addrs = [address((serial + k) % pool) for k in range(count)]
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"ttl": 1, "serial": serial, "a": {name: addrs}}, f)
    os.rename(tmp, path)


def main():
    path, name = sys.argv[1], sys.argv[2]
    count, pool, interval = int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
    if count > pool or pool > 250 * 256:
        sys.exit("resolve_churn.py: need COUNT <= POOL <= 64000")
    write(path, name, count, pool, 0)
    if "--once" in sys.argv[6:]:
        return
    lifetime = float(sys.argv[6]) if len(sys.argv) > 6 else 900.0
    serial = 0
    start = time.monotonic()
    while (serial + 1) * interval <= lifetime:
        serial += 1
        time.sleep(max(0.0, start + serial * interval - time.monotonic()))
        write(path, name, count, pool, serial)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        os._exit(0)
