#!/usr/bin/env python3
"""Side-by-side load benchmark driver: graygate vs nginx vs HAProxy (stdlib only).

run.sh installs the tools, builds graygate and then runs this file. It can also be run
by itself once nginx, haproxy, wrk, oha and a release graygate are there:

    python3 benches/load/bench.py --graygate target/release/graygate [--quick]

Every process it starts runs in its own session (process group); all of them are
killed at exit, on SIGINT/SIGTERM/SIGHUP as well. Every external command runs with a
hard timeout. Only 127.0.0.1 is used.
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
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
LUA = os.path.join(HERE, "load.lua")
IDLE = os.path.join(HERE, "idle_conns.py")
CLK = os.sysconf("SC_CLK_TCK")

# Ports (127.0.0.1 only).
ORIGIN = {"blue": 18001, "green": 18002, "canary": 18003}
PORT = {"direct": ORIGIN["blue"], "graygate": 18080, "nginx": 18081, "haproxy": 18082}
GG_ADMIN = 18901
PROXIES = ["graygate", "nginx", "haproxy"]
TARGETS = ["direct"] + PROXIES

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

OUT = sys.stdout


def log(msg):
    """Progress lines go to stderr, so stdout holds only the report."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def say(line=""):
    print(line, file=OUT, flush=True)


# --------------------------------------------------------------------------- processes

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
        own = self.proxy + cpu_seconds(self.origin_pids) - self.o0 + own_rusage() - self.r0
        self.other_pct = max(0.0, (busy1 - self.m0[0]) - own) * 100 / wall
        self.steal_pct = (steal1 - self.m0[1]) * 100 / wall
        return False

    def fill(self, r):
        r["cpu_s"] = self.proxy if self.proxy_pids else None
        r["cpu_us_per_req"] = (self.proxy * 1e6 / r["requests"]
                               if self.proxy_pids and r.get("requests") else None)
        # The user-space part: the kernel's share (the same syscalls for every proxy)
        # bounds how far any proxy's total can drop below another's.
        r["user_us_per_req"] = (self.proxy_user * 1e6 / r["requests"]
                                if self.proxy_pids and r.get("requests") else None)
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

def load_ids():
    return [str(ID_BASE + i) for i in range(N_IDS)]


def whitelist_ids(total, from_load):
    ids = [str(ID_BASE + i) for i in range(min(from_load, total))]
    ids += [str(9000000 + i) for i in range(total - len(ids))]  # never sent by the load
    return ids


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return path


def origin_conf(d, workers):
    servers = "".join(
        f"""    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{ return 200 "{pool}\\n"; }}
    }}
""" for pool, port in ORIGIN.items())
    return write(f"{d}/origin/nginx.conf", f"""# origin: three pools, each answers its own name
daemon off;
master_process on;
worker_processes {workers};
worker_rlimit_nofile {FD_LIMIT};
pid {d}/origin/nginx.pid;
error_log {d}/origin/error.log warn;
events {{ worker_connections {MAX_CONNS}; }}
http {{
    access_log off;
    default_type text/plain;
    keepalive_timeout 75s;
    keepalive_requests 10000000;
    client_body_temp_path {d}/origin/tmp;
    proxy_temp_path {d}/origin/tmp;
    fastcgi_temp_path {d}/origin/tmp;
    uwsgi_temp_path {d}/origin/tmp;
    scgi_temp_path {d}/origin/tmp;
{servers}}}
""")


def graygate_conf(d, workers, port, admin, whitelist=None, group_rules=0):
    """The job as graygate does it; group_rules=N gives the N-header-rule chain instead."""
    pools = "".join(f'[pools.{p}]\nendpoints = ["127.0.0.1:{o}"]\n\n' for p, o in ORIGIN.items())
    if group_rules:
        rules = "".join(f"""[[rules]]
name = "group-{i}"
match = {{ header = {{ name = "x-user-group", exact = "group-{i}" }} }}
to = "canary"

""" for i in range(1, group_rules + 1))
    else:
        write(f"{d}/whitelist.txt", "\n".join(whitelist) + "\n")
        rules = """[[rules]]
name = "canary-header"
match = { header = { name = "x-canary", exact = "true" } }
to = "canary"

[[rules]]
name = "whitelist"
match = { whitelist_file = "whitelist.txt" }
to = "canary"

[[rules]]
name = "permille-50"
match = { permille = 50 }
to = "canary"
"""
    return write(f"{d}/graygate.toml", f"""# graygate for the load benchmark: no [log] table = no access log
[server]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin}"
workers = {workers}

[limits]
max_connections = {MAX_CONNS}

{pools}[routing]
stable = "blue"
user_key = {{ header = "x-user-id" }}

{rules}""")


