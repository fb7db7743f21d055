#!/usr/bin/env python3
"""A small authoritative DNS responder for the resolve tests (Python 3, standard library only).

    python3 t/dns.py [--lifetime SECONDS] [--no-stdin] [--pid-file FILE] [--log FILE]
                     PORT ANSWERS.json

Answers queries on 127.0.0.1:PORT over UDP and TCP (PORT 0: a free port chosen by the kernel,
the same number for both). Once both sockets listen it prints "dns=PORT", then "ready", and
flushes stdout.

ANSWERS.json is read again for every query, so a test changes the answers by rewriting it
(atomically: write a temporary file, then rename it over the old one). A file that does not
parse keeps the last good answers. Format (every key optional):

    {
      "ttl": 1,                                      TTL of every record (default 1)
      "a":    {"backend.test": ["127.0.0.1", "127.0.0.2"]},
      "aaaa": {"backend.test": ["::1"]},
      "srv":  {"_http._tcp.backend.test": [[priority, weight, port, "target.test"], ...]},
      "nxdomain": ["gone.test"],                     NXDOMAIN even if listed above
      "servfail": ["broken.test"],                   SERVFAIL (or true: for every name)
      "drop": false,                                 true (or a list of names): no answer at
                                                     all, as a resolver that times out
      "serial": 7                                    copied into the query log, nothing else
    }

Names match without regard to case or a trailing dot. A name that appears in none of "a",
"aaaa", "srv" is NXDOMAIN; a name that appears in one of them but not for the type asked is an
empty NOERROR answer (so AAAA is empty unless configured). SRV answers carry the targets' A and
AAAA records in the additional section when the file knows them (nginx ignores that section
and resolves the targets itself). Answers longer than 512 bytes over UDP are sent truncated
(TC bit, no records), so the client asks again over TCP.

--log FILE appends one line per query: "TIME PROTO TYPE NAME RESULT SERIAL", e.g.
"1716900000.123 udp A backend.test NOERROR/2 7" (RESULT is the rcode and the number of answer
records, or "DROP"). Malformed packets are ignored (logged as "? ? ? MALFORMED").

The process never outlives its user: it exits when its stdin reaches end of file (a pipe from
the parent is enough), or after --lifetime seconds (default 900); --no-stdin disables the
stdin watch for manual use.
"""

import argparse
import ipaddress
import json
import os
import socket
import struct
import sys
import threading
import time

T_A, T_NS, T_CNAME, T_SOA, T_AAAA, T_SRV = 1, 2, 5, 6, 28, 33
TYPE_NAMES = {T_A: "A", T_NS: "NS", T_CNAME: "CNAME", T_SOA: "SOA", T_AAAA: "AAAA",
              T_SRV: "SRV", 255: "ANY"}
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP = 0, 1, 2, 3, 4
RCODE_NAMES = {NOERROR: "NOERROR", FORMERR: "FORMERR", SERVFAIL: "SERVFAIL",
               NXDOMAIN: "NXDOMAIN", NOTIMP: "NOTIMP"}


class Malformed(Exception):
    pass


class Answers:
    """The answers file, re-read on every query; the last good content survives a bad file."""

    def __init__(self, path):
        self.path = path
        self.lock = threading.Lock()
        self.good = {}

    def load(self):
        try:
            with open(self.path, "rb") as f:
                data = json.loads(f.read().decode("utf-8"))
            if not isinstance(data, dict):
                raise ValueError("not an object")
            with self.lock:
                self.good = data
        except (OSError, ValueError) as e:
            sys.stderr.write("dns.py: %s: %s (keeping the last answers)\n" % (self.path, e))
        with self.lock:
            return self.good


def norm(name):
    return name.rstrip(".").lower()


def section(data, key):
    v = data.get(key) or {}
    return {norm(k): v[k] for k in v} if isinstance(v, dict) else {}


def in_list(data, key, name):
    v = data.get(key)
    if v is True:
        return True
    if isinstance(v, list):
        return name in {norm(x) for x in v if isinstance(x, str)}
    return False


