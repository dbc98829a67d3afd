#!/usr/bin/env python3
"""A mixed rule chain of N rules for graygate, nginx and HAProxy; only the last matches.

Rule i (1 <= i < N) takes the condition kind KINDS[(i - 1) % len(KINDS)], with values of
its own, and sends to `green`; rule N is `x-user-group exact group-N` to `canary`. The
benchmark's requests send every input some rule looks at (x-user-group: group-N, an
x-user-id of the load mix, x-tenant, x-city-id, x-channel, a path, a query, the Host),
each with a value no earlier rule wants, so every rule is evaluated and only the last
one holds.

Kinds, interleaved in this order:

    header-exact    x-user-group exact group-i
    path            path prefix /pi/                                    (full)
    header-prefix   x-user-group prefix pfx-i-
    whitelist       x-user-id in [wlia, wlib]
    host            host h<i>.example.com                               (full)
    tenant          x-tenant exact tenant-i
    city            city 100000+i            (routing.city = x-city-id)
    method          PUT and x-tenant exact m-i                          (full)
    channel         channel chi              (routing.channel = x-channel)
    query           query q<i> exact v                                  (full)
    two-conditions  x-tenant prefix t<i>- and channel webi

The (full) kinds need graygate's request-line conditions (path, host, method, query);
`basic` leaves them out, for a graygate without them.

The same chain, per proxy:
  graygate  N [[rules]], first match wins.
  HAProxy   N `use_backend` lines with anonymous ACLs, in order: a linear walk.
  nginx     one `map` over a composite key
                $http_x_user_group|$http_x_user_id|$http_x_tenant|$http_x_city_id|
                $http_x_channel|$uri|$host|$request_method|$args
            with N regular expressions in rule order; a map tries its regexes in
            order, first match wins, so it keeps the chain's order (nginx has no flat
            construct for an ordered chain of mixed conditions).

`python3 mixed_rules.py --rules 12 --kinds full --proxy nginx` prints one proxy's part.
"""
import argparse

FULL_ONLY = {"path", "host", "method", "query"}
KINDS_FULL = ["header-exact", "path", "header-prefix", "whitelist", "host", "tenant", "city",
              "method", "channel", "query", "two-conditions"]
KINDS_BASIC = [k for k in KINDS_FULL if k not in FULL_ONLY]

# What the load sends besides x-user-group: group-N and the load mix's x-user-id.
REQUEST_PATH = "/v1/chat/completions?model=bench"
REQUEST_HEADERS = {"x-tenant": "tenant-0", "x-city-id": "310000", "x-channel": "web"}

# The fields of nginx's composite key, in order.
NGINX_KEY = ["$http_x_user_group", "$http_x_user_id", "$http_x_tenant", "$http_x_city_id",
             "$http_x_channel", "$uri", "$host", "$request_method", "$args"]
F = {name: i for i, name in enumerate(["group", "uid", "tenant", "city", "channel", "uri", "host",
                                       "method", "args"])}


def kinds(mode):
    return KINDS_FULL if mode == "full" else KINDS_BASIC


def rx(text):
    """A literal for an nginx regex inside a double-quoted token, without backslashes."""
    return "".join(f"[{c}]" if c in ".|?*+()[]{}^$" else c for c in text)


def field(name, pattern):
    """An nginx regex: field `name` of the composite key holds `pattern`."""
    skip = F[name]
    lead = "^" + ("(?:[^|]*[|])" + (f"{{{skip}}}" if skip > 1 else "") if skip else "")
    return lead + pattern


def exact_header(name, fld, v):
    """A header's exact value (nginx: the composite key's field fld)."""
    return (f'header = {{ name = "{name}", exact = "{v}" }}', f"{{ req.hdr({name}) -m str {v} }}",
            field(fld, rx(v) + "[|]"), ("GET", "/", {name: v}))


def one_of(key, name, fld, v, toml_value):
    """graygate's city or channel condition (read from header name) holding v."""
    return (f"{key} = [{toml_value}]", f"{{ req.hdr({name}) -m str {v} }}",
            field(fld, rx(v) + "[|]"), ("GET", "/", {name: v}))