def nginx_conf(d, workers, port, whitelist=None, group_rules=0):
    upstreams = "".join(f"""    upstream {p} {{
        server 127.0.0.1:{o};
        keepalive 64;
        keepalive_requests 10000000;
        keepalive_timeout 60s;
    }}
""" for p, o in ORIGIN.items())
    if group_rules:
        entries = "".join(f"        group-{i} canary;\n" for i in range(1, group_rules + 1))
        routing = f"""    map $http_x_user_group $pool {{
        default blue;
{entries}    }}
"""
    else:
        write(f"{d}/whitelist.map", "".join(f"{u} canary;\n" for u in whitelist))
        routing = f"""    # first match wins: x-canary, then the whitelist, then 5 % hashed on x-user-id
    map $http_x_canary $pool {{
        default $pool_whitelist;
        "true"  canary;
    }}
    map $http_x_user_id $pool_whitelist {{
        default $pool_permille;
        ""      blue;               # no user id: no whitelist, no per-mille
        include {d}/whitelist.map;
    }}
    split_clients "${{http_x_user_id}}" $pool_permille {{
        5%      canary;
        *       blue;
    }}
"""
    return write(f"{d}/nginx.conf", f"""daemon off;
master_process on;
worker_processes {workers};
worker_rlimit_nofile {FD_LIMIT};
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections {MAX_CONNS * 2}; }}
http {{
    access_log off;
    keepalive_timeout 75s;
    keepalive_requests 10000000;
    map_hash_max_size 65536;
    map_hash_bucket_size 128;
    client_body_temp_path {d}/tmp;
    proxy_temp_path {d}/tmp;
    fastcgi_temp_path {d}/tmp;
    uwsgi_temp_path {d}/tmp;
    scgi_temp_path {d}/tmp;

{routing}
{upstreams}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://$pool;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $http_host;
        }}
    }}
}}
""")


def haproxy_conf(d, workers, port, whitelist=None, group_rules=0):
    if group_rules:
        routing = "".join(
            f"    use_backend canary if {{ req.hdr(x-user-group) -m str group-{i} }}\n"
            for i in range(1, group_rules + 1))
    else:
        write(f"{d}/whitelist.txt", "\n".join(whitelist) + "\n")
        routing = f"""    acl canary_header req.hdr(x-canary) -m str true
    acl whitelisted   req.hdr(x-user-id) -m str -f {d}/whitelist.txt
    acl permille_50   req.hdr(x-user-id),crc32(1),mod(1000) lt 50
    use_backend canary if canary_header
    use_backend canary if whitelisted
    use_backend canary if permille_50
"""
    backends = "".join(f"""backend {p}
    server {p}1 127.0.0.1:{o}

""" for p, o in ORIGIN.items())
    return write(f"{d}/haproxy.cfg", f"""global
    nbthread {workers}
    maxconn {MAX_CONNS}
    # no log line: no logging

defaults
    mode http
    option http-keep-alive
    http-reuse always
    option forwardfor
    timeout connect 2s
    timeout client 75s
    timeout server 30s
    timeout http-request 10s
    timeout http-keep-alive 75s

frontend gray
    bind 127.0.0.1:{port}
    maxconn {MAX_CONNS}
    http-request set-header X-Forwarded-Proto http
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
{routing}    default_backend blue

{backends}""")


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


def make_proxy(kind, d, workers, port, cpus, gg_bin, admin=GG_ADMIN, whitelist=None, group_rules=0):
    os.makedirs(f"{d}/tmp", exist_ok=True)
    if kind == "graygate":
        conf = graygate_conf(d, workers, port, admin, whitelist, group_rules)
        rc, _, err = run([gg_bin, "check", "--config", conf], 60)
        if rc != 0:
            raise RuntimeError(f"graygate check failed for {conf}:\n{err}")
        env = dict(os.environ, RUST_LOG="warn")
        return Service(kind, [gg_bin, "run", "--config", conf], port, cpus, d, env)
    if kind == "nginx":
        conf = nginx_conf(d, workers, port, whitelist, group_rules)
        rc, _, err = run(["nginx", "-t", "-p", d, "-c", conf, "-e", f"{d}/error.log"], 60)
        if rc != 0:
            raise RuntimeError(f"nginx -t failed for {conf}:\n{err}")
        return Service(kind, ["nginx", "-p", d, "-c", conf, "-e", f"{d}/error.log"], port, cpus, d)
    if kind == "haproxy":
        conf = haproxy_conf(d, workers, port, whitelist, group_rules)
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


