"""The load benchmark's markdown report (stdout) and progress lines (stderr).

Every figure is a median over the interleaved repetitions of one run; ratios are
graygate / other, from the medians. README.md beside this file says what each one is.
"""
import statistics
import sys
import time

import mixed_rules

OUT = sys.stdout  # bench.py replaces it with a tee into the report file

PROXY_KINDS = ("graygate", "nginx", "haproxy")


def log(msg):
    """Progress lines go to stderr, so stdout holds only the report."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def say(line=""):
    print(line, file=OUT, flush=True)


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


def ratio_added(a, b, nd=2):
    """A ratio of two added latencies: only meaningful when both added something."""
    if a is None or b is None:
        return "n/a"
    if a <= 0 or b <= 0:
        return "n/a (≤ 0)"
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


def say_noise(runs):
    line = noise_line(runs)
    if line:
        say(line)
        say()


def span(runs, key, nd):
    xs = [r.get(key) for r in runs if r.get(key) is not None]
    return f"{fmt(min(xs), nd)} – {fmt(max(xs), nd)}" if xs else "n/a"


def sub(a, b):
    return None if a is None or b is None else a - b


def others(targets):
    """The targets graygate is compared with (every proxy target but graygate)."""
    return [t for t in targets if t not in ("direct", "graygate")]


class Report:
    def __init__(self, a, results):
        self.a, self.res = a, results
        self.summary = []  # (figure, graygate, nginx, haproxy, g/n, g/h)

    def render(self):
        L = self.res["layouts"]
        if any(R.get("routing") for R in L.values()):
            self.routing(L)
        for lay, R in L.items():
            if not (R.get("shapes") or R.get("memory") or R.get("stream")):
                continue  # a layout that ran only the growth section (which is its own)
            title = ("one worker: proxy pinned to core 0, the load generator and the origin on core 1"
                     if R["proxy_cpus"] != "any" else f"{R['workers']} workers, nothing pinned")
            say(f"## Layout {lay}: {title}")
            say()
            if R.get("tls_check"):
                self.tls_check(lay, R)
            for key, S in R.get("shapes", {}).items():
                self.shape(lay, R, key, S)
            if R.get("memory"):
                self.memory(lay, R)
            if R.get("stream"):
                self.stream(lay, R["stream"])
        if self.res.get("growth"):
            self.growth()
        for note in self.res.get("notes", []):
            say(f"Note: {note}.")
            say()
        if self.summary:
            self.say_summary()
        self.errors()

    # ---------------------------------------------------------------------- routing
    def routing(self, L):
        say("## Routing check (each proxy, the 1,000 load requests once)")
        say()
        say("Pools chosen for the 1,000 distinct requests of the load mix (20 whitelisted ids, "
            "10 with `x-canary: true`, 5 % hashed). The hashes differ by design (graygate: murmur3, "
            "nginx: split_clients' MurmurHash2, HAProxy: crc32), so the hashed 5 % are different users, "
            "of about the same count.")
        say()
        rows = []
        for lay, R in L.items():
            for t in PROXY_KINDS:
                c = R.get("routing", {}).get(t)
                if not c:
                    continue
                sem = c["sem"]
                rows.append([f"{t} ({lay})", c["counts"].get("canary", 0), c["counts"].get("blue", 0),
                             sum(v for k, v in c["counts"].items() if k not in ("canary", "blue")),
                             c["bad"], "yes" if sem["x-canary"] else "NO",
                             "yes" if sem["whitelist"] else "NO", "yes" if sem["no-id"] else "NO"])
        table(["proxy (layout)", "canary", "blue", "other", "non-200", "x-canary→canary",
               "whitelisted→canary", "no id→blue"], rows)

    def tls_check(self, lay, R):
        say(f"### TLS listeners as a client sees them (`openssl s_client -alpn h2,http/1.1`) — {lay}")
        say()
        say("A self-signed ECDSA P-256 certificate made for this run; every listener TLS 1.3. "
            "wrk offers no ALPN and gets HTTP/1.1; h2load offers h2.")
        say()
        rows = [[t, c.get("protocol") or "n/a", c.get("cipher") or "n/a", c.get("alpn") or "n/a",
                 c.get("kx") or "n/a"] for t, c in R["tls_check"].items()]
        table(["target", "protocol", "cipher suite", "ALPN (h2 offered)", "key exchange"], rows)

    # ---------------------------------------------------------------------- one shape
    def shape(self, lay, R, key, S):
        a = self.a
        mx = S["max"]
        targets = list(mx)
        lat = S.get("latency", {})
        tool = (f"wrk -t{R['wrk_threads']} -c{a.conns}" if S["tool"] == "wrk" else
                f"h2load -t{R['wrk_threads']} -c{a.h2_conns} -m{a.h2_streams}")
        say(f"### {S['title']} — {lay}")
        say()
        say(f"`{tool}`, {a.duration} s runs, {a.reps} interleaved repetition(s), medians; whitelist W={a.whitelist}."
            + ("" if S["tool"] == "wrk" else f" Fixed headers: x-user-id {R.get('latency_uid')} "
               "(falls through every rule to blue)."))
        say()
        say_noise([r for t in targets for r in mx[t] + lat.get(t, [])])

        cpu = {t: med([r["cpu_us_per_req"] for r in mx[t]]) for t in targets}
        user = {t: med([r.get("user_us_per_req") for r in mx[t]]) for t in targets}
        origin = {t: med([r.get("origin_us_per_req") for r in mx[t]]) for t in targets}
        fixed = {t: med([r["cpu_us_per_req"] for r in lat.get(t, [])]) for t in targets}
        rate = S.get("latency_rate")
        say(f"**CPU per request** (µs; utime+stime of every proxy process / completed requests; "
            f"the origin's likewise) — {S['title']}, {lay}")
        say()
        rows = []
        for t in targets:
            runs = mx[t]
            conns = [r.get("origin_conns") for r in runs if r.get("origin_conns") is not None]
            oreq = sum(r.get("origin_requests") or 0 for r in runs)
            creq = sum(r["requests"] for r in runs)
            win = [r["origin_window"] for r in runs if r.get("origin_window") and
                   r["origin_window"]["segments"] is not None and r["origin_window"]["requests"] > 0]
            segs = med([w["segments"] / w["requests"] for w in win])
            # connections opened in the window may have closed in it, their segments uncounted
            churn = "≥ " if any(w["conns"] > 0 for w in win) else ""
            rows.append([t, "—" if t == "direct" else fmt(cpu[t], 2),
                         "—" if t == "direct" else span(runs, "cpu_us_per_req", 2),
                         "—" if t == "direct" else fmt(user[t], 2), fmt(origin[t], 2),
                         sum(conns) if conns else "n/a", ratio(oreq, creq, 3) if oreq else "n/a",
                         churn + fmt(segs, 2) if segs is not None else "n/a",
                         fmt(fixed[t], 2) if rate and t != "direct" else "—", other_load(runs + lat.get(t, []))])
        for o in others(targets):
            rows.append([f"**graygate / {o}**", ratio(cpu["graygate"], cpu[o]), "",
                         ratio(user["graygate"], user[o]), ratio(origin["graygate"], origin[o]), "", "", "",
                         ratio(fixed["graygate"], fixed[o]) if rate else "", ""])
        table(["target", "proxy µs/req at max load", "min – max", "of which user space", "origin µs/req",
               "origin connections accepted (all runs)", "origin requests / client requests",
               "origin TCP data segments in / request (mid-run)",
               f"proxy µs/req at fixed {rate:,} req/s" if rate else "proxy µs/req at a fixed rate",
               "other load (median, % of a core)"], rows)

        rps = {t: med([r["rps"] for r in mx[t]]) for t in targets}
        say(f"**Max requests/s** — {S['title']}, {lay}")
        say()
        rows = []
        for t in targets:
            runs = mx[t]
            rows.append([t, fmt(rps[t], 0), span(runs, "rps", 0),
                         "100 %" if t == "direct" else
                         (f"{100 * rps[t] / rps['direct']:.1f} %" if rps.get("direct") else "n/a"),
                         f"{sum(r['requests'] for r in runs):,}", sum(r["non2xx"] for r in runs),
                         sum(r["sock_errors"] for r in runs), other_load(runs)])
        for o in others(targets):
            rows.append([f"**graygate / {o}**", ratio(rps["graygate"], rps[o]), "", "", "", "", "", ""])
        table(["target", "req/s (median)", "min – max", "share of direct", "requests (all runs)",
               "non-2xx (all runs)", "socket errors (all runs)", "other load (median)"], rows)

        self.add_summary(f"CPU per request, {key}, {lay}", cpu, "µs", 2, targets)
        self.add_summary(f"max requests/s, {key}, {lay}", rps, "", 0, targets)
        if key.startswith(("get", "post")):
            self.add_summary(f"origin CPU per request behind the proxy, {key}, {lay}", origin, "µs", 2, targets)
        if lat:
            self.latency(lay, R, S, targets)
        if S.get("strace"):
            self.strace(lay, S, targets)

    def latency(self, lay, R, S, targets):
        a = self.a
        lat = S["latency"]
        rate = S["latency_rate"]
        say(f"**Latency at a fixed {rate:,} req/s** (half of nginx's max), "
            f"`oha --latency-correction {S.get('latency_clients', '')} -z {a.duration}s`, "
            f"x-user-id {R['latency_uid']} (falls through every rule to blue) — {S['title']}, {lay}")
        say()
        p = {t: {k: med([ms(r[k]) for r in lat[t]]) for k in ("p50", "p99", "p999")} for t in targets}
        added = {t: {k: sub(p[t][k], p["direct"][k]) for k in ("p50", "p99", "p999")} for t in targets}
        rows = []
        for t in targets:
            row = [t] + [fmt(p[t][k], 3) for k in ("p50", "p99", "p999")]
            row += (["—"] * 3 if t == "direct" else [fmt(added[t][k], 3) for k in ("p50", "p99", "p999")])
            row += [fmt(med([r["rps"] for r in lat[t]]), 0), sum(r["non2xx"] for r in lat[t]),
                    sum(r["errors"] for r in lat[t]), other_load(lat[t])]
            rows.append(row)
        for o in others(targets):
            rows.append([f"**graygate / {o}** (added)", "", "", ""] +
                        [ratio_added(added["graygate"][k], added[o][k]) for k in ("p50", "p99", "p999")] +
                        ["", "", "", ""])
        table(["target", "p50 ms", "p99 ms", "p99.9 ms", "added p50 ms", "added p99 ms",
               "added p99.9 ms", "achieved req/s", "non-2xx", "errors", "other load (median)"], rows)
        key = [k for k, v in R["shapes"].items() if v is S][0]
        for k in ("p50", "p99"):
            self.add_summary(f"added {k} latency at {rate:,} req/s, {key}, {lay}",
                             {t: added[t][k] for t in targets}, "ms", 3, targets)

    def strace(self, lay, S, targets):
        st = S["strace"]
        names = set()
        for t in targets:
            names |= {k for k, v in st.get(t, {}).get("per_req", {}).items() if v >= 0.05}
        names = sorted(names, key=lambda k: -max(st.get(t, {}).get("per_req", {}).get(k, 0) for t in targets))
        say(f"**The origin's syscalls per client request** (`strace -c -f` on the origin's workers, one "
            f"{self.a.strace_seconds} s run per target apart from the measured ones; calls ≥ 0.05 per request) "
            f"— {S['title']}, {lay}")
        say()
        rows = []
        for t in targets:
            per = st.get(t, {}).get("per_req", {})
            rows.append([t, st.get(t, {}).get("requests", 0), fmt(sum(per.values()), 2)]
                        + [fmt(per.get(k, 0.0), 2) for k in names])
        table(["target", "requests", "all syscalls"] + names, rows)

    # ---------------------------------------------------------------------- memory
    def memory(self, lay, R):
        a = self.a
        mem = R["memory"]
        say(f"### Memory per idle keep-alive client connection ({a.idle_conns:,} connections, "
            f"one request each, then idle; VmRSS summed over the proxy's processes) — {lay}")
        say()
        kib = {t: med([m["kib_per_conn"] for m in mem[t]]) for t in mem}
        rows = []
        for t in mem:
            rows.append([t, fmt(med([m["rss0"] / 1024 for m in mem[t]]), 1),
                         fmt(med([m["rss1"] / 1024 for m in mem[t] if m["rss1"] is not None]), 1),
                         fmt(kib[t], 2), f"{min(m['ok'] for m in mem[t])} / {a.idle_conns}",
                         f"{min(m['open'] for m in mem[t])}"])
        for o in others(list(mem)):
            rows.append([f"**graygate / {o}**", "", "", ratio(kib["graygate"], kib[o]), "", ""])
        table(["proxy", "RSS idle MiB", f"RSS with {a.idle_conns:,} MiB", "KiB per connection (median)",
               "connected (min)", "still open at reading (min)"], rows)
        self.add_summary(f"memory per idle keep-alive connection, {lay}", kib, "KiB", 2, list(mem))

    # ---------------------------------------------------------------------- streams
    def stream(self, lay, S):
        a = self.a
        runs = S["runs"]
        targets = list(runs)
        say(f"### Streamed answers: 200 chunks of 50 bytes, 5 ms apart, {S['conns']} concurrent streams — {lay}")
        say()
        say(f"`stream_client.py` against `stream_origin.py` (direct) and against each proxy in front of it; "
            f"{a.duration} s of streams back to back on keep-alive connections, {a.reps} interleaved "
            f"repetition(s), medians of each run's percentiles. Chunk delay: the origin's write to the "
            f"client's read, for every chunk. Streamed: the first chunk reached the client before the "
            f"last left the origin.")
        say()
        say_noise([r for t in targets for r in runs[t]])

        def pick(t, group, k):
            return med([(r.get(group) or {}).get(k) for r in runs[t]])
        v = {t: {"ttfb": pick(t, "ttfb", "p50"), "ttfb99": pick(t, "ttfb", "p99"),
                 "first": pick(t, "first_chunk", "p50"), "d50": pick(t, "delay", "p50"),
                 "d99": pick(t, "delay", "p99"), "d999": pick(t, "delay", "p999"),
                 "g99": pick(t, "gap", "p99"), "cpu": med([r.get("cpu_us_per_req") for r in runs[t]]),
                 "origin": med([r.get("origin_us_per_req") for r in runs[t]])} for t in targets}
        add = {t: {k: sub(v[t][k], v["direct"][k]) for k in ("ttfb", "ttfb99", "d50", "d99", "d999")}
               for t in targets}
        rows = []
        for t in targets:
            n = sum(r.get("streams") or 0 for r in runs[t])
            streamed = sum(r.get("streamed") or 0 for r in runs[t])
            rows.append([t, n, f"{100 * streamed / n:.0f} %" if n else "n/a",
                         fmt(v[t]["ttfb"], 3), fmt(v[t]["ttfb99"], 3), fmt(v[t]["first"], 3),
                         fmt(v[t]["d50"], 3), fmt(v[t]["d99"], 3), fmt(v[t]["d999"], 3), fmt(v[t]["g99"], 2),
                         "—" if t == "direct" else fmt(add[t]["ttfb"], 3),
                         "—" if t == "direct" else fmt(add[t]["d50"], 3),
                         "—" if t == "direct" else fmt(add[t]["d99"], 3),
                         "—" if t == "direct" else fmt(v[t]["cpu"], 0), fmt(v[t]["origin"], 0),
                         sum((r.get("bad") or 0) + (r.get("errors") or 0) for r in runs[t]), other_load(runs[t])])
        for o in others(targets):
            rows.append([f"**graygate / {o}**", "", "", "", "", "", "", "", "", "",
                         ratio_added(add["graygate"]["ttfb"], add[o]["ttfb"]),
                         ratio_added(add["graygate"]["d50"], add[o]["d50"]),
                         ratio_added(add["graygate"]["d99"], add[o]["d99"]), ratio(v["graygate"]["cpu"], v[o]["cpu"]),
                         "", "", ""])
        table(["target", "streams (all runs)", "streamed", "TTFB p50 ms", "TTFB p99 ms", "first chunk p50 ms",
               "chunk delay p50 ms", "p99 ms", "p99.9 ms", "gap p99 ms", "added TTFB p50 ms",
               "added chunk delay p50 ms", "added chunk delay p99 ms", "proxy CPU µs per stream",
               "origin CPU µs per stream", "bad streams + errors", "other load (median)"], rows)
        self.add_summary(f"added TTFB p50, streams, {lay}", {t: add[t]["ttfb"] for t in targets}, "ms", 3, targets)
        self.add_summary(f"added chunk delay p50, streams, {lay}", {t: add[t]["d50"] for t in targets}, "ms", 3,
                         targets)
        self.add_summary(f"added chunk delay p99, streams, {lay}", {t: add[t]["d99"] for t in targets}, "ms", 3,
                         targets)
        self.add_summary(f"CPU per stream, {lay}", {t: v[t]["cpu"] for t in targets}, "µs", 0, targets)

    # ---------------------------------------------------------------------- growth
    def growth(self):
        a = self.a
        G = self.res["growth"]
        mode = self.res.get("mixed_kinds", "full")
        say("## Cost growth (one worker, pinned; CPU µs per request, medians)")
        say()
        say(f"W: whitelist size (the load mix unchanged; 10 of its ids whitelisted in both). "
            f"rules: N header rules `x-user-group exact group-<i>`, every request sends `group-N` "
            f"so only the LAST rule matches (graygate: a chain of N rules; HAProxy: N `use_backend` "
            f"lines; nginx: one `map` of N entries, a hash lookup, so not a chain). "
            f"mixed: N rules of interleaved kinds ({mode} kinds: "
            f"{', '.join(mixed_rules.kinds(mode))}), only the LAST matches (graygate: a chain; "
            f"HAProxy: N `use_backend` lines; nginx: one `map` of N regexes over a composite key, tried "
            f"in order).")
        say()
        w_big, r_big = f"W={a.big_whitelist:,}", f"rules={a.big_rules:,}"
        m_big = f"mixed={a.big_rules:,}"
        labels = ("W=10", w_big, "rules=10", r_big, "mixed=10", m_big)
        c = {k: {lab: med([r["cpu_us_per_req"] for r in runs]) for lab, runs in v.items()} for k, v in G.items()}
        q = {k: {lab: med([r["rps"] for r in runs]) for lab, runs in v.items()} for k, v in G.items()}
        rows = []
        for k in PROXY_KINDS:
            if k not in c:
                continue
            ck = c[k]
            rows.append([k, fmt(ck.get("W=10"), 2), fmt(ck.get(w_big), 2), ratio(ck.get(w_big), ck.get("W=10")),
                         fmt(ck.get("rules=10"), 2), fmt(ck.get(r_big), 2), ratio(ck.get(r_big), ck.get("rules=10")),
                         fmt(ck.get("mixed=10"), 2), fmt(ck.get(m_big), 2), ratio(ck.get(m_big), ck.get("mixed=10")),
                         " / ".join(fmt(q[k].get(lab), 0) for lab in labels),
                         sum(r["non2xx"] + r["sock_errors"] for runs in G[k].values() for r in runs),
                         other_load([r for runs in G[k].values() for r in runs])])
        table(["proxy", "W=10", w_big, "growth", "rules=10", r_big, "growth", "mixed=10", m_big, "growth",
               "req/s (" + " / ".join(labels) + ")", "non-2xx + socket errors", "other load (median)"], rows)
        say_noise([r for v in G.values() for runs in v.values() for r in runs])
        fails = self.res.get("growth_check_failures", [])
        say(f"Routing of the chains checked with {self.res.get('growth_checks', 0)} probe requests "
            f"(the last rule, and the first rule of each kind, in every proxy): "
            + ("all went where the chain says." if not fails else f"{len(fails)} FAILED: " + "; ".join(fails)))
        say()
        for what, small, big in (("whitelist", "W=10", w_big), ("rules", "rules=10", r_big),
                                 ("mixed rules", "mixed=10", m_big)):
            g = {k: (c[k].get(big) / c[k][small] if c.get(k, {}).get(big) and c[k].get(small) else None)
                 for k in PROXY_KINDS}
            self.add_summary(f"CPU growth, {what} {small.split('=')[1]} → {big.split('=')[1]}", g, "×", 2,
                             list(PROXY_KINDS))

    # ---------------------------------------------------------------------- summary
    def add_summary(self, figure, values, unit, nd, targets):
        """One summary row against each proxy's default, and one against its other
        option where the shape has one (nginx streaming; HAProxy buffering or no-delay)."""
        div = ratio_added if figure.startswith("added") else ratio
        sep = "" if unit in ("", "×") else " "

        def show(t):
            if t not in targets:
                return "—"
            x = values.get(t)
            return "n/a" if x is None else f"{fmt(x, nd)}{sep}{unit}"
        g = values.get("graygate")
        other_h = "haproxy-buffer" if "haproxy-buffer" in targets else "haproxy-nodelay"
        for label, n, h in ((figure, "nginx", "haproxy"), (figure + ", the other option", "nginx-stream", other_h)):
            if n not in targets and h not in targets:
                continue
            self.summary.append([label, show("graygate"), show(n), show(h),
                                 div(g, values.get(n)) if n in targets else "—",
                                 div(g, values.get(h)) if h in targets else "—"])

    def say_summary(self):
        say("## Summary: graygate against nginx and HAProxy (medians of this run)")
        say()
        say("Rows ending in \"the other option\" compare graygate with nginx streaming "
            "(`proxy_request_buffering off`, `proxy_buffering off`) and with HAProxy buffering "
            "(`option http-buffer-request`, POST) or `option http-no-delay` (streams). For CPU, "
            "latency and memory, a ratio below 1 means graygate is cheaper or faster; for req/s, above 1.")
        say()
        table(["figure", "graygate", "nginx", "HAProxy", "graygate / nginx", "graygate / HAProxy"], self.summary)

    # ---------------------------------------------------------------------- errors
    def errors(self):
        say("## Errors seen by the load generators (all runs)")
        say()
        tally = {}

        def add(t, r, kind):
            e = tally.setdefault(t, {"req": 0, "n2": 0, "sock": 0, "oha": 0, "ab": 0, "stream": 0})
            if kind == "stream":
                e["req"] += r.get("streams") or 0
                e["stream"] += (r.get("bad") or 0) + (r.get("errors") or 0)
                return
            e["req"] += r.get("requests") or 0
            e["n2"] += r.get("non2xx") or 0
            if kind == "oha":
                e["oha"] += r.get("errors") or 0
                e["ab"] += r.get("aborted_at_end", 0)
            else:
                e["sock"] += r.get("sock_errors") or 0
        for R in self.res["layouts"].values():
            for S in R.get("shapes", {}).values():
                for t, runs in S["max"].items():
                    for r in runs:
                        add(t, r, "max")
                for t, runs in S.get("latency", {}).items():
                    for r in runs:
                        add(t, r, "oha")
            for t, runs in R.get("stream", {}).get("runs", {}).items():
                for r in runs:
                    add(t, r, "stream")
        for t, labs in self.res.get("growth", {}).items():
            for runs in labs.values():
                for r in runs:
                    add(t, r, "max")
        rows = [[t, f"{e['req']:,}", e["n2"], e["sock"], e["oha"], e["ab"], e["stream"]] for t, e in tally.items()]
        table(["target", "requests (streams counted once)", "non-2xx", "wrk/h2load socket errors", "oha errors",
               "oha in flight at -z end (not errors)", "bad or cut streams"], rows)