def rule(kind, i):
    """(graygate match, HAProxy condition, nginx regex, probe) for rule i of this kind.

    probe: (method, path, headers) of a request that this rule matches and no rule
    before it does; the benchmark checks each proxy sends it to green."""
    if kind == "header-exact":
        return exact_header("x-user-group", "group", f"group-{i}")
    if kind == "header-prefix":
        v = f"pfx-{i}-"
        return (f'header = {{ name = "x-user-group", prefix = "{v}" }}',
                f"{{ req.hdr(x-user-group) -m beg {v} }}",
                field("group", rx(v)), ("GET", "/", {"x-user-group": v + "zz"}))
    if kind == "whitelist":
        a, b = f"wl{i}a", f"wl{i}b"
        return (f'whitelist = ["{a}", "{b}"]',
                f"{{ req.hdr(x-user-id) -m str {a} {b} }}",
                field("uid", f"(?:{a}|{b})[|]"), ("GET", "/", {"x-user-id": b}))
    if kind == "tenant":
        return exact_header("x-tenant", "tenant", f"tenant-{i}")
    if kind == "city":
        v = str(100000 + i)
        return one_of("city", "x-city-id", "city", v, v)
    if kind == "channel":
        v = f"ch{i}"
        return one_of("channel", "x-channel", "channel", v, f'"{v}"')
    if kind == "two-conditions":
        t, c = f"t{i}-", f"web{i}"
        return (f'header = {{ name = "x-tenant", prefix = "{t}" }}, channel = ["{c}"]',
                f"{{ req.hdr(x-tenant) -m beg {t} }} {{ req.hdr(x-channel) -m str {c} }}",
                field("tenant", rx(t) + "[^|]*[|][^|]*[|]" + c + "[|]"),
                ("GET", "/", {"x-tenant": t + "x", "x-channel": c}))
    if kind == "path":
        v = f"/p{i}/"
        return (f'path = {{ prefix = "{v}" }}', f"{{ path_beg {v} }}",
                field("uri", rx(v)), ("GET", v + "x", {}))
    if kind == "host":
        v = f"h{i}.example.com"
        return (f'host = ["{v}"]', f"{{ req.hdr(host),field(1,:) -m str -i {v} }}",
                field("host", rx(v) + "[|]"), ("GET", "/", {"Host": v}))
    if kind == "method":
        v = f"m-{i}"
        return (f'method = ["PUT"], header = {{ name = "x-tenant", exact = "{v}" }}',
                f"{{ method PUT }} {{ req.hdr(x-tenant) -m str {v} }}",
                field("tenant", rx(v) + "[|](?:[^|]*[|]){4}PUT[|]"), ("PUT", "/", {"x-tenant": v}))
    if kind == "query":
        v = f"q{i}"
        return (f'query = {{ name = "{v}", exact = "v" }}', f"{{ urlp({v}) -m str v }}",
                field("args", f"(?:[^|]*&)?{v}=v(?:&|$)"), ("GET", f"/?{v}=v", {}))
    raise ValueError(kind)


def chain(n, mode):
    """The chain for each proxy, plus the probes (kind, method, path, headers, pool)."""
    ks = kinds(mode)
    gg, hp, ng, probes = [], [], [], []
    seen = set()
    for i in range(1, n):
        kind = ks[(i - 1) % len(ks)]
        g, h, x, probe = rule(kind, i)
        gg.append(f'[[rules]]\nname = "r{i}-{kind}"\nmatch = {{ {g} }}\nto = "green"\n\n')
        hp.append(f"    use_backend green if {h}\n")
        ng.append(f'        "~{x}" green;\n')
        if kind not in seen:
            seen.add(kind)
            probes.append((kind,) + probe + ("green",))
    last = f"group-{n}"
    gg.append(f'[[rules]]\nname = "r{n}-last"\nmatch = {{ header = {{ name = "x-user-group", '
              f'exact = "{last}" }} }}\nto = "canary"\n\n')
    hp.append(f"    use_backend canary if {{ req.hdr(x-user-group) -m str {last} }}\n")
    ng.append(f'        "~{field("group", rx(last) + "[|]")}" canary;\n')
    probes.append(("last",) + ("GET", REQUEST_PATH, dict(REQUEST_HEADERS, **{"x-user-group": last}))
                  + ("canary",))
    nginx = ("    map \"" + "|".join(NGINX_KEY) + "\" $pool {\n        default blue;\n"
             + "".join(ng) + "    }\n")
    return {
        "graygate": "".join(gg),
        "graygate_routing": 'city = { header = "x-city-id" }\nchannel = { header = "x-channel" }\n',
        "haproxy": "".join(hp),
        "nginx": nginx,
        "probes": probes,
        "request_args": [f"group={last}", f"path={REQUEST_PATH}"]
                        + [f"header={k}:{v}" for k, v in REQUEST_HEADERS.items()],
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rules", type=int, default=12)
    ap.add_argument("--kinds", choices=["full", "basic"], default="full")
    ap.add_argument("--proxy", choices=["graygate", "nginx", "haproxy"], default="graygate")
    a = ap.parse_args()
    c = chain(a.rules, a.kinds)
    if a.proxy == "graygate":
        print(c["graygate_routing"])
    print(c[a.proxy], end="")


if __name__ == "__main__":
    main()
