#!/usr/bin/env python3
"""Side-by-side load benchmark driver: graygate vs nginx vs HAProxy (stdlib only).

run.sh installs the tools, builds graygate and then runs this file. It can also be run
by itself once nginx, haproxy, wrk, h2load, oha, openssl and a release graygate are
there:

    python3 benches/load/bench.py --graygate target/release/graygate [--quick] [--sections post]

Every process it starts runs in its own session (process group); all of them are
killed at exit, on SIGINT/SIGTERM/SIGHUP as well. Every external command runs with a
hard timeout. Only 127.0.0.1 is used.

Files beside it: configs.py (the proxies' and the origin's configs), mixed_rules.py
(the mixed rule chain), report.py (the markdown report), load.lua (wrk's requests),
idle_conns.py (the memory test's client), stream_origin.py and stream_client.py (the
streamed-answer section).
"""
import argparse
import atexit
import datetime
import http.client
import json
import os
import platform
import re
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import configs
import mixed_rules
import report
from report import fmt, log, med, ms, say

HERE = os.path.dirname(os.path.abspath(__file__))
LUA = os.path.join(HERE, "load.lua")
IDLE = os.path.join(HERE, "idle_conns.py")
STREAM_ORIGIN = os.path.join(HERE, "stream_origin.py")
STREAM_CLIENT = os.path.join(HERE, "stream_client.py")
CLK = os.sysconf("SC_CLK_TCK")

PROXIES = ["graygate", "nginx", "haproxy"]
# Every target but direct: (proxy process, listener or None for the shape's own). The
# variants are other listeners of the same process with one request-handling option
# changed (configs.py).
TARGET = {
    "graygate": ("graygate", None),
    "nginx": ("nginx", None),
    "haproxy": ("haproxy", None),
    "nginx-stream": ("nginx", "stream"),
    "haproxy-buffer": ("haproxy", "buffer"),
    "haproxy-nodelay": ("haproxy", "nodelay"),
}
BASE_TARGETS = ["direct", "graygate", "nginx", "haproxy"]
POST_TARGETS = ["direct", "graygate", "nginx", "nginx-stream", "haproxy", "haproxy-buffer"]
STREAM_TARGETS = ["direct", "graygate", "nginx", "nginx-stream", "haproxy", "haproxy-nodelay"]

SECTIONS = ["get", "post", "h2", "tls", "stream", "memory", "rules"]

# Ports (127.0.0.1 only), moved as one by --port-offset; see set_ports.
P = {}


def set_ports(offset):
    o = offset
    P.clear()
    P.update({
        "origin": {"blue": 18001 + o, "green": 18002 + o, "canary": 18003 + o, "status": 18004 + o,
                   "blue-h2c": 18011 + o, "blue-tls": 18012 + o},
        "stream_origin": 18005 + o,
        "main_base": 18080 + o,      # the proxies: base + configs.LISTENERS offsets (18080-18092)
        "stream_base": 18180 + o,    # the stream section's proxies (18180-18192)
        "admin": 18901 + o, "stream_admin": 18902 + o,
        "growth_base": 18100 + o,    # one port per growth variant (18100-18117)
        "growth_admin": 18950 + o,   # (18950-18967)
    })


def all_ports():
    ports = list(P["origin"].values()) + [P["stream_origin"], P["admin"], P["stream_admin"]]
    for base in (P["main_base"], P["stream_base"]):
        ports += [base + off for lst in configs.LISTENERS.values() for off in lst.values()]
    ports += [P["growth_base"] + i for i in range(18)] + [P["growth_admin"] + i for i in range(18)]
    return sorted(set(ports))


class Shape:
    """One request shape of the max-load sections: a load tool, the listener it hits,
    the targets, wrk script arguments and, where the shape has one, its fixed-rate
    latency test."""

    def __init__(self, key, title, tool, listener, targets, lua=(), latency=None):
        self.key, self.title, self.tool, self.listener = key, title, tool, listener
        self.targets, self.lua, self.latency = targets, list(lua), latency


POST_ARGS = ["method=POST", "path=/v1/chat/completions"]
SHAPES = {
    "get": Shape("get", "GET, no body, HTTP/1.1 keep-alive (wrk)", "wrk", "main", BASE_TARGETS,
                 latency={}),
    "post-2k": Shape("post-2k", "POST, 2 KiB JSON body, HTTP/1.1 keep-alive (wrk)", "wrk", "main",
                     POST_TARGETS, POST_ARGS + ["body=2048"], latency={"body": 2048}),
    "post-64k": Shape("post-64k", "POST, 64 KiB JSON body, HTTP/1.1 keep-alive (wrk)", "wrk", "main",
                      POST_TARGETS, POST_ARGS + ["body=65536"]),
    "h2c": Shape("h2c", "GET over h2c, prior knowledge (h2load)", "h2load", "h2c", BASE_TARGETS,
                 latency={"http2": True}),
    "tls-h1": Shape("tls-h1", "GET over HTTP/1.1 and TLS 1.3, keep-alive (wrk)", "wrk", "tls", BASE_TARGETS),
    "tls-h2": Shape("tls-h2", "GET over h2 and TLS 1.3 (h2load)", "h2load", "tls", BASE_TARGETS),
}
SECTION_SHAPES = {"get": ["get"], "post": ["post-2k", "post-64k"], "h2": ["h2c"], "tls": ["tls-h1", "tls-h2"]}
# the shapes an --strace-origin pass follows
STRACE_SHAPES = ("get", "post-2k", "post-64k")