def parse_name(buf, off):
    """Reads a (possibly compressed) name at off; returns (labels, offset after it)."""
    labels = []
    end = None
    jumps = 0
    while True:
        if off >= len(buf):
            raise Malformed("name runs past the packet")
        n = buf[off]
        if n & 0xC0 == 0xC0:
            if off + 1 >= len(buf):
                raise Malformed("truncated pointer")
            if end is None:
                end = off + 2
            off = ((n & 0x3F) << 8) | buf[off + 1]
            jumps += 1
            if jumps > 32:
                raise Malformed("pointer loop")
            continue
        if n & 0xC0:
            raise Malformed("bad label type")
        off += 1
        if n == 0:
            break
        if off + n > len(buf):
            raise Malformed("label runs past the packet")
        labels.append(bytes(buf[off:off + n]))
        off += n
        if sum(len(l) + 1 for l in labels) > 255:
            raise Malformed("name too long")
    return labels, (end if end is not None else off)


def encode_name(name):
    out = b""
    for label in name.rstrip(".").split("."):
        if not label:
            continue
        b = label.encode("ascii", "replace")[:63]
        out += bytes([len(b)]) + b
    return out + b"\0"


def rr(name, rtype, ttl, rdata):
    return encode_name(name) + struct.pack("!HHIH", rtype, 1, ttl, len(rdata)) + rdata


def addr_records(name, rtype, addrs, ttl):
    out = []
    for a in addrs if isinstance(addrs, list) else []:
        try:
            ip = ipaddress.ip_address(a)
        except ValueError:
            continue
        if rtype == T_A and ip.version == 4 or rtype == T_AAAA and ip.version == 6:
            out.append(rr(name, rtype, ttl, ip.packed))
    return out


def srv_records(name, entries, ttl):
    out, targets = [], []
    for e in entries if isinstance(entries, list) else []:
        try:
            prio, weight, port, target = int(e[0]), int(e[1]), int(e[2]), str(e[3])
        except (TypeError, ValueError, IndexError):
            continue
        rdata = struct.pack("!HHH", prio & 0xFFFF, weight & 0xFFFF, port & 0xFFFF)
        out.append(rr(name, T_SRV, ttl, rdata + encode_name(target)))
        targets.append(target)
    return out, targets


def answer(data, qname, qtype):
    """Returns (rcode, answers, additionals) or None to drop the query."""
    name = norm(qname)
    if data.get("drop") is True or in_list(data, "drop", name):
        return None
    if in_list(data, "servfail", name):
        return SERVFAIL, [], []
    if in_list(data, "nxdomain", name):
        return NXDOMAIN, [], []
    ttl = data.get("ttl", 1)
    ttl = ttl if isinstance(ttl, int) and 0 <= ttl < 2 ** 31 else 1
    a, aaaa, srv = section(data, "a"), section(data, "aaaa"), section(data, "srv")
    if name not in a and name not in aaaa and name not in srv:
        return NXDOMAIN, [], []
    ans, add = [], []
    if qtype in (T_A, 255) and name in a:
        ans += addr_records(qname, T_A, a[name], ttl)
    if qtype in (T_AAAA, 255) and name in aaaa:
        ans += addr_records(qname, T_AAAA, aaaa[name], ttl)
    if qtype in (T_SRV, 255) and name in srv:
        recs, targets = srv_records(qname, srv[name], ttl)
        ans += recs
        for t in targets:
            add += addr_records(t, T_A, a.get(norm(t)), ttl)
            add += addr_records(t, T_AAAA, aaaa.get(norm(t)), ttl)
    return NOERROR, ans, add


