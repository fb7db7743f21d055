#!/usr/bin/env python3
"""The kernel's share of a TCP connect check, without nginx: per probe the same system calls
nginx's connect path and our probe make (socket, FIONBIO, connect, epoll add, SO_ERROR,
SO_LINGER 0, close with a reset), RATE probes a second for SECONDS, over the peers of the
`scale` scenario (PEERS addresses 127.A.B.C, ports BASE + (i / 250) % NPORTS), or with ADDR
the peers ADDR:BASE + i % NPORTS (the `checks1000stream` scenario: 1,000 ports of 127.0.0.1).

Prints "PROBES_PER_S USER_PCT KERNEL_PCT" (percent of one core). The kernel part is the floor
any connect-based checker pays on this machine (on loopback the kernel also runs the listening
side's handshake in the caller's context); the user part is Python's, not a floor.

Usage: connect_floor.py PEERS BASE NPORTS RATE SECONDS [ADDR]
"""
import fcntl
import os
import select
import socket
import struct
import sys
import termios
import time


def main():
    peers, base, nports, rate, secs = (int(a) for a in sys.argv[1:6])
    if len(sys.argv) > 6:
        addrs = [(sys.argv[6], base + i % nports) for i in range(peers)]
    else:
        addrs = [
            (f"127.{1 + i % 250}.{1 + (i // 250) % 250}.{1 + (i // 62500) % 250}",
             base + (i // 250) % nports)
            for i in range(peers)
        ]
    ep = select.epoll()
    linger = struct.pack("ii", 1, 0)
    on = struct.pack("i", 1)
    n = 0
    t0 = time.monotonic()
    r0 = os.times()
    # Ten batches a second; the next batch goes out once the last one is closed.
    while time.monotonic() - t0 < secs:
        tick = time.monotonic()
        batch = []
        for _ in range(max(1, rate // 10)):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            fcntl.ioctl(s, termios.FIONBIO, on)
            s.connect_ex(addrs[n % peers])
            ep.register(s.fileno(), select.EPOLLIN | select.EPOLLOUT | select.EPOLLET)
            batch.append(s)
            n += 1
        time.sleep(max(0.0, 0.1 - (time.monotonic() - tick)))
        ep.poll(0)
        for s in batch:
            s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            s.close()
    r1 = os.times()
    el = time.monotonic() - t0
    print(f"{n / el:.0f} {100 * (r1.user - r0.user) / el:.2f} {100 * (r1.system - r0.system) / el:.2f}")


if __name__ == "__main__":
    main()