def wrk(port, seconds, threads, conns, cpus, group=None):
    argv = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{seconds}s", "--timeout", "5s",
            "-s", LUA, f"http://127.0.0.1:{port}/"]
    if group:
        argv += ["--", group]
    rc, out, err = run(argv, seconds + 60, cpus=cpus)
    r = parse_wrk(out)
    r["rc"], r["raw"] = rc, out + err
    return r


def oha(port, seconds, rate, conns, cpus, uid):
    argv = ["oha", "--no-tui", "--output-format", "json", "--latency-correction",
            "-q", str(rate), "-z", f"{seconds}s", "-c", str(conns),
            "-H", f"x-user-id: {uid}", f"http://127.0.0.1:{port}/"]
    rc, out, err = run(argv, seconds + 60, cpus=cpus)
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


def fetch(port, headers):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        c.request("GET", "/", headers=headers)
        resp = c.getresponse()
        return resp.status, resp.read().decode(errors="replace").strip()
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


# --------------------------------------------------------------------------- stats, tables

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, nd=1):
    if x is None:
        return "n/a"
    if isinstance(x, str):
        return x
    return f"{x:,.{nd}f}"


def ratio(a, b, nd=2):
    if a is None or b is None or b == 0:
        return "n/a"
    return f"{a / b:.{nd}f}"


def table(header, rows):
    say("| " + " | ".join(header) + " |")
    say("|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|")
    for r in rows:
        say("| " + " | ".join(str(c) for c in r) + " |")
    say()


def ms(x):
    return None if x is None else x * 1000.0


def other_load(runs):
    """Median share of one core used by other processes during these runs."""
    v = med([r.get("other_pct") for r in runs])
    return "n/a" if v is None else f"{v:.0f} %"


def noise_line(runs):
    o = [r["other_pct"] for r in runs if r.get("other_pct") is not None]
    st = [r["steal_pct"] for r in runs if r.get("steal_pct") is not None]
    if not o:
        return ""
    return (f"Machine noise during these runs: processes outside the benchmark used a median of "
            f"{statistics.median(o):.0f} % of one core (max {max(o):.0f} %); hypervisor steal "
            f"median {statistics.median(st):.0f} % (max {max(st):.0f} %).")


# --------------------------------------------------------------------------- phases

