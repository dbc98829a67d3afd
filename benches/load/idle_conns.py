#!/usr/bin/env python3
"""Open N keep-alive HTTP/1.1 connections, send one request on each, keep them idle.

Protocol with the driver (stdout/stdin, one line each):
  -> "READY <ok> <failed>"   once every connection has its response (or failed)
  <- any line                 the driver has taken its memory reading
  -> "OPEN <still_open>"     connections the server had not closed by then
then every connection is closed and the process exits. A hard deadline (--deadline)
ends it whatever happens. Stdlib only.
"""
import argparse
import asyncio
import resource
import sys


async def open_one(host, port, uid, sem, timeout):
    async with sem:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
            req = (
                f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nx-user-id: {uid}\r\n\r\n"
            ).encode()
            writer.write(req)
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
            status = head.split(b" ", 2)[1]
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            if length:
                await asyncio.wait_for(reader.readexactly(length), timeout)
            if not status.startswith(b"2"):
                writer.close()
                return None
            return reader, writer
        except Exception:
            return None


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("-n", type=int, default=5000)
    ap.add_argument("--parallel", type=int, default=200, help="connects in flight at once")
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("--deadline", type=float, default=120.0)
    a = ap.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = a.n + 256
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard) if hard != resource.RLIM_INFINITY else want, hard))

    sem = asyncio.Semaphore(a.parallel)
    tasks = [open_one(a.host, a.port, 1000000 + (i % 1000), sem, a.timeout) for i in range(a.n)]
    results = await asyncio.gather(*tasks)
    conns = [r for r in results if r is not None]
    print(f"READY {len(conns)} {a.n - len(conns)}", flush=True)

    loop = asyncio.get_running_loop()
    go = loop.create_future()
    loop.add_reader(sys.stdin.fileno(), lambda: go.done() or go.set_result(None))
    await go
    loop.remove_reader(sys.stdin.fileno())
    still = sum(1 for reader, _ in conns if not reader.at_eof())
    print(f"OPEN {still}", flush=True)
    for _, writer in conns:
        writer.close()


if __name__ == "__main__":
    try:
        asyncio.run(asyncio.wait_for(main(), timeout=float(
            sys.argv[sys.argv.index("--deadline") + 1]) if "--deadline" in sys.argv else 120.0))
    except asyncio.TimeoutError:
        print("DEADLINE", flush=True)
        sys.exit(1)