N_IDS = 1000           # distinct user ids the load cycles through (see load.lua)
ID_BASE = 1000000
WL_FROM_LOAD = 20      # load ids on the main whitelist (ids 1000000..1000019)
WL_FROM_LOAD_GROWTH = 10
# File descriptors: raise the soft limit to the hard one (children inherit it); every
# proxy is configured to accept MAX_CONNS client connections, which leaves room for the
# upstream side within that limit (5,000 idle connections need far less).
_SOFT, _HARD = resource.getrlimit(resource.RLIMIT_NOFILE)
FD_LIMIT = min(_HARD if _HARD != resource.RLIM_INFINITY else 1 << 20, 1 << 20)
if _SOFT < FD_LIMIT:
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, _HARD))
MAX_CONNS = max(1024, min(20000, (FD_LIMIT - 200) // 2))



STARTED = []  # every Popen we started (each is a session / process-group leader)
PGID_FILE = None


def _record_pgids():
    if PGID_FILE:
        with open(PGID_FILE, "w") as f:
            for p in STARTED:
                if p.poll() is None:
                    f.write(f"{p.pid}\n")


def spawn(argv, cpus=None, logfile=None, env=None, stdin=None, stdout=None):
    if cpus is not None:
        argv = ["taskset", "-c", cpus] + list(argv)
    logf = open(logfile, "ab") if logfile else subprocess.DEVNULL
    p = subprocess.Popen(argv, stdin=stdin or subprocess.DEVNULL, stdout=stdout or logf,
                         stderr=logf, env=env, start_new_session=True)
    STARTED.append(p)
    _record_pgids()
    return p


def descendants(pid):
    """pid and every process below it (scans /proc for parent links)."""
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            kids.setdefault(ppid, []).append(int(d))
        except (OSError, IndexError, ValueError):
            pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def kill(p, grace=5.0):
    """Stop one started process and its whole process group (by its id)."""
    if p is None:
        return
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(p.pid, signal.SIGKILL)  # leftovers in the group (nginx workers...)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        p.wait(timeout=2)
    except subprocess.TimeoutExpired:
        pass
    if p in STARTED:
        STARTED.remove(p)
    _record_pgids()


def kill_all():
    for p in list(STARTED):
        kill(p, grace=2.0)


def _on_signal(signum, _frame):
    log(f"signal {signum}: stopping everything")
    kill_all()
    sys.exit(128 + signum)


def run(argv, timeout, cpus=None, stdin_data=None):
    """Run a command to completion (in its own group), killed after `timeout` s."""
    if cpus is not None:
        argv = ["taskset", "-c", cpus] + list(argv)
    p = subprocess.Popen(argv, stdin=subprocess.PIPE if stdin_data else subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         start_new_session=True)
    STARTED.append(p)
    _record_pgids()
    try:
        out, err = p.communicate(input=stdin_data, timeout=timeout)
    except subprocess.TimeoutExpired:
        kill(p, grace=1)
        out, err = p.communicate()
        return -9, out.decode(errors="replace"), err.decode(errors="replace") + "\n[timeout]"
    finally:
        if p in STARTED:
            STARTED.remove(p)
    return p.returncode, out.decode(errors="replace"), err.decode(errors="replace")


def cpu_split(pids):
    """(user, system) CPU seconds of the processes so far."""
    user = system = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            user += int(fields[11])  # utime (field 14)
            system += int(fields[12])  # stime (field 15)
        except (OSError, IndexError, ValueError):
            pass
    return user / CLK, system / CLK


def cpu_seconds(pids):
    return sum(cpu_split(pids))


def rss_kib(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except (OSError, ValueError):
            pass
    return total


def machine_cpu():
    """(busy, steal) CPU seconds of the whole machine so far, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = v
    return (user + nice + system + irq + softirq) / CLK, steal / CLK


def own_rusage():
    """CPU seconds of this driver plus every child it has reaped (wrk, oha, ...)."""
    t = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        ru = resource.getrusage(who)
        t += ru.ru_utime + ru.ru_stime
    return t


class Window:
    """CPU accounting around one load run.

    proxy: CPU of the measured proxy's processes. other: CPU that the machine spent on
    anything that is not the benchmark (not the proxy, the origin, the load generator
    or this driver), as a share of one core: other tenants, builds, ... It says how
    noisy that run was. steal: time the hypervisor gave to other guests.
    """

    def __init__(self, proxy_pids, origin_pids):
        self.proxy_pids, self.origin_pids = proxy_pids, origin_pids

    def __enter__(self):
        self.t0 = time.time()
        self.m0 = machine_cpu()
        self.p0 = cpu_split(self.proxy_pids)
        self.o0 = cpu_seconds(self.origin_pids)
        self.r0 = own_rusage()
        return self

    def __exit__(self, *exc):
        wall = max(time.time() - self.t0, 1e-6)
        busy1, steal1 = machine_cpu()
        user1, system1 = cpu_split(self.proxy_pids)
        self.proxy_user = user1 - self.p0[0]
        self.proxy = self.proxy_user + system1 - self.p0[1]
        self.origin = cpu_seconds(self.origin_pids) - self.o0
        own = self.proxy + self.origin + own_rusage() - self.r0
        self.other_pct = max(0.0, (busy1 - self.m0[0]) - own) * 100 / wall
        self.steal_pct = (steal1 - self.m0[1]) * 100 / wall
        return False

    def fill(self, r, unit="requests"):
        """Per-unit figures into the run's result r (unit: the count they divide by)."""
        n = r.get(unit)
        r["cpu_s"] = self.proxy if self.proxy_pids else None
        # the origin's own CPU per request: what each proxy makes the upstream spend
        r["origin_us_per_req"] = self.origin * 1e6 / n if self.origin_pids and n else None
        r["cpu_us_per_req"] = self.proxy * 1e6 / n if self.proxy_pids and n else None
        # The user-space part: the kernel's share (the same syscalls for every proxy)
        # bounds how far any proxy's total can drop below another's.
        r["user_us_per_req"] = self.proxy_user * 1e6 / n if self.proxy_pids and n else None
        r["other_pct"], r["steal_pct"] = self.other_pct, self.steal_pct
        return r


def wait_port(port, timeout=15.0, proc=None):
    end = time.time() + timeout
    while time.time() < end:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


# --------------------------------------------------------------------------- configs


# --------------------------------------------------------------------------- requests

def load_ids():
    return [str(ID_BASE + i) for i in range(N_IDS)]


def whitelist_ids(total, from_load):
    ids = [str(ID_BASE + i) for i in range(min(from_load, total))]
    ids += [str(9000000 + i) for i in range(total - len(ids))]  # never sent by the load
    return ids


def json_body(size):
    """The JSON body load.lua sends, byte for byte (for oha's fixed-rate POST)."""
    head = '{"model":"bench-model","stream":false,"max_tokens":256,"messages":[{"role":"user","content":"'
    tail = '"}]}'
    pad = size - len(head) - len(tail)
    words = "the quick brown fox jumps over the lazy dog "
    return (head + (words * (pad // len(words) + 1))[:pad] + tail).encode()


# --------------------------------------------------------------------------- services

class Service:
    def __init__(self, name, argv, port, cpus, d, env=None):
        self.name, self.argv, self.port, self.cpus, self.dir, self.env = name, argv, port, cpus, d, env
        self.proc = None

    def start(self):
        self.proc = spawn(self.argv, cpus=self.cpus, logfile=f"{self.dir}/{self.name}.log", env=self.env)
        if not wait_port(self.port, 20, self.proc):
            tail = open(f"{self.dir}/{self.name}.log", errors="replace").read()[-2000:]
            raise RuntimeError(f"{self.name} did not start on :{self.port}\n{tail}")
        time.sleep(0.3)  # workers forked, runtime threads up
        return self

    def pids(self):
        return descendants(self.proc.pid) if self.proc and self.proc.poll() is None else []

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        kill(self.proc)
        self.proc = None


def make_proxy(kind, d, workers, base, cpus, gg_bin, admin, upstreams, job, tls=None):
    """One proxy instance. job: configs.three_rule_job / group_rule_job / a mixed chain
    (its per-proxy parts); tls: the certificate, which also gives the instance every
    listener (configs.LISTENERS), None: the main listener only."""
    os.makedirs(f"{d}/tmp", exist_ok=True)
    port = base + configs.LISTENERS[kind]["main"]
    if kind == "graygate":
        conf = configs.graygate_conf(d, workers, base, admin, upstreams, MAX_CONNS, job["graygate"], tls,
                                     job.get("graygate_routing", ""))
        rc, _, err = run([gg_bin, "check", "--config", conf], 60)
        if rc != 0:
            raise RuntimeError(f"graygate check failed for {conf}:\n{err}")
        env = dict(os.environ, RUST_LOG="warn")
        return Service(kind, [gg_bin, "run", "--config", conf], port, cpus, d, env)
    if kind == "nginx":
        conf = configs.nginx_conf(d, workers, base, upstreams, MAX_CONNS, FD_LIMIT, job["nginx"], tls)
        rc, _, err = run(["nginx", "-t", "-p", d, "-c", conf, "-e", f"{d}/error.log"], 60)
        if rc != 0:
            raise RuntimeError(f"nginx -t failed for {conf}:\n{err}")
        return Service(kind, ["nginx", "-p", d, "-c", conf, "-e", f"{d}/error.log"], port, cpus, d)
    if kind == "haproxy":
        conf = configs.haproxy_conf(d, workers, base, upstreams, MAX_CONNS, job["haproxy"], tls)
        rc, _, err = run(["haproxy", "-c", "-f", conf], 60)
        if rc != 0:
            raise RuntimeError(f"haproxy -c failed for {conf}:\n{err}")
        return Service(kind, ["haproxy", "-db", "-f", conf], port, cpus, d)
    raise ValueError(kind)


# --------------------------------------------------------------------------- load tools

def parse_wrk(text):
    r = {"requests": 0, "rps": 0.0, "non2xx": 0, "sock_errors": 0, "seconds": 0.0}
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+)", text)
    if m:
        r["requests"] = int(m.group(1))
        val, unit = float(m.group(2)), m.group(3)
        r["seconds"] = val * {"s": 1, "ms": 1e-3, "us": 1e-6, "m": 60, "h": 3600}.get(unit, 1)
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if m:
        r["rps"] = float(m.group(1))
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    if m:
        r["non2xx"] = int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        r["sock_errors"] = sum(int(x) for x in m.groups())
        r["sock_detail"] = m.group(0)
    return r


def wrk(url, seconds, threads, conns, cpus, lua_args=()):
    argv = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{seconds}s", "--timeout", "5s", "-s", LUA, url]
    if lua_args:
        argv += ["--"] + list(lua_args)
    rc, out, err = run(argv, seconds + 60, cpus=cpus)
    r = parse_wrk(out)
    r["rc"], r["raw"] = rc, out + err
    return r


def parse_h2load(text):
    r = {"requests": 0, "rps": 0.0, "non2xx": 0, "sock_errors": 0, "seconds": 0.0, "protocol": None}
    m = re.search(r"finished in ([\d.]+)(\w+), ([\d.]+) req/s", text)
    if m:
        r["seconds"] = float(m.group(1)) * {"s": 1, "ms": 1e-3, "us": 1e-6}.get(m.group(2), 1)
        r["rps"] = float(m.group(3))
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                  r"(\d+) errored, (\d+) timeout", text)
    if m:
        r["requests"] = int(m.group(4))
        r["sock_errors"] = int(m.group(6)) + int(m.group(7))
        r["failed"] = int(m.group(5))
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    if m:
        r["non2xx"] = int(m.group(2)) + int(m.group(3)) + int(m.group(4))
    m = re.search(r"Application protocol: (\S+)", text)
    if m:
        r["protocol"] = m.group(1)
    return r


def h2load(url, seconds, threads, conns, streams, cpus, headers):
    argv = ["h2load", "-t", str(threads), "-c", str(conns), "-m", str(streams), "-D", str(seconds)]
    for k, v in headers.items():
        argv += ["-H", f"{k}: {v}"]
    rc, out, err = run(argv + [url], seconds + 60, cpus=cpus)
    r = parse_h2load(out)
    if r["protocol"] not in ("h2", "h2c"):
        r["sock_errors"] += 1  # not HTTP/2: the row is not the shape it claims
    r["rc"], r["raw"] = rc, out + err
    return r


def oha(url, seconds, rate, conns, cpus, uid, body_file=None, http2=False, parallel=1):
    argv = ["oha", "--no-tui", "--output-format", "json", "--latency-correction",
            "-q", str(rate), "-z", f"{seconds}s", "-c", str(conns), "-H", f"x-user-id: {uid}"]
    if body_file:
        argv += ["-m", "POST", "-D", body_file, "-T", "application/json"]
    if http2:
        argv += ["--http2", "-p", str(parallel)]
    rc, out, err = run(argv + [url], seconds + 60, cpus=cpus)
    r = {"rc": rc, "p50": None, "p99": None, "p999": None, "rps": 0.0, "requests": 0,
         "non2xx": 0, "errors": 0, "raw": err[-2000:]}
    try:
        j = json.loads(out)
    except ValueError:
        r["raw"] = (out + err)[-2000:]
        return r
    lp = j.get("latencyPercentiles", {})
    r["p50"], r["p99"], r["p999"] = lp.get("p50"), lp.get("p99"), lp.get("p99.9")
    r["rps"] = j.get("summary", {}).get("requestsPerSec") or 0.0
    codes = j.get("statusCodeDistribution", {}) or {}
    r["requests"] = sum(int(v) for v in codes.values())
    r["non2xx"] = sum(int(v) for k, v in codes.items() if not str(k).startswith("2"))
    # oha stops at -z with requests still in flight and lists them as errors
    # ("aborted due to deadline"); those are not failures of the target.
    kinds = {str(k): int(v) for k, v in (j.get("errorDistribution", {}) or {}).items()}
    r["error_kinds"] = kinds
    r["aborted_at_end"] = sum(v for k, v in kinds.items() if "deadline" in k.lower())
    r["errors"] = sum(kinds.values()) - r["aborted_at_end"]
    return r


def stream_client(port, seconds, conns, cpus, uid):
    argv = [sys.executable, STREAM_CLIENT, "--port", str(port), "--conns", str(conns),
            "--duration", str(seconds), "--uid", uid, "--deadline", str(seconds + 30)]
    rc, out, err = run(argv, seconds + 60, cpus=cpus)
    try:
        r = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        r = {"streams": 0, "streamed": 0, "bad": 0, "errors": 1, "raw": (out + err)[-2000:]}
    r["rc"] = rc
    return r


def origin_status(port):
    """(accepted connections, requests) of the nginx origin so far, from stub_status."""
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        c.request("GET", "/")
        text = c.getresponse().read().decode()
        c.close()
        accepts, _handled, requests = (int(x) for x in text.splitlines()[2].split())
        return accepts, requests
    except (OSError, ValueError, IndexError, http.client.HTTPException):
        return None


def origin_segments(ports):
    """{(local, peer): data segments received} of the origin's established connections,
    from the kernel's per-socket counters (`ss -ti`): how many TCP segments carried
    the requests each proxy sent (a request split over several writes takes more)."""
    flt = " or ".join(f"sport = :{p}" for p in ports)
    rc, out, _ = run(["ss", "-tinH", "state", "established", f"( {flt} )"], 20)
    conns, key = {}, None
    for line in out.splitlines():
        if not line[:1].isspace():
            f = line.split()
            key = (f[-2], f[-1]) if len(f) >= 2 else None
        elif key:
            m = re.search(r"data_segs_in:(\d+)", line)
            conns[key] = int(m.group(1)) if m else 0
    return conns if rc == 0 else None


def segments_between(before, after):
    """Data segments the origin received between two origin_segments readings (those of
    connections closed in between are not counted)."""
    if before is None or after is None:
        return None
    total = 0
    for key, n in after.items():
        was = before.get(key, 0)
        total += n - was if n >= was else n  # a smaller count: a new connection on the same ports
    return total


class MidRun(threading.Thread):
    """Takes read() twice while a load run goes on: 1 s after it starts and 1 s before it
    ends; result() gives what the origin did in between: requests, connections accepted,
    data segments received."""

    def __init__(self, seconds, read):
        super().__init__(daemon=True)
        self.t0, self.seconds, self.read, self.readings = time.time(), seconds, read, []
        if seconds >= 3:
            self.start()

    def run(self):
        for at in (1.0, self.seconds - 1.0):
            time.sleep(max(0.0, self.t0 + at - time.time()))
            self.readings.append(self.read())

    def result(self):
        if self.is_alive():
            self.join(timeout=5)
        if len(self.readings) != 2:
            return None
        (st0, seg0), (st1, seg1) = self.readings
        if not (st0 and st1):
            return None
        return {"requests": st1[1] - st0[1] - 1, "conns": st1[0] - st0[0] - 1,
                "segments": segments_between(seg0, seg1)}


def strace_summary(path):
    """{syscall: calls} from an `strace -c` table."""
    calls = {}
    try:
        for line in open(path):
            f = line.split()
            # % time, seconds, usecs/call, calls, [errors], syscall
            if len(f) >= 5 and f[0].replace(".", "", 1).isdigit() and f[3].isdigit():
                calls[f[-1]] = int(f[3])
    except OSError:
        pass
    calls.pop("total", None)
    return calls


def tls_handshake(port, cpus):
    """What a client gets from this TLS listener: protocol, cipher, ALPN (h2 offered
    first), key exchange."""
    rc, out, err = run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost",
                        "-alpn", "h2,http/1.1"], 20, cpus=cpus, stdin_data=b"Q\n")
    text = out + err
    got = {}
    for key, pat in (("protocol", r"New, (TLSv[\d.]+), Cipher is"), ("cipher", r"Cipher is (\S+)"),
                     ("alpn", r"ALPN protocol: (\S+)"), ("kx", r"Server Temp Key: ([^\n]+)")):
        m = re.search(pat, text)
        got[key] = m.group(1).strip() if m else None
    return got


def fetch(port, headers, method="GET", path="/"):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        c.request(method, path, headers=headers)
        resp = c.getresponse()
        return resp.status, resp.read().decode(errors="replace").strip()
    except (OSError, http.client.HTTPException) as e:
        return None, f"error: {e}"
    finally:
        c.close()
def routing_check(port):
    """Send each of the 1,000 load requests once; return (pool per id, counts, semantics)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    pools, counts, bad = {}, {}, 0
    for i, uid in enumerate(load_ids()):
        h = {"x-user-id": uid}
        if i % 100 == 7:
            h["x-canary"] = "true"
        try:
            c.request("GET", "/", headers=h)
            resp = c.getresponse()
            body = resp.read().decode(errors="replace").strip()
            if resp.status != 200:
                bad += 1
        except (OSError, http.client.HTTPException):
            c.close()
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            body, bad = "error", bad + 1
        pools[uid] = body
        counts[body] = counts.get(body, 0) + 1
    c.close()
    sem = {
        "x-canary": fetch(port, {"x-canary": "true", "x-user-id": "9999999x"})[1] == "canary",
        "whitelist": fetch(port, {"x-user-id": str(ID_BASE + 3)})[1] == "canary",
        "no-id": fetch(port, {})[1] == "blue",
    }
    return pools, counts, bad, sem


def idle_memory(svc, n, cpus):
    """RSS with 0 and with n idle keep-alive client connections."""
    before = rss_kib(svc.pids())
    p = spawn([sys.executable, IDLE, "--port", str(svc.port), "-n", str(n), "--deadline", "180"],
              cpus=cpus, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
              logfile=f"{svc.dir}/idle_conns.log")
    res = {"rss0": before, "rss1": None, "ok": 0, "failed": n, "open": 0}
    try:
        ready, _, _ = select.select([p.stdout], [], [], 150)
        line = p.stdout.readline().decode().split() if ready else []
        if len(line) == 3 and line[0] == "READY":
            res["ok"], res["failed"] = int(line[1]), int(line[2])
            time.sleep(1.0)
            res["rss1"] = rss_kib(svc.pids())
            p.stdin.write(b"go\n")
            p.stdin.flush()
            ready, _, _ = select.select([p.stdout], [], [], 30)
            line = p.stdout.readline().decode().split() if ready else []
            if len(line) == 2 and line[0] == "OPEN":
                res["open"] = int(line[1])
    finally:
        kill(p, grace=5)
    return res




# --------------------------------------------------------------------------- phases

class Bench:
    def __init__(self, a):
        self.a = a
        self.work = a.workdir
        self.results = {"settings": vars(a).copy(), "layouts": {}, "growth": {}, "notes": []}
        self.multi = os.cpu_count() and os.cpu_count() >= 2 and not a.no_pin
        self.origin = None
        self.proxies = {}
        self.tls = configs.tls_cert(self.work, run)
        self.body_files = {}

    # layouts: "1w" = one worker, proxy on core 0, client+origin on core 1; "2w": unpinned
    def cpus(self, layout):
        if layout == "1w" and self.multi:
            return "0", "1"
        return None, None

    def upstreams(self):
        return {p: P["origin"][p] for p in ("blue", "green", "canary")}

    def start_origin(self, layout):
        if self.origin:
            self.origin.stop()
        _, client_cpus = self.cpus(layout)
        d = f"{self.work}/{layout}/origin-run"
        os.makedirs(f"{self.work}/{layout}/origin/tmp", exist_ok=True)
        conf = configs.origin_conf(f"{self.work}/{layout}", 1 if layout == "1w" else 2, P["origin"],
                                   MAX_CONNS, FD_LIMIT, self.tls)
        os.makedirs(d, exist_ok=True)
        argv = ["nginx", "-p", f"{self.work}/{layout}/origin", "-c", conf,
                "-e", f"{self.work}/{layout}/origin/error.log"]
        self.origin = Service("origin", argv, P["origin"]["blue"], client_cpus, d)
        self.origin.start()
        for port in P["origin"].values():
            if not wait_port(port, 10):
                raise RuntimeError(f"origin port {port} not up")

    def start_proxies(self, layout, workers, base, admin, upstreams, tag):
        """One instance of each proxy with every listener; returns {kind: Service}."""
        proxy_cpus, _ = self.cpus(layout)
        wl = whitelist_ids(self.a.whitelist, WL_FROM_LOAD)
        started = {}
        try:
            for kind in PROXIES:
                d = f"{self.work}/{layout}/{tag}{kind}"
                job = configs.three_rule_job(d, wl)
                svc = make_proxy(kind, d, workers, base, proxy_cpus, self.a.graygate, admin, upstreams, job,
                                 self.tls)
                started[kind] = svc.start()
        except Exception:
            for s in started.values():
                s.stop()
            raise
        return started

    def stop_proxies(self):
        for s in self.proxies.values():
            s.stop()
        self.proxies = {}

    def restart_proxy(self, kind):
        svc = self.proxies[kind]
        svc.stop()
        svc.start()

    def target_port(self, shape_listener, target, base, direct_port):
        if target == "direct":
            return direct_port
        kind, own = TARGET[target]
        return base + configs.LISTENERS[kind][own or shape_listener]

    def shape_url(self, shape, target):
        direct = {"main": P["origin"]["blue"], "h2c": P["origin"]["blue-h2c"],
                  "tls": P["origin"]["blue-tls"]}[shape.listener]
        port = self.target_port(shape.listener, target, P["main_base"], direct)
        scheme = "https" if shape.listener == "tls" else "http"
        path = "/v1/chat/completions" if shape.key.startswith("post") else "/"
        return f"{scheme}://127.0.0.1:{port}{path}"

    def pids_of(self, target, proxies=None):
        if target == "direct":
            return []
        return (proxies or self.proxies)[TARGET[target][0]].pids()

    # ----------------------------------------------------------------------- layouts
    def layout(self, layout):
        a = self.a
        workers = 1 if layout == "1w" else 2
        threads = 1 if layout == "1w" else 2
        proxy_cpus, client_cpus = self.cpus(layout)
        R = self.results["layouts"].setdefault(layout, {})
        R["workers"], R["wrk_threads"], R["proxy_cpus"], R["client_cpus"] = \
            workers, threads, proxy_cpus or "any", client_cpus or "any"
        shapes = [SHAPES[k] for s in SECTIONS if s in a.sections for k in SECTION_SHAPES.get(s, [])]
        memory = "memory" in a.sections and a.idle_conns > 0
        if shapes or memory:
            log(f"layout {layout}: starting origin and proxies (workers={workers})")
            self.start_origin(layout)
            self.proxies = self.start_proxies(layout, workers, P["main_base"], P["admin"], self.upstreams(), "")
            try:
                self.routing_check(layout, R)
                if any(s.listener == "tls" for s in shapes):
                    R["tls_check"] = {t: tls_handshake(self.target_port("tls", t, P["main_base"],
                                                                        P["origin"]["blue-tls"]), client_cpus)
                                      for t in BASE_TARGETS}
                for shape in shapes:
                    self.measure_shape(layout, R, shape, threads)
                if memory:
                    self.memory(layout, R, threads)
            finally:
                self.stop_proxies()
        if "stream" in a.sections:
            self.stream(layout, R, workers)

    def routing_check(self, layout, R):
        """Same requests through each proxy: pools, semantics, and the latency tests' id."""
        log(f"layout {layout}: routing check")
        chk = {}
        always_blue = None
        for t in PROXIES:
            pools, counts, bad, sem = routing_check(self.target_port("main", t, P["main_base"], 0))
            chk[t] = {"counts": counts, "bad": bad, "sem": sem}
            blue_ids = {u for u, p in pools.items() if p == "blue"}
            always_blue = blue_ids if always_blue is None else always_blue & blue_ids
        # an id no proxy sends to canary (no x-canary, not whitelisted, not in any 5 %):
        # the fixed-header tests (oha, h2load, streams) send it, so every proxy walks
        # its whole rule chain
        blue_ok = sorted(u for u in (always_blue or set()) if (int(u) - ID_BASE) % 100 != 7)
        R["latency_uid"] = blue_ok[len(blue_ok) // 2] if blue_ok else str(ID_BASE + 500)
        R["routing"] = chk

    def load_run(self, shape, target, seconds, threads, cpus, uid):
        url = self.shape_url(shape, target)
        if shape.tool == "wrk":
            return wrk(url, seconds, threads, self.a.conns, cpus, shape.lua)
        return h2load(url, seconds, threads, self.a.h2_conns, self.a.h2_streams, cpus, {"x-user-id": uid})

    def measure_shape(self, layout, R, shape, threads):
        a = self.a
        _, client_cpus = self.cpus(layout)
        uid = R["latency_uid"]
        S = R.setdefault("shapes", {}).setdefault(shape.key, {})
        S["title"], S["tool"] = shape.title, shape.tool
        log(f"{layout} {shape.key}: warm-up")
        for t in shape.targets:
            self.load_run(shape, t, 2, threads, client_cpus, uid)

        # max throughput + CPU per request (proxy and origin), interleaved
        runs = S.setdefault("max", {t: [] for t in shape.targets})
        origin_ports = [P["origin"][p] for p in ("blue", "green", "canary", "blue-h2c", "blue-tls")]
        for rep in range(a.reps):
            for t in shape.targets:
                s0 = origin_status(P["origin"]["status"])
                # the origin's TCP counters, read twice while the load runs (a connection the
                # client closes at the end takes its counters with it)
                window = MidRun(a.duration, lambda: (origin_status(P["origin"]["status"]),
                                                     origin_segments(origin_ports)))
                with Window(self.pids_of(t), self.origin.pids()) as w:
                    r = self.load_run(shape, t, a.duration, threads, client_cpus, uid)
                w.fill(r)
                r["origin_window"] = window.result()
                s1 = origin_status(P["origin"]["status"])
                if s0 and s1:
                    own = 1 + len(window.readings)  # the status requests' own connections
                    r["origin_conns"] = s1[0] - s0[0] - own
                    r["origin_requests"] = s1[1] - s0[1] - own
                if r["rc"] == 0 and not r["sock_errors"]:
                    r.pop("raw")
                runs[t].append(r)
                log(f"{layout} {shape.key} rep{rep + 1} {t:15s}: {r['rps']:>10,.0f} req/s  "
                    f"cpu/req={fmt(r['cpu_us_per_req'])}us origin/req={fmt(r['origin_us_per_req'])}us "
                    f"origin_conns={r.get('origin_conns')} non2xx={r['non2xx']} sockerr={r['sock_errors']} "
                    f"other={r['other_pct']:.0f}% steal={r['steal_pct']:.0f}%")

        if shape.latency is not None:
            self.latency(layout, S, shape, uid)
        if a.strace_origin and shape.key in STRACE_SHAPES:
            self.strace_origin(layout, S, shape, threads, uid)

    def latency(self, layout, S, shape, uid):
        """oha at a fixed rate, half of nginx's median max for this shape, interleaved."""
        a = self.a
        _, client_cpus = self.cpus(layout)
        nginx_max = med([r["rps"] for r in S["max"]["nginx"]])
        rate = max(100, int(round((nginx_max or 2000) * 0.5)))
        S["latency_rate"] = rate
        body_file = None
        if shape.latency.get("body"):
            size = shape.latency["body"]
            body_file = self.body_files.get(size)
            if not body_file:
                body_file = self.body_files[size] = configs.write(f"{self.work}/body-{size}.json", "")
                with open(body_file, "wb") as f:
                    f.write(json_body(size))
        http2 = shape.latency.get("http2", False)
        # h2: the same connections and streams as h2load
        conns, parallel = (a.h2_conns, a.h2_streams) if http2 else (a.conns, 1)
        S["latency_clients"] = f"-c {conns}" + (f" -p {parallel} --http2" if http2 else "")
        lat = S.setdefault("latency", {t: [] for t in shape.targets})
        for rep in range(a.reps):
            for t in shape.targets:
                with Window(self.pids_of(t), self.origin.pids()) as w:
                    r = oha(self.shape_url(shape, t), a.duration, rate, conns, client_cpus, uid, body_file,
                            http2, parallel)
                w.fill(r)
                if r["rc"] == 0:
                    r.pop("raw")
                lat[t].append(r)
                log(f"{layout} {shape.key} latency rep{rep + 1} {t:15s} @{rate}/s: p50={fmt(ms(r['p50']), 3)}ms "
                    f"p99={fmt(ms(r['p99']), 3)}ms p99.9={fmt(ms(r['p999']), 3)}ms "
                    f"achieved={fmt(r['rps'], 0)}/s cpu/req={fmt(r['cpu_us_per_req'])}us "
                    f"non2xx={r['non2xx']} err={r['errors']} other={r['other_pct']:.0f}% "
                    f"steal={r['steal_pct']:.0f}% {r.get('error_kinds') or ''}")

    def strace_origin(self, layout, S, shape, threads, uid):
        """The origin's syscalls per request behind each target (strace -c -f on its
        workers during one wrk run). strace slows the origin, so these runs are apart
        from the measured ones and only their counts are used."""
        a = self.a
        _, client_cpus = self.cpus(layout)
        out = S.setdefault("strace", {})
        workers = [p for p in self.origin.pids() if p != self.origin.proc.pid]
        for t in shape.targets:
            path = f"{self.work}/{layout}/strace-{shape.key}-{t}.txt"
            argv = ["strace", "-c", "-f", "-o", path]
            for pid in workers:
                argv += ["-p", str(pid)]
            tracer = spawn(argv, logfile=f"{self.work}/{layout}/strace.log")
            time.sleep(1.0)  # attached
            r = self.load_run(shape, t, a.strace_seconds, threads, client_cpus, uid)
            try:
                os.kill(tracer.pid, signal.SIGINT)  # detach and write the summary
                tracer.wait(timeout=20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
            kill(tracer)
            calls = strace_summary(path)
            out[t] = {"requests": r["requests"], "calls": calls,
                      "per_req": {k: v / r["requests"] for k, v in calls.items()} if r["requests"] else {}}
            log(f"{layout} {shape.key} strace {t:15s}: {r['requests']} requests, "
                f"{sum(calls.values()) / max(1, r['requests']):.2f} origin syscalls/request")

    def memory(self, layout, R, threads):
        """Memory per idle keep-alive connection, fresh processes."""
        a = self.a
        _, client_cpus = self.cpus(layout)
        mem = R.setdefault("memory", {t: [] for t in PROXIES})
        for rep in range(a.mem_reps):
            for t in PROXIES:
                self.restart_proxy(t)
                url = self.shape_url(SHAPES["get"], t)
                wrk(url, 2, threads, a.conns, client_cpus)  # warm: upstream pools, allocator
                time.sleep(1.0)
                m = idle_memory(self.proxies[t], a.idle_conns, client_cpus)
                m["kib_per_conn"] = ((m["rss1"] - m["rss0"]) / m["ok"]
                                     if m["rss1"] is not None and m["ok"] else None)
                mem[t].append(m)
                log(f"{layout} memory rep{rep + 1} {t:8s}: rss0={m['rss0']}KiB rss1={m['rss1']}KiB "
                    f"ok={m['ok']} failed={m['failed']} still_open={m['open']} "
                    f"-> {fmt(m['kib_per_conn'], 2)} KiB/conn")

    def stream(self, layout, R, workers):
        """Streamed answers: the proxies in front of stream_origin.py, timed per chunk."""
        a = self.a
        _, client_cpus = self.cpus(layout)
        log(f"layout {layout}: streams: starting the streaming origin and its proxies")
        d = f"{self.work}/{layout}/stream-origin"
        os.makedirs(d, exist_ok=True)
        port = P["stream_origin"]
        origin = Service("stream-origin", [sys.executable, STREAM_ORIGIN, "--port", str(port)], port,
                         client_cpus, d).start()
        proxies = {}
        try:
            upstreams = {p: port for p in ("blue", "green", "canary")}
            proxies = self.start_proxies(layout, workers, P["stream_base"], P["stream_admin"], upstreams,
                                         "stream-")
            uid = R.get("latency_uid", str(ID_BASE + 500))
            S = R.setdefault("stream", {"conns": a.stream_conns, "runs": {t: [] for t in STREAM_TARGETS}})
            ports = {t: self.target_port("main", t, P["stream_base"], port) for t in STREAM_TARGETS}
            for t in STREAM_TARGETS:  # warm-up: connections, pools
                stream_client(ports[t], 1, a.stream_conns, client_cpus, uid)
            for rep in range(a.reps):
                for t in STREAM_TARGETS:
                    with Window(self.pids_of(t, proxies), origin.pids()) as w:
                        r = stream_client(ports[t], a.duration, a.stream_conns, client_cpus, uid)
                    w.fill(r, unit="streams")
                    S["runs"][t].append(r)
                    log(f"{layout} stream rep{rep + 1} {t:15s}: {r.get('streams')} streams "
                        f"streamed={r.get('streamed')} ttfb50={fmt((r.get('ttfb') or {}).get('p50'), 3)}ms "
                        f"delay50/99={fmt((r.get('delay') or {}).get('p50'), 3)}/"
                        f"{fmt((r.get('delay') or {}).get('p99'), 3)}ms "
                        f"cpu/stream={fmt(r['cpu_us_per_req'], 0)}us bad={r.get('bad')} err={r.get('errors')} "
                        f"other={r['other_pct']:.0f}%")
        finally:
            for s in proxies.values():
                s.stop()
            origin.stop()

    # ----------------------------------------------------------------------- rule growth
    def mixed_kinds(self):
        """full, or basic when this graygate lacks the request-line conditions."""
        if self.a.mixed_kinds != "auto":
            return self.a.mixed_kinds
        d = f"{self.work}/growth/probe"
        c = mixed_rules.chain(12, "full")
        conf = configs.graygate_conf(d, 1, P["growth_base"], P["growth_admin"], self.upstreams(), MAX_CONNS,
                                     c["graygate"], None, c["graygate_routing"])
        rc, _, err = run([self.a.graygate, "check", "--config", conf], 60)
        if rc == 0:
            return "full"
        note = ("mixed rule chain: this graygate rejects the path/host/method/query conditions "
                f"({err.strip().splitlines()[0] if err.strip() else 'check failed'}), so the chain "
                "uses the basic kinds only (--mixed-kinds basic)")
        self.results["notes"].append(note)
        log("growth: " + note)
        return "basic"

    def growth(self):
        """CPU/request vs whitelist size, rule-chain length and mixed-chain length (1w)."""
        a = self.a
        layout = "1w"
        proxy_cpus, client_cpus = self.cpus(layout)
        mode = self.mixed_kinds()
        self.results["mixed_kinds"] = mode
        log(f"growth: starting origin and {6 * len(PROXIES)} proxy variants (mixed kinds: {mode})")
        self.start_origin(layout)
        variants = []  # (proxy, label, service, wrk script args, probes)
        port = P["growth_base"]
        admin = P["growth_admin"]
        services = []
        big_w, big_r = a.big_whitelist, a.big_rules
        labels = (("W=10", "wl", 10), (f"W={big_w:,}", "wl", big_w), ("rules=10", "group", 10),
                  (f"rules={big_r:,}", "group", big_r), ("mixed=10", "mixed", 10),
                  (f"mixed={big_r:,}", "mixed", big_r))
        try:
            for kind in PROXIES:
                for label, what, n in labels:
                    d = f"{self.work}/growth/{kind}-{label.replace('=', '').replace(',', '')}"
                    probes, args = [], []
                    if what == "wl":
                        job = configs.three_rule_job(d, whitelist_ids(n, WL_FROM_LOAD_GROWTH))
                    elif what == "group":
                        job, args = configs.group_rule_job(n), [f"group-{n}"]
                    else:
                        job = mixed_rules.chain(n, mode)
                        probes, args = job["probes"], job["request_args"]
                    base = port - configs.LISTENERS[kind]["main"]
                    svc = make_proxy(kind, d, 1, base, proxy_cpus, a.graygate, admin, self.upstreams(), job)
                    svc.start()
                    services.append(svc)
                    variants.append((kind, label, svc, args, probes))
                    port += 1
                    admin += 1
            self.growth_checks(variants)
            for kind, label, svc, args, _ in variants:
                wrk(f"http://127.0.0.1:{svc.port}/", 2, 1, a.conns, client_cpus, args)
            G = self.results["growth"]
            for rep in range(a.reps):
                for kind, label, svc, args, _ in variants:
                    with Window(svc.pids(), self.origin.pids()) as w:
                        r = wrk(f"http://127.0.0.1:{svc.port}/", a.duration, 1, a.conns, client_cpus, args)
                    w.fill(r)
                    if r["rc"] == 0:
                        r.pop("raw")
                    G.setdefault(kind, {}).setdefault(label, []).append(r)
                    log(f"growth rep{rep + 1} {kind:8s} {label:14s}: {r['rps']:>10,.0f} req/s "
                        f"cpu/req={fmt(r['cpu_us_per_req'])}us non2xx={r['non2xx']} sockerr={r['sock_errors']} "
                        f"other={r['other_pct']:.0f}%")
        finally:
            for s in services:
                s.stop()

    def growth_checks(self, variants):
        """The chains route as they claim: the last rule matches the load's request, and
        each kind's first rule takes its own probe, in every proxy."""
        failures = self.results.setdefault("growth_check_failures", [])
        checked = 0
        for kind, label, svc, args, probes in variants:
            if args and not probes:  # group rules: only the last one matches
                probes = [("last", "GET", "/", {"x-user-group": args[0], "x-user-id": "1000500"}, "canary")]
            for name, method, path, headers, want in probes:
                st, body = fetch(svc.port, headers, method, path)
                checked += 1
                if body != want:
                    failures.append(f"{kind} {label}: {name} probe {method} {path} {headers} "
                                    f"went to {body!r} ({st}), not {want}")
                    log(f"growth: WARNING {failures[-1]}")
        self.results["growth_checks"] = checked


def versions(gg):
    def first(argv):
        rc, out, err = run(argv, 20)
        text = (out + err).strip().splitlines()
        return text[0] if text else f"(no output, rc={rc})"
    return {
        "nginx": first(["nginx", "-v"]),
        "haproxy": first(["haproxy", "-v"]),
        "graygate": first([gg, "--version"]),
        "wrk": first(["wrk", "-v"]),
        "h2load": first(["h2load", "--version"]),
        "oha": first(["oha", "--version"]) if shutil.which("oha") else "(not installed)",
        "openssl": first(["openssl", "version"]),
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--graygate", help="path to the release graygate binary (required to measure)")
    ap.add_argument("--quick", action="store_true", help="smoke test: 1 repetition, 5 s runs")
    ap.add_argument("--sections", default=",".join(SECTIONS),
                    help=f"comma list of {','.join(SECTIONS)} (default: all). get/post/h2/tls/stream/memory "
                         "run in each layout; rules (the cost-growth section) in 1w")
    ap.add_argument("--reps", type=int, default=None, help="interleaved repetitions (default 3, quick 1)")
    ap.add_argument("--duration", type=int, default=None, help="seconds per run (default 10, quick 5)")
    ap.add_argument("--conns", type=int, default=50, help="client connections for wrk and oha (HTTP/1.1)")
    ap.add_argument("--h2-conns", type=int, default=10, help="h2load/oha connections for the h2 shapes")
    ap.add_argument("--h2-streams", type=int, default=5, help="concurrent streams per h2 connection")
    ap.add_argument("--stream-conns", type=int, default=50, help="concurrent streamed answers")
    ap.add_argument("--whitelist", type=int, default=100, help="whitelist size W of the main config")
    ap.add_argument("--idle-conns", type=int, default=5000, help="idle keep-alive connections (0: skip)")
    ap.add_argument("--mem-reps", type=int, default=None, help="memory repetitions (default = reps)")
    ap.add_argument("--big-whitelist", type=int, default=10000)
    ap.add_argument("--big-rules", type=int, default=1000, help="the long chains of the growth section")
    ap.add_argument("--mixed-kinds", choices=["auto", "full", "basic"], default="auto",
                    help="condition kinds of the mixed chain: full needs graygate's path/host/method/query "
                         "conditions, basic only header/whitelist/city/channel; auto: full if graygate "
                         "accepts it")
    ap.add_argument("--strace-origin", action="store_true",
                    help="also count the origin's syscalls per request behind each target "
                         "(strace -c -f, GET and POST shapes)")
    ap.add_argument("--strace-seconds", type=int, default=3, help="wrk run under strace")
    ap.add_argument("--layouts", default="1w,2w", help="comma list of 1w (pinned) and 2w (unpinned)")
    ap.add_argument("--no-growth", action="store_true", help="skip the rules (cost-growth) section")
    ap.add_argument("--no-pin", action="store_true", help="never use taskset")
    ap.add_argument("--port-offset", type=int, default=0,
                    help="move every port by this much (two runs on one machine)")
    ap.add_argument("--workdir", default=None, help="configs, logs, results.json (default: a new temp dir)")
    ap.add_argument("--cmdline", default=None, help="(run.sh) the command line to print")
    ap.add_argument("--report", default=None, help="also write the report (markdown) here")
    ap.add_argument("--from-results", default=None, metavar="RESULTS_JSON",
                    help="measure nothing: print the report of an earlier run from its results.json")
    a = ap.parse_args()
    if a.from_results:
        return a
    if not a.graygate:
        ap.error("--graygate is required")
    a.sections = [s.strip() for s in a.sections.split(",") if s.strip()]
    unknown = [s for s in a.sections if s not in SECTIONS]
    if unknown:
        ap.error(f"unknown section(s) {', '.join(unknown)}; choose from {','.join(SECTIONS)}")
    if a.no_growth and "rules" in a.sections:
        a.sections.remove("rules")
    a.layouts = [x.strip() for x in a.layouts.split(",") if x.strip()]
    if a.reps is None:
        a.reps = 1 if a.quick else 3
    if a.duration is None:
        a.duration = 5 if a.quick else 10
    if a.mem_reps is None:
        a.mem_reps = a.reps
    a.graygate = os.path.abspath(a.graygate)
    a.workdir = a.workdir or tempfile.mkdtemp(prefix="graygate-load-")
    return a


def main():
    global PGID_FILE
    a = parse_args()
    if a.from_results:
        with open(a.from_results) as f:
            results = json.load(f)
        report.Report(argparse.Namespace(**results["settings"]), results).render()
        return
    set_ports(a.port_offset)
    os.makedirs(a.workdir, exist_ok=True)
    PGID_FILE = os.path.join(a.workdir, "pgids")

    atexit.register(kill_all)
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, _on_signal)

    tools = ["nginx", "haproxy", "wrk", "taskset", "openssl"]
    tools += ["oha"] if {"get", "post", "h2"} & set(a.sections) else []  # the fixed-rate latency tests
    tools += ["h2load"] if {"h2", "tls"} & set(a.sections) else []
    tools += ["strace"] if a.strace_origin else []
    for tool in tools:
        if not shutil.which(tool):
            sys.exit(f"missing tool: {tool} (run benches/load/run.sh, which installs it)")
    for port in all_ports():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.3):
                sys.exit(f"port {port} on 127.0.0.1 is already in use; stop what listens there "
                         f"or move every port with --port-offset")
        except OSError:
            pass

    report_lines = []

    class Tee:
        def write(self, s):
            sys.stdout.write(s)
            report_lines.append(s)

        def flush(self):
            sys.stdout.flush()
    report.OUT = Tee()

    t0 = time.time()
    v = versions(a.graygate)
    say("# graygate side-by-side load benchmark")
    say()
    say(f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
    say(f"- machine: nproc={os.cpu_count()}, {cpu_model()}, {platform.machine()}, kernel {v['kernel']}")
    rc, rev, _ = run(["git", "-C", os.path.dirname(os.path.dirname(HERE)), "describe", "--always",
                      "--dirty", "--abbrev=12"], 20)
    if rc == 0 and rev.strip():
        say(f"- graygate source: commit {rev.strip()} (built from the work tree as it was)")
    for k in ("graygate", "nginx", "haproxy", "wrk", "h2load", "oha", "openssl", "python"):
        say(f"- {k}: {v[k]}")
    say(f"- command: `{a.cmdline or ' '.join(sys.argv)}`")
    say(f"- settings: sections={','.join(a.sections)}, layouts={','.join(a.layouts)}, reps={a.reps}, "
        f"duration={a.duration}s, conns={a.conns}, h2 conns x streams={a.h2_conns}x{a.h2_streams}, "
        f"streams={a.stream_conns}, W={a.whitelist}, idle conns={a.idle_conns}, "
        f"pinning={'yes' if (os.cpu_count() or 1) >= 2 and not a.no_pin else 'no'}, "
        f"port offset={a.port_offset}")
    try:
        say(f"- load average at start: {' '.join(open('/proc/loadavg').read().split()[:3])}")
    except OSError:
        pass
    say(f"- workdir (configs, logs, results.json): {a.workdir}")
    say()

    b = Bench(a)
    b.results["versions"] = v
    try:
        if "1w" in a.layouts:
            b.layout("1w")
        if "rules" in a.sections:
            b.growth()
        if "2w" in a.layouts:
            b.layout("2w")
    finally:
        if b.origin:
            b.origin.stop()
        b.stop_proxies()
        kill_all()
        with open(os.path.join(a.workdir, "results.json"), "w") as f:
            json.dump(b.results, f, indent=1, default=str)

    report.Report(a, b.results).render()
    say(f"Total benchmark time: {time.time() - t0:,.0f} s. Raw numbers: {a.workdir}/results.json")
    if a.report:
        with open(a.report, "w") as f:
            f.write("".join(report_lines))


if __name__ == "__main__":
    main()
