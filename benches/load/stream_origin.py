#!/usr/bin/env python3
"""A token-streaming origin for the load benchmark's stream section (stdlib asyncio).

Every request on a keep-alive HTTP/1.1 connection gets a 200 with
`Transfer-Encoding: chunked` and --chunks chunks of --chunk-bytes bytes, --interval-ms
apart, as a model server streams tokens. The first chunk goes out with the response
head; chunk i is due at start + i * interval on an absolute schedule, so a late wake-up
does not push every later chunk back.

Each chunk is one record that carries its own send time, so the client can tell how
long each one spent between the origin's write and its own read whatever the proxy did
to the framing:

    "SSS TTTTTTTTTTTTTTTTTTT xxxx...x\\n"   SSS: sequence number, T: time.monotonic_ns()
                                           taken just before the write (CLOCK_MONOTONIC,
                                           the same clock in every process)

A request body (Content-Length or chunked) is read and dropped. Only 127.0.0.1.
"""
import argparse
import asyncio
import socket
import time

HEAD = (b"HTTP/1.1 200 OK\r\n"
        b"content-type: text/event-stream\r\n"
        b"cache-control: no-cache\r\n"
        b"transfer-encoding: chunked\r\n\r\n")


def record(seq, size):
    stamp = f"{seq:03d} {time.monotonic_ns():019d} ".encode()
    return stamp + b"x" * (size - len(stamp) - 1) + b"\n"


def chunk(data):
    return b"%x\r\n%s\r\n" % (len(data), data)


async def drop_body(reader, head):
    length, chunked = 0, False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value.strip())
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
                return
            await reader.readexactly(size + 2)
    elif length:
        await reader.readexactly(length)


async def serve(reader, writer, a):
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    loop = asyncio.get_running_loop()
    interval = a.interval_ms / 1000.0
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            await drop_body(reader, head)
            start = loop.time()
            writer.write(HEAD + chunk(record(0, a.chunk_bytes)))
            for seq in range(1, a.chunks):
                delay = start + seq * interval - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                writer.write(chunk(record(seq, a.chunk_bytes)))
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, ValueError):
        pass
    finally:
        writer.close()


async def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--chunks", type=int, default=200)
    ap.add_argument("--chunk-bytes", type=int, default=50)
    ap.add_argument("--interval-ms", type=float, default=5.0)
    a = ap.parse_args()
    if a.chunk_bytes < 26:
        ap.error("--chunk-bytes must hold the 25-byte stamp and the newline")
    server = await asyncio.start_server(lambda r, w: serve(r, w, a), "127.0.0.1", a.port,
                                        backlog=4096, reuse_address=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