class Bench:
    def __init__(self, a):
        self.a = a
        self.work = a.workdir
        self.results = {"settings": vars(a).copy(), "layouts": {}, "growth": {}}
        self.multi = os.cpu_count() and os.cpu_count() >= 2 and not a.no_pin
        self.origin = None
        self.proxies = {}

    # layouts: "1w" = one worker, proxy on core 0, client+origin on core 1; "2w": unpinned
    def cpus(self, layout):
        if layout == "1w" and self.multi:
            return "0", "1"
        return None, None

    def start_origin(self, layout):
        if self.origin:
            self.origin.stop()
        _, client_cpus = self.cpus(layout)
        d = f"{self.work}/{layout}/origin-run"
        os.makedirs(f"{self.work}/{layout}/origin/tmp", exist_ok=True)
        conf = origin_conf(f"{self.work}/{layout}", 1 if layout == "1w" else 2)
        os.makedirs(d, exist_ok=True)
        argv = ["nginx", "-p", f"{self.work}/{layout}/origin", "-c", conf,
                "-e", f"{self.work}/{layout}/origin/error.log"]
        self.origin = Service("origin", argv, ORIGIN["blue"], client_cpus, d)
        self.origin.start()
        for port in ORIGIN.values():
            if not wait_port(port, 10):
                raise RuntimeError(f"origin port {port} not up")

    def start_proxies(self, layout, workers):
        for s in self.proxies.values():
            s.stop()
        self.proxies = {}
        proxy_cpus, _ = self.cpus(layout)
        wl = whitelist_ids(self.a.whitelist, WL_FROM_LOAD)
        for kind in PROXIES:
            d = f"{self.work}/{layout}/{kind}"
            svc = make_proxy(kind, d, workers, PORT[kind], proxy_cpus, self.a.graygate, whitelist=wl)
            self.proxies[kind] = svc.start()

    def restart_proxy(self, kind):
        svc = self.proxies[kind]
        svc.stop()
        svc.start()

    def pids_of(self, target):
        if target == "direct":
            return []
        return self.proxies[target].pids()

    def layout(self, layout):
        a = self.a
        workers = 1 if layout == "1w" else 2
        threads = 1 if layout == "1w" else 2
        proxy_cpus, client_cpus = self.cpus(layout)
        R = self.results["layouts"].setdefault(layout, {})
        R["workers"], R["wrk_threads"], R["proxy_cpus"], R["client_cpus"] = \
            workers, threads, proxy_cpus or "any", client_cpus or "any"
        log(f"layout {layout}: starting origin and proxies (workers={workers})")
        self.start_origin(layout)
        self.start_proxies(layout, workers)

        # routing check: same requests, each proxy's pools
        log(f"layout {layout}: routing check")
        chk = {}
        always_blue = None
        for t in PROXIES:
            pools, counts, bad, sem = routing_check(PORT[t])
            chk[t] = {"counts": counts, "bad": bad, "sem": sem}
            blue_ids = {u for u, p in pools.items() if p == "blue"}
            always_blue = blue_ids if always_blue is None else always_blue & blue_ids
        # an id no proxy sends to canary (no x-canary, not whitelisted, not in any 5 %):
        # the latency test sends it, so every proxy walks its whole rule chain
        blue_ok = sorted(u for u in (always_blue or set()) if (int(u) - ID_BASE) % 100 != 7)
        R["latency_uid"] = blue_ok[len(blue_ok) // 2] if blue_ok else str(ID_BASE + 500)
        R["routing"] = chk

        # warm-up
        for t in TARGETS:
            wrk(PORT[t], 2, threads, a.conns, client_cpus)

        # max throughput + CPU per request, interleaved
        runs = R.setdefault("max", {t: [] for t in TARGETS})
        for rep in range(a.reps):
            for t in TARGETS:
                with Window(self.pids_of(t), self.origin.pids()) as w:
                    r = wrk(PORT[t], a.duration, threads, a.conns, client_cpus)
                w.fill(r)
                if r["rc"] == 0:
                    r.pop("raw")
                runs[t].append(r)
                log(f"{layout} max rep{rep + 1} {t:8s}: {r['rps']:>10,.0f} req/s  "
                    f"cpu/req={fmt(r['cpu_us_per_req'])}us non2xx={r['non2xx']} sockerr={r['sock_errors']} "
                    f"other={r['other_pct']:.0f}% steal={r['steal_pct']:.0f}%")

        # latency at a fixed rate: half of nginx's median max
        nginx_max = med([r["rps"] for r in runs["nginx"]])
        rate = max(100, int(round((nginx_max or 2000) * 0.5)))
        R["latency_rate"] = rate
        lat = R.setdefault("latency", {t: [] for t in TARGETS})
        for rep in range(a.reps):
            for t in TARGETS:
                with Window(self.pids_of(t), self.origin.pids()) as w:
                    r = oha(PORT[t], a.duration, rate, a.conns, client_cpus, R["latency_uid"])
                w.fill(r)
                if r["rc"] == 0:
                    r.pop("raw")
                lat[t].append(r)
                log(f"{layout} latency rep{rep + 1} {t:8s} @{rate}/s: p50={fmt(ms(r['p50']), 3)}ms "
                    f"p99={fmt(ms(r['p99']), 3)}ms p99.9={fmt(ms(r['p999']), 3)}ms "
                    f"achieved={fmt(r['rps'], 0)}/s cpu/req={fmt(r['cpu_us_per_req'])}us "
                    f"non2xx={r['non2xx']} err={r['errors']} other={r['other_pct']:.0f}% "
                    f"steal={r['steal_pct']:.0f}% {r.get('error_kinds') or ''}")

        # memory per idle keep-alive connection, fresh processes
        if a.idle_conns > 0:
            mem = R.setdefault("memory", {t: [] for t in PROXIES})
            for rep in range(a.mem_reps):
                for t in PROXIES:
                    self.restart_proxy(t)
                    wrk(PORT[t], 2, threads, a.conns, client_cpus)  # warm: upstream pools, allocator
                    time.sleep(1.0)
                    m = idle_memory(self.proxies[t], a.idle_conns, client_cpus)
                    m["kib_per_conn"] = ((m["rss1"] - m["rss0"]) / m["ok"]
                                         if m["rss1"] is not None and m["ok"] else None)
                    mem[t].append(m)
                    log(f"{layout} memory rep{rep + 1} {t:8s}: rss0={m['rss0']}KiB rss1={m['rss1']}KiB "
                        f"ok={m['ok']} failed={m['failed']} still_open={m['open']} "
                        f"-> {fmt(m['kib_per_conn'], 2)} KiB/conn")

        for s in self.proxies.values():
            s.stop()
        self.proxies = {}

    def growth(self):
        """CPU/request vs whitelist size and rule-chain length (one-worker layout)."""
        a = self.a
        layout = "1w"
        proxy_cpus, client_cpus = self.cpus(layout)
        log("growth: starting origin and 12 proxy variants")
        self.start_origin(layout)
        variants = []  # (proxy, label, group header or None)
        port = 18100
        admin = 18950
        services = []
        try:
            for kind in PROXIES:
                for label, wl_n, rules in (("W=10", 10, 0), (f"W={a.big_whitelist:,}", a.big_whitelist, 0),
                                           ("rules=10", 0, 10), (f"rules={a.big_rules:,}", 0, a.big_rules)):
                    d = f"{self.work}/growth/{kind}-{label.replace('=', '').replace(',', '')}"
                    wl = whitelist_ids(wl_n, WL_FROM_LOAD_GROWTH) if wl_n else None
                    svc = make_proxy(kind, d, 1, port, proxy_cpus, a.graygate, admin=admin,
                                     whitelist=wl, group_rules=rules)
                    svc.start()
                    services.append(svc)
                    variants.append((kind, label, svc, f"group-{rules}" if rules else None))
                    port += 1
                    admin += 1
            # check: the group variants must send group-N to canary
            for kind, label, svc, group in variants:
                if group:
                    st, body = fetch(svc.port, {"x-user-group": group, "x-user-id": "1000500"})
                    if body != "canary":
                        log(f"growth: WARNING {kind} {label}: {group} went to {body!r} ({st})")
            for kind, label, svc, group in variants:
                wrk(svc.port, 2, 1, a.conns, client_cpus, group)
            G = self.results["growth"]
            for rep in range(a.reps):
                for kind, label, svc, group in variants:
                    with Window(svc.pids(), self.origin.pids()) as w:
                        r = wrk(svc.port, a.duration, 1, a.conns, client_cpus, group)
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

    # ----------------------------------------------------------------------- report
    def report(self):
        a = self.a
        L = self.results["layouts"]
        say("## Routing check (each proxy, the 1,000 load requests once)")
        say()
        say("Pools chosen for the 1,000 distinct requests of the load mix (20 whitelisted ids, "
            "10 with `x-canary: true`, 5 % hashed). The hashes differ by design (graygate: murmur3, "
            "nginx: split_clients' MurmurHash2, HAProxy: crc32), so the hashed 5 % are different users, "
            "of about the same count.")
        say()
        rows = []
        for lay, R in L.items():
            for t in PROXIES:
                c = R["routing"][t]
                sem = c["sem"]
                rows.append([f"{t} ({lay})", c["counts"].get("canary", 0), c["counts"].get("blue", 0),
                             sum(v for k, v in c["counts"].items() if k not in ("canary", "blue")),
                             c["bad"], "yes" if sem["x-canary"] else "NO",
                             "yes" if sem["whitelist"] else "NO", "yes" if sem["no-id"] else "NO"])
        table(["proxy (layout)", "canary", "blue", "other", "non-200", "x-canary→canary",
               "whitelisted→canary", "no id→blue"], rows)

        for lay, R in L.items():
            title = ("one worker: proxy pinned to core 0, wrk + origin on core 1"
                     if R["proxy_cpus"] != "any" else
                     f"{R['workers']} workers, nothing pinned")
            say(f"## Layout {lay}: {title}")
            say()
            say(f"wrk -t{R['wrk_threads']} -c{a.conns} -d{a.duration}s, {a.reps} interleaved "
                f"repetition(s), medians; whitelist W={a.whitelist}.")
            say()
            mx = R["max"]
            all_runs = [r for t in TARGETS for r in mx[t] + R.get("latency", {}).get(t, [])]
            line = noise_line(all_runs)
            if line:
                say(line)
                say()

            # CPU per request
            cpu = {t: med([r["cpu_us_per_req"] for r in mx[t]]) for t in PROXIES}
            cpu_lo = {t: min([r["cpu_us_per_req"] for r in mx[t] if r["cpu_us_per_req"]], default=None) for t in PROXIES}
            cpu_hi = {t: max([r["cpu_us_per_req"] for r in mx[t] if r["cpu_us_per_req"]], default=None) for t in PROXIES}
            lat = R.get("latency", {})
            cpu_fixed = {t: med([r["cpu_us_per_req"] for r in lat.get(t, [])]) for t in PROXIES}
            cpu_user = {t: med([r.get("user_us_per_req") for r in mx[t]]) for t in PROXIES}
            say(f"### Proxy CPU per request (µs; utime+stime of every proxy process / completed requests) — {lay}")
            say()
            rows = [[t, fmt(cpu[t], 2), f"{fmt(cpu_lo[t], 2)} – {fmt(cpu_hi[t], 2)}", fmt(cpu_user[t], 2),
                     fmt(cpu_fixed[t], 2), other_load(mx[t] + lat.get(t, []))] for t in PROXIES]
            rows.append(["**graygate / nginx**", ratio(cpu["graygate"], cpu["nginx"]), "",
                         ratio(cpu_user["graygate"], cpu_user["nginx"]),
                         ratio(cpu_fixed["graygate"], cpu_fixed["nginx"]), ""])
            rows.append(["**graygate / haproxy**", ratio(cpu["graygate"], cpu["haproxy"]), "",
                         ratio(cpu_user["graygate"], cpu_user["haproxy"]),
                         ratio(cpu_fixed["graygate"], cpu_fixed["haproxy"]), ""])
            table(["proxy", "µs/req at max load (median)", "min – max", "of which user space (median)",
                   f"µs/req at fixed {R.get('latency_rate', 0):,} req/s (median)",
                   "other load (median, % of a core)"], rows)

            # max rps
            rps = {t: med([r["rps"] for r in mx[t]]) for t in TARGETS}
            say(f"### Max requests/s — {lay}")
            say()
            rows = []
            for t in TARGETS:
                rows.append([t, fmt(rps[t], 0),
                             f"{fmt(min(r['rps'] for r in mx[t]), 0)} – {fmt(max(r['rps'] for r in mx[t]), 0)}",
                             "100 %" if t == "direct" else
                             (f"{100 * rps[t] / rps['direct']:.1f} %" if rps['direct'] else "n/a"),
                             sum(r["requests"] for r in mx[t]),
                             sum(r["non2xx"] for r in mx[t]), sum(r["sock_errors"] for r in mx[t]),
                             other_load(mx[t])])
            rows.append(["**graygate / nginx**", ratio(rps["graygate"], rps["nginx"]), "", "", "", "", "", ""])
            rows.append(["**graygate / haproxy**", ratio(rps["graygate"], rps["haproxy"]), "", "", "", "", "", ""])
            table(["target", "req/s (median)", "min – max", "share of direct", "requests (all runs)",
                   "non-2xx (all runs)", "socket errors (all runs)", "other load (median)"], rows)

            # latency
            if lat:
                rate = R["latency_rate"]
                say(f"### Latency at a fixed {rate:,} req/s (half of nginx's max), "
                    f"`oha --latency-correction -c {a.conns} -z {a.duration}s`, x-user-id {R['latency_uid']} "
                    f"(falls through every rule to blue) — {lay}")
                say()
                p = {t: {k: med([ms(r[k]) for r in lat[t]]) for k in ("p50", "p99", "p999")} for t in TARGETS}
                rows = []
                for t in TARGETS:
                    row = [t, fmt(p[t]["p50"], 3), fmt(p[t]["p99"], 3), fmt(p[t]["p999"], 3)]
                    if t == "direct":
                        row += ["—", "—", "—"]
                    else:
                        row += [fmt(None if p[t][k] is None or p["direct"][k] is None else p[t][k] - p["direct"][k], 3)
                                for k in ("p50", "p99", "p999")]
                    row += [fmt(med([r["rps"] for r in lat[t]]), 0),
                            sum(r["non2xx"] for r in lat[t]), sum(r["errors"] for r in lat[t]),
                            other_load(lat[t])]
                    rows.append(row)

                def added(t, k):
                    if p[t][k] is None or p["direct"][k] is None:
                        return None
                    return p[t][k] - p["direct"][k]
                for other in ("nginx", "haproxy"):
                    rows.append([f"**graygate / {other}** (added)", "", "", ""] +
                                [ratio(added("graygate", k), added(other, k)) for k in ("p50", "p99", "p999")] +
                                ["", "", "", ""])
                table(["target", "p50 ms", "p99 ms", "p99.9 ms", "added p50 ms", "added p99 ms",
                       "added p99.9 ms", "achieved req/s", "non-2xx", "errors", "other load (median)"], rows)

            # memory
            mem = R.get("memory")
            if mem:
                say(f"### Memory per idle keep-alive client connection ({a.idle_conns:,} connections, "
                    f"one request each, then idle; VmRSS summed over the proxy's processes) — {lay}")
                say()
                kib = {t: med([m["kib_per_conn"] for m in mem[t]]) for t in PROXIES}
                rows = []
                for t in PROXIES:
                    rows.append([t, fmt(med([m["rss0"] / 1024 for m in mem[t]]), 1),
                                 fmt(med([m["rss1"] / 1024 for m in mem[t] if m["rss1"] is not None]), 1),
                                 fmt(kib[t], 2),
                                 f"{min(m['ok'] for m in mem[t])} / {a.idle_conns}",
                                 f"{min(m['open'] for m in mem[t])}"])
                rows.append(["**graygate / nginx**", "", "", ratio(kib["graygate"], kib["nginx"]), "", ""])
                rows.append(["**graygate / haproxy**", "", "", ratio(kib["graygate"], kib["haproxy"]), "", ""])
                table(["proxy", "RSS idle MiB", f"RSS with {a.idle_conns:,} MiB", "KiB per connection (median)",
                       "connected (min)", "still open at reading (min)"], rows)

        G = self.results["growth"]
        if G:
            say("## Cost growth (one worker, pinned; CPU µs per request, medians)")
            say()
            say(f"W: whitelist size (the load mix unchanged; 10 of its ids whitelisted in both). "
                f"rules: N header rules `x-user-group exact group-<i>`, every request sends `group-N` "
                f"so only the LAST rule matches (graygate: a chain of N rules; HAProxy: N `use_backend` "
                f"lines; nginx: one `map` of N entries, a hash lookup, so not a chain).")
            say()
            rows = []
            wl_big, r_big = f"W={a.big_whitelist:,}", f"rules={a.big_rules:,}"
            c = {k: {lab: med([r["cpu_us_per_req"] for r in runs]) for lab, runs in v.items()} for k, v in G.items()}
            q = {k: {lab: med([r["rps"] for r in runs]) for lab, runs in v.items()} for k, v in G.items()}
            for k in PROXIES:
                if k not in c:
                    continue
                rows.append([k, fmt(c[k].get("W=10"), 2), fmt(c[k].get(wl_big), 2),
                             ratio(c[k].get(wl_big), c[k].get("W=10")),
                             fmt(c[k].get("rules=10"), 2), fmt(c[k].get(r_big), 2),
                             ratio(c[k].get(r_big), c[k].get("rules=10")),
                             " / ".join(fmt(q[k].get(lab), 0) for lab in ("W=10", wl_big, "rules=10", r_big)),
                             sum(r["non2xx"] + r["sock_errors"] for runs in G[k].values() for r in runs),
                             other_load([r for runs in G[k].values() for r in runs])])
            table(["proxy", "W=10", wl_big, "growth", "rules=10", r_big, "growth",
                   "req/s (W=10 / W big / rules=10 / rules big)", "non-2xx + socket errors",
                   "other load (median)"], rows)
            line = noise_line([r for v in G.values() for runs in v.values() for r in runs])
            if line:
                say(line)
                say()

        say("## Errors seen by the load generators (all runs)")
        say()
        rows = []
        for t in TARGETS:
            n2 = se = oe = ab = req = 0
            for R in L.values():
                for r in R["max"][t]:
                    n2 += r["non2xx"]; se += r["sock_errors"]; req += r["requests"]
                for r in R.get("latency", {}).get(t, []):
                    n2 += r["non2xx"]; oe += r["errors"]; req += r["requests"]
                    ab += r.get("aborted_at_end", 0)
            for runs in G.get(t, {}).values():
                for r in runs:
                    n2 += r["non2xx"]; se += r["sock_errors"]; req += r["requests"]
            rows.append([t, f"{req:,}", n2, se, oe, ab])
        table(["target", "requests", "non-2xx", "wrk socket errors", "oha errors",
               "oha in flight at -z end (not errors)"], rows)


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
        "oha": first(["oha", "--version"]),
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


def main():
    global PGID_FILE, OUT
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--graygate", required=True, help="path to the release graygate binary")
    ap.add_argument("--quick", action="store_true", help="smoke test: 1 repetition, 5 s runs")
    ap.add_argument("--reps", type=int, default=None, help="interleaved repetitions (default 3, quick 1)")
    ap.add_argument("--duration", type=int, default=None, help="seconds per run (default 10, quick 5)")
    ap.add_argument("--conns", type=int, default=50, help="client connections for wrk and oha")
    ap.add_argument("--whitelist", type=int, default=100, help="whitelist size W of the main config")
    ap.add_argument("--idle-conns", type=int, default=5000, help="idle keep-alive connections (0: skip)")
    ap.add_argument("--mem-reps", type=int, default=None, help="memory repetitions (default = reps)")
    ap.add_argument("--big-whitelist", type=int, default=10000)
    ap.add_argument("--big-rules", type=int, default=1000)
    ap.add_argument("--layouts", default="1w,2w", help="comma list of 1w (pinned) and 2w (unpinned)")
    ap.add_argument("--no-growth", action="store_true", help="skip the cost-growth section")
    ap.add_argument("--no-pin", action="store_true", help="never use taskset")
    ap.add_argument("--workdir", default=None, help="configs, logs, results.json (default: a new temp dir)")
    ap.add_argument("--cmdline", default=None, help="(run.sh) the command line to print")
    ap.add_argument("--report", default=None, help="also write the report (markdown) here")
    a = ap.parse_args()
    if a.reps is None:
        a.reps = 1 if a.quick else 3
    if a.duration is None:
        a.duration = 5 if a.quick else 10
    if a.mem_reps is None:
        a.mem_reps = a.reps
    a.graygate = os.path.abspath(a.graygate)
    a.workdir = a.workdir or tempfile.mkdtemp(prefix="graygate-load-")
    os.makedirs(a.workdir, exist_ok=True)
    PGID_FILE = os.path.join(a.workdir, "pgids")

    atexit.register(kill_all)
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, _on_signal)

    for tool in ("nginx", "haproxy", "wrk", "oha", "taskset"):
        if not shutil.which(tool):
            sys.exit(f"missing tool: {tool} (run benches/load/run.sh, which installs it)")
    for port in list(PORT.values()) + list(ORIGIN.values()) + [GG_ADMIN]:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.3):
                sys.exit(f"port {port} on 127.0.0.1 is already in use; stop what listens there")
        except OSError:
            pass

    report_lines = []

    class Tee:
        def write(self, s):
            sys.stdout.write(s)
            report_lines.append(s)

        def flush(self):
            sys.stdout.flush()
    OUT = Tee()

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
    for k in ("graygate", "nginx", "haproxy", "wrk", "oha", "python"):
        say(f"- {k}: {v[k]}")
    say(f"- command: `{a.cmdline or ' '.join(sys.argv)}`")
    say(f"- settings: reps={a.reps}, duration={a.duration}s, conns={a.conns}, W={a.whitelist}, "
        f"idle conns={a.idle_conns}, layouts={a.layouts}, growth={'no' if a.no_growth else 'yes'}, "
        f"pinning={'yes' if (os.cpu_count() or 1) >= 2 and not a.no_pin else 'no'}")
    try:
        say(f"- load average at start: {' '.join(open('/proc/loadavg').read().split()[:3])}")
    except OSError:
        pass
    say(f"- workdir (configs, logs, results.json): {a.workdir}")
    say()

    b = Bench(a)
    b.results["versions"] = v
    try:
        layouts = [x.strip() for x in a.layouts.split(",") if x.strip()]
        if "1w" in layouts:
            b.layout("1w")
        if not a.no_growth:
            b.growth()
        if "2w" in layouts:
            b.layout("2w")
    finally:
        if b.origin:
            b.origin.stop()
        for s in b.proxies.values():
            s.stop()
        kill_all()
        with open(os.path.join(a.workdir, "results.json"), "w") as f:
            json.dump(b.results, f, indent=1, default=str)

    b.report()
    say(f"Total benchmark time: {time.time() - t0:,.0f} s. Raw numbers: {a.workdir}/results.json")
    if a.report:
        with open(a.report, "w") as f:
            f.write("".join(report_lines))


if __name__ == "__main__":
    main()
