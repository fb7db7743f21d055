#!/usr/bin/env python3
"""A backend that answers every HTTP/1.1 request after a fixed delay (keep-alive supported).

    slow_backend.py PORT DELAY_MS

Loopback only; exits when its standard input closes (so it never outlives the benchmark).
"""
import asyncio
import sys
import threading
import os


async def serve(reader, writer, delay):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            await asyncio.sleep(delay)
            close = b"connection: close" in head.lower()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n"
                         + (b"Connection: close\r\n" if close else b"") + b"\r\nslow")
            await writer.drain()
            if close:
                break
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main(port, delay):
    server = await asyncio.start_server(lambda r, w: serve(r, w, delay), "127.0.0.1", port,
                                        backlog=1024)
    async with server:
        await server.serve_forever()


def watch_stdin():
    sys.stdin.read()
    os._exit(0)


if __name__ == "__main__":
    threading.Thread(target=watch_stdin, daemon=True).start()
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]) / 1000.0))
