#!/usr/bin/env python3
"""Many concurrent streamed answers, timed chunk by chunk (stdlib asyncio).

Opens --conns keep-alive HTTP/1.1 connections to 127.0.0.1:--port. Each sends a GET,
reads the chunked answer of stream_origin.py (records of --record-bytes bytes, each
stamped with the origin's send time) and, while --duration has not passed, sends the
next one on the same connection. Records are cut from the de-chunked body, so a proxy
that splits or merges chunks is timed just the same.

Per stream it takes:
  ttfb          request written -> first byte of the answer
  first chunk   request written -> first record complete
  delay         for every record: read by this client - written by the origin (one
                clock, CLOCK_MONOTONIC, for both processes)
  gap           between two consecutive records of a stream, as read here
  streamed      the first record was read before the origin wrote the last one (a proxy
                that buffers the whole answer fails this)

Prints one JSON object on stdout: counts and percentiles in milliseconds.
"""
import argparse
import asyncio
import json
import resource
import time


def pct(sorted_xs, p):
    if not sorted_xs:
        return None
    k = min(len(sorted_xs) - 1, max(0, int(round(p / 100.0 * (len(sorted_xs) - 1)))))
    return sorted_xs[k]


class Stats:
    def __init__(self):
        self.ttfb, self.first, self.delay, self.gap = [], [], [], []
        self.streams = self.streamed = self.bad = self.errors = 0


class StreamConn(asyncio.Protocol):
    """One keep-alive connection that runs streams back to back until the deadline."""

    def __init__(self, a, stats, deadline, done):
        self.a, self.stats, self.deadline, self.done = a, stats, deadline, done
        self.request = (f"GET {a.path} HTTP/1.1\r\nHost: 127.0.0.1:{a.port}\r\n"
                        f"x-user-id: {a.uid}\r\naccept: text/event-stream\r\n\r\n").encode()
        self.transport = None

    # -- stream life
    def start_stream(self):
        self.buf = b""
        self.in_head = True
        self.status_ok = False
        self.chunk_left = -1      # -1: expecting a chunk-size line
        self.record = bytearray()
        self.records = 0
        self.first_recv = self.last_recv = None
        self.last_sent = None
        self.t_first_byte = None
        self.t_sent = time.monotonic_ns()
        self.transport.write(self.request)

    def end_stream(self, ok):
        st = self.stats
        if ok and self.records == self.a.chunks:
            st.streams += 1
            st.ttfb.append(self.t_first_byte - self.t_sent)
            st.first.append(self.first_recv - self.t_sent)
            if self.first_recv < self.last_sent:
                st.streamed += 1
        else:
            st.bad += 1
        if ok and time.monotonic() < self.deadline:
            self.start_stream()
        else:
            self.t_sent = None  # not in a stream: the close below is ours
            self.transport.close()

    # -- protocol callbacks
    def connection_made(self, transport):
        self.transport = transport
        self.start_stream()

    def connection_lost(self, exc):
        if self.t_sent is not None:
            self.stats.errors += 1  # closed in the middle of a stream
        self.t_sent = None
        if not self.done.done():
            self.done.set_result(None)

    def data_received(self, data):
        now = time.monotonic_ns()
        if self.t_first_byte is None:
            self.t_first_byte = now
        self.buf += data
        if self.in_head:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head, self.buf = self.buf[:end], self.buf[end + 4:]
            self.status_ok = head[9:12] == b"200"
            self.in_head = False
            if b"transfer-encoding: chunked" not in head.lower():
                self.end_stream(False)  # not the streamed answer (an error page?)
                return
        self.parse_body(now)

    def parse_body(self, now):
        buf = self.buf
        pos = 0
        while True:
            if self.chunk_left < 0:
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    break
                size = int(buf[pos:eol].split(b";")[0], 16)
                if size == 0:
                    # the last chunk; its (empty) trailer section ends with one more CRLF
                    if buf.find(b"\r\n", eol + 2) < 0:
                        break  # keep "0\r\n" in the buffer until the end arrives
                    self.buf = b""
                    self.end_stream(self.status_ok)
                    return
                pos = eol + 2
                self.chunk_left = size
            take = min(self.chunk_left, len(buf) - pos)
            if take > 0:
                self.add_body(buf[pos:pos + take], now)
                pos += take
                self.chunk_left -= take
            if self.chunk_left == 0:
                if len(buf) - pos < 2:
                    break
                pos += 2  # CRLF after the chunk data
                self.chunk_left = -1
            elif take == 0 or pos >= len(buf):
                break
        self.buf = buf[pos:]

    def add_body(self, data, now):
        rb = self.a.record_bytes
        self.record += data
        while len(self.record) >= rb:
            rec = bytes(self.record[:rb])
            del self.record[:rb]
            sent = int(rec[4:23])
            st = self.stats
            st.delay.append(now - sent)
            if self.first_recv is None:
                self.first_recv = now
            else:
                st.gap.append(now - self.last_recv)
            self.last_recv = now
            self.last_sent = sent
            self.records += 1


async def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--conns", type=int, default=50)
    ap.add_argument("--duration", type=float, default=5.0, help="start no new stream after this")
    ap.add_argument("--uid", default="1000500")
    ap.add_argument("--path", default="/v1/chat/completions")
    ap.add_argument("--chunks", type=int, default=200)
    ap.add_argument("--record-bytes", type=int, default=50)
    ap.add_argument("--deadline", type=float, default=120.0, help="hard bound on the whole run")
    a = ap.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < a.conns + 64:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(a.conns + 64, hard), hard))

    loop = asyncio.get_running_loop()
    stats = Stats()
    deadline = time.monotonic() + a.duration
    t0 = time.monotonic()
    waits = []
    for _ in range(a.conns):
        done = loop.create_future()
        try:
            await loop.create_connection(lambda d=done: StreamConn(a, stats, deadline, d), "127.0.0.1", a.port)
            waits.append(done)
        except OSError:
            stats.errors += 1
    try:
        await asyncio.wait_for(asyncio.gather(*waits), a.deadline)
    except asyncio.TimeoutError:
        stats.errors += 1
    wall = time.monotonic() - t0

    def ms(xs, ps):
        xs = sorted(xs)
        return {f"p{str(p).replace('.', '')}": (None if not xs else pct(xs, p) / 1e6) for p in ps}

    out = {
        "streams": stats.streams, "streamed": stats.streamed, "bad": stats.bad, "errors": stats.errors,
        "records": len(stats.delay), "seconds": wall,
        "ttfb": ms(stats.ttfb, (50, 99)), "first_chunk": ms(stats.first, (50, 99)),
        "delay": ms(stats.delay, (50, 99, 99.9)), "gap": ms(stats.gap, (50, 99, 99.9)),
        "gap_max": max(stats.gap) / 1e6 if stats.gap else None,
    }
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