class Server:
    def __init__(self, answers, log_path):
        self.answers = answers
        self.log_path = log_path
        self.log_lock = threading.Lock()

    def log(self, proto, qtype, qname, result, serial):
        if not self.log_path:
            return
        line = "%.3f %s %s %s %s %s\n" % (time.time(), proto, qtype, qname or "?", result,
                                         serial)
        with self.log_lock:
            try:
                with open(self.log_path, "a") as f:
                    f.write(line)
            except OSError:
                pass

    def respond(self, query, proto):
        """Returns the response bytes for one query, or None for no answer."""
        try:
            if len(query) < 12:
                raise Malformed("short header")
            ident, flags, qd, _an, _ns, _ar = struct.unpack("!HHHHHH", query[:12])
            if flags & 0x8000:
                raise Malformed("a response, not a query")
            if qd < 1:
                raise Malformed("no question")
            labels, off = parse_name(query, 12)
            if off + 4 > len(query):
                raise Malformed("truncated question")
            qtype, qclass = struct.unpack("!HH", query[off:off + 4])
        except Malformed:
            self.log(proto, "?", "?", "MALFORMED", "-")
            return None
        qname = b".".join(labels).decode("ascii", "replace")
        tname = TYPE_NAMES.get(qtype, str(qtype))
        question = encode_name(qname) + struct.pack("!HH", qtype, qclass)
        rd = flags & 0x0100
        opcode = (flags >> 11) & 0xF
        data = self.answers.load()
        serial = data.get("serial", "-")
        if opcode != 0:
            rcode, ans, add = NOTIMP, [], []
        elif qclass not in (1, 255):
            rcode, ans, add = NOERROR, [], []
        else:
            res = answer(data, qname, qtype)
            if res is None:
                self.log(proto, tname, qname, "DROP", serial)
                return None
            rcode, ans, add = res
        # QR, AA, RD copied; no RA, no AD/CD (nginx wants the Z bits clear).
        hflags = 0x8000 | 0x0400 | rd | rcode
        body = question + b"".join(ans) + b"".join(add)
        resp = struct.pack("!HHHHHH", ident, hflags, 1, len(ans), 0, len(add)) + body
        if proto == "udp" and len(resp) > 512:
            resp = struct.pack("!HHHHHH", ident, hflags | 0x0200, 1, 0, 0, 0) + question
            self.log(proto, tname, qname, "TRUNCATED/%d" % len(ans), serial)
            return resp
        self.log(proto, tname, qname, "%s/%d" % (RCODE_NAMES.get(rcode, rcode), len(ans)),
                 serial)
        return resp

    def serve_udp(self, sock):
        while True:
            try:
                query, peer = sock.recvfrom(65535)
            except OSError:
                continue
            try:
                resp = self.respond(query, "udp")
                if resp is not None:
                    sock.sendto(resp, peer)
            except Exception as e:  # never die on one packet
                sys.stderr.write("dns.py: udp: %r\n" % (e,))

    def serve_tcp(self, lsock):
        while True:
            try:
                conn, _ = lsock.accept()
            except OSError:
                time.sleep(0.01)
                continue
            threading.Thread(target=self.tcp_conn, args=(conn,), daemon=True).start()

    def tcp_conn(self, conn):
        conn.settimeout(10)
        buf = b""
        try:
            while True:
                while len(buf) < 2 or len(buf) < 2 + struct.unpack("!H", buf[:2])[0]:
                    chunk = conn.recv(65535)
                    if not chunk:
                        return
                    buf += chunk
                n = struct.unpack("!H", buf[:2])[0]
                query, buf = buf[2:2 + n], buf[2 + n:]
                resp = self.respond(query, "tcp")
                if resp is not None:
                    conn.sendall(struct.pack("!H", len(resp)) + resp)
        except Exception:
            pass
        finally:
            conn.close()


def bind_pair(port):
    """UDP and TCP sockets on 127.0.0.1:port (port 0: one free number for both)."""
    for _ in range(50 if port == 0 else 1):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            udp.bind(("127.0.0.1", port))
            tcp.bind(("127.0.0.1", udp.getsockname()[1]))
            tcp.listen(64)
            return udp, tcp
        except OSError as e:
            udp.close()
            tcp.close()
            err = e
    raise err


def watch_stdin():
    try:
        while os.read(0, 4096):
            pass
    except OSError:
        pass
    os._exit(0)


def main():
    ap = argparse.ArgumentParser(description="authoritative DNS responder for tests")
    ap.add_argument("port", type=int)
    ap.add_argument("answers")
    ap.add_argument("--lifetime", type=float, default=900)
    ap.add_argument("--no-stdin", action="store_true")
    ap.add_argument("--pid-file")
    ap.add_argument("--log")
    args = ap.parse_args()

    udp, tcp = bind_pair(args.port)
    server = Server(Answers(args.answers), args.log)
    threading.Thread(target=server.serve_udp, args=(udp,), daemon=True).start()
    threading.Thread(target=server.serve_tcp, args=(tcp,), daemon=True).start()
    if args.pid_file:
        with open(args.pid_file + ".tmp", "w") as f:
            f.write("%d\n" % os.getpid())
        os.rename(args.pid_file + ".tmp", args.pid_file)
    sys.stdout.write("dns=%d\nready\n" % udp.getsockname()[1])
    sys.stdout.flush()
    if not args.no_stdin:
        threading.Thread(target=watch_stdin, daemon=True).start()
    time.sleep(args.lifetime)
    os._exit(0)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        os._exit(0)
