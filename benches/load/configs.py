"""Config writers for the load benchmark: the origin, graygate, nginx and HAProxy.

Each proxy instance has a port base; its listeners sit at fixed offsets from it
(LISTENERS), so the driver can run a second set of the same proxies (the stream
section's, in front of the streaming origin) beside the first. A `full` instance has
every listener; the growth variants have only `main`.

    listener   graygate        nginx                          HAProxy
    main       HTTP/1.1 + h2c  HTTP/1.1, as nginx buffers      HTTP/1.1, as HAProxy streams
    stream     -               proxy_request_buffering off,    -
                               proxy_buffering off
    buffer     -               -                               option http-buffer-request
    nodelay    -               -                               option http-no-delay
    h2c        = main          listen ... http2 (no ssl)       bind ... proto h2
    tls        [server.tls]    listen ... ssl http2            bind ... ssl alpn h2,http/1.1

All listeners of one proxy share its routing (nginx: http-level maps; HAProxy: one
frontend per request-handling option, the same rules in each).
"""
import os

LISTENERS = {
    "graygate": {"main": 0, "h2c": 0, "tls": 10},
    "nginx": {"main": 1, "stream": 3, "h2c": 6, "tls": 11},
    "haproxy": {"main": 2, "buffer": 4, "nodelay": 5, "h2c": 7, "tls": 12},
}


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return path


def three_rule_job(d, whitelist):
    """The main job's rules, per proxy: (graygate TOML, nginx http-level maps, HAProxy lines)."""
    write(f"{d}/whitelist.txt", "\n".join(whitelist) + "\n")
    write(f"{d}/whitelist.map", "".join(f"{u} canary;\n" for u in whitelist))
    graygate = """[[rules]]
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
    nginx = f"""    # first match wins: x-canary, then the whitelist, then 5 % hashed on x-user-id
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
    haproxy = f"""    acl canary_header req.hdr(x-canary) -m str true
    acl whitelisted   req.hdr(x-user-id) -m str -f {d}/whitelist.txt
    acl permille_50   req.hdr(x-user-id),crc32(1),mod(1000) lt 50
    use_backend canary if canary_header
    use_backend canary if whitelisted
    use_backend canary if permille_50
"""
    return {"graygate": graygate, "nginx": nginx, "haproxy": haproxy}


def group_rule_job(n):
    """N header rules `x-user-group exact group-<i>` (the growth test's chain)."""
    graygate = "".join(f"""[[rules]]
name = "group-{i}"
match = {{ header = {{ name = "x-user-group", exact = "group-{i}" }} }}
to = "canary"

""" for i in range(1, n + 1))
    entries = "".join(f"        group-{i} canary;\n" for i in range(1, n + 1))
    nginx = f"""    map $http_x_user_group $pool {{
        default blue;
{entries}    }}
"""
    haproxy = "".join(f"    use_backend canary if {{ req.hdr(x-user-group) -m str group-{i} }}\n"
                      for i in range(1, n + 1))
    return {"graygate": graygate, "nginx": nginx, "haproxy": haproxy}


def tls_cert(d, run):
    """A self-signed ECDSA P-256 certificate for 127.0.0.1/localhost, made for this run."""
    cert, key, both = f"{d}/tls/cert.pem", f"{d}/tls/key.pem", f"{d}/tls/cert+key.pem"
    os.makedirs(f"{d}/tls", exist_ok=True)
    rc, _, err = run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                      "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost",
                      "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"], 60)
    if rc != 0:
        raise RuntimeError(f"openssl req failed:\n{err}")
    with open(both, "w") as f:
        f.write(open(cert).read() + open(key).read())
    return {"cert": cert, "key": key, "both": both}


def origin_conf(d, workers, origin, max_conns, fd_limit, tls):
    """The nginx origin: one server per pool, each answering its own name; blue also on
    h2c and TLS (the direct baselines of those shapes); a stub_status server."""
    servers = "".join(
        f"""    server {{
        listen 127.0.0.1:{origin[pool]} backlog=4096;
        location / {{ return 200 "{pool}\\n"; }}
    }}
""" for pool in ("blue", "green", "canary"))
    return write(f"{d}/origin/nginx.conf", f"""# origin: three pools, each answers its own name
daemon off;
master_process on;
worker_processes {workers};
worker_rlimit_nofile {fd_limit};
pid {d}/origin/nginx.pid;
error_log {d}/origin/error.log warn;
events {{ worker_connections {max_conns}; }}
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
{servers}
    # blue over h2c (prior knowledge) and over TLS: the direct baselines of those shapes
    server {{
        listen 127.0.0.1:{origin['blue-h2c']} http2 backlog=4096;
        location / {{ return 200 "blue\\n"; }}
    }}
    server {{
        listen 127.0.0.1:{origin['blue-tls']} ssl http2 backlog=4096;
        ssl_certificate {tls['cert']};
        ssl_certificate_key {tls['key']};
        ssl_protocols TLSv1.3;
        location / {{ return 200 "blue\\n"; }}
    }}
    # connections and requests the origin took: how each proxy uses its upstream
    server {{
        listen 127.0.0.1:{origin['status']};
        location / {{ stub_status; }}
    }}
}}
""")


def graygate_conf(d, workers, base, admin, upstreams, max_conns, rules, tls=None, routing_extra=""):
    pools = "".join(f'[pools.{p}]\nendpoints = ["127.0.0.1:{port}"]\n\n' for p, port in upstreams.items())
    tls_table = ""
    if tls:
        tls_table = f"""
[server.tls]
listen = "127.0.0.1:{base + LISTENERS['graygate']['tls']}"
cert = "{tls['cert']}"
key = "{tls['key']}"
"""
    return write(f"{d}/graygate.toml", f"""# graygate for the load benchmark: no [log] table = no access log
[server]
listen = "127.0.0.1:{base + LISTENERS['graygate']['main']}"
admin_listen = "127.0.0.1:{admin}"
workers = {workers}
{tls_table}
[limits]
max_connections = {max_conns}

{pools}[routing]
stable = "blue"
user_key = {{ header = "x-user-id" }}
{routing_extra}
{rules}""")


def nginx_conf(d, workers, base, upstreams, max_conns, fd_limit, routing, tls=None):
    port = {k: base + v for k, v in LISTENERS["nginx"].items()}
    upstream_blocks = "".join(f"""    upstream {p} {{
        server 127.0.0.1:{o};
        keepalive 64;
        keepalive_requests 10000000;
        keepalive_timeout 60s;
    }}
""" for p, o in upstreams.items())

    def proxy(extra=""):
        return f"""        location / {{
            proxy_pass http://$pool;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $http_host;
{extra}        }}
"""
    servers = f"""    # nginx's defaults: the request body is read whole before the upstream is
    # contacted (proxy_request_buffering on), the answer goes through its buffers
    # (proxy_buffering on)
    server {{
        listen 127.0.0.1:{port['main']} backlog=4096;
{proxy()}    }}
"""
    if tls:
        servers += f"""    # the option to stream both ways
    server {{
        listen 127.0.0.1:{port['stream']} backlog=4096;
{proxy('''            proxy_request_buffering off;
            proxy_buffering off;
''')}    }}
    # h2c with prior knowledge: an http2 listen without ssl
    server {{
        listen 127.0.0.1:{port['h2c']} http2 backlog=4096;
{proxy()}    }}
    # TLS 1.3, ALPN h2 and http/1.1
    server {{
        listen 127.0.0.1:{port['tls']} ssl http2 backlog=4096;
        ssl_certificate {tls['cert']};
        ssl_certificate_key {tls['key']};
        ssl_protocols TLSv1.3;
{proxy()}    }}
"""
    return write(f"{d}/nginx.conf", f"""daemon off;
master_process on;
worker_processes {workers};
worker_rlimit_nofile {fd_limit};
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections {max_conns * 2}; }}
http {{
    access_log off;
    keepalive_timeout 75s;
    keepalive_requests 10000000;    # HTTP/1.1 and HTTP/2 (1.19.7+): no forced reconnects
    map_hash_max_size 65536;
    map_hash_bucket_size 128;
    # an expert's setting for a gateway of JSON calls: bodies up to 128 KiB are
    # buffered in memory, not in a temp file (the default buffer is 16 KiB)
    client_body_buffer_size 128k;
    client_body_temp_path {d}/tmp;
    proxy_temp_path {d}/tmp;
    fastcgi_temp_path {d}/tmp;
    uwsgi_temp_path {d}/tmp;
    scgi_temp_path {d}/tmp;

{routing}
{upstream_blocks}
{servers}}}
""")


def haproxy_conf(d, workers, base, upstreams, max_conns, routing, tls=None):
    port = {k: base + v for k, v in LISTENERS["haproxy"].items()}
    backends = "".join(f"""backend {p}
    server {p}1 127.0.0.1:{o}

""" for p, o in upstreams.items())

    def frontend(name, binds, options=""):
        return f"""frontend {name}
{binds}    maxconn {max_conns}
{options}    http-request set-header X-Forwarded-Proto %[ssl_fc,iif(https,http)]
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
{routing}    default_backend blue

"""
    binds = f"    bind 127.0.0.1:{port['main']}\n"
    if tls:
        binds += (f"    bind 127.0.0.1:{port['h2c']} proto h2\n"
                  f"    bind 127.0.0.1:{port['tls']} ssl crt {tls['both']} alpn h2,http/1.1 ssl-min-ver TLSv1.3\n")
    # HAProxy's default streams the request body to the server as it comes
    frontends = frontend("gray", binds)
    if tls:
        frontends += frontend("gray_buffer", f"    bind 127.0.0.1:{port['buffer']}\n",
                              "    option http-buffer-request     # wait for the whole body first\n")
        frontends += frontend("gray_nodelay", f"    bind 127.0.0.1:{port['nodelay']}\n",
                              "    option http-no-delay           # no MSG_MORE merging: interactive streams\n")
    return write(f"{d}/haproxy.cfg", f"""global
    nbthread {workers}
    maxconn {max_conns}
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

{frontends}{backends}""")
