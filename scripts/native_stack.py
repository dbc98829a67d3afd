#!/usr/bin/env python3
"""Runs the docker-compose stack natively, makes an incident, and takes the README's
pictures: docs/status-page.png (the status page, in headless Chromium) and
docs/dashboard.png (the Grafana dashboard's panels drawn from Prometheus's data by
scripts/render_dashboard.py; Grafana itself cannot run here).

The same topology tests/stack.rs runs: the upstreams, the load and the gateway with
docker-compose.yml's command lines and environment and deploy/gateway/graygate.toml,
Debian's Prometheus with deploy/prometheus/; only the addresses are rewritten (each
service name becomes a loopback port) and the rollout's state file. The scenario:

  0:00  healthy; the canary's rollout starts at its first step
  1:30  a broken config is saved (the reload fails; the old config stays)
  2:00  a fixed one is saved (generation 2)
  3:00  the canary is told to fail a third of its requests (CANARY_ERROR_RATE=0.3)
  5:00  pictures

    cargo build --release && python3 scripts/native_stack.py

Needs prometheus (Debian), chromium, PyYAML and matplotlib.
"""

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def interpolate(text, env):
    def value(m):
        name, default = m.group(1), m.group(2) or ""
        return env.get(name) or default
    return re.sub(r"\$\{([A-Za-z0-9_]+)(?::-([^}]*))?\}", value, text)


def wait_http(url, seconds=20):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except Exception:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not answer")


def crop_blank_bottom(path, margin=16):
    """Cuts the page's empty background below its last section."""
    from PIL import Image
    image = Image.open(path).convert("RGB")
    background = image.getpixel((image.width - 1, image.height - 1))
    pixels = image.load()
    bottom = image.height
    while bottom > 1 and all(pixels[x, bottom - 1] == background for x in range(0, image.width, 4)):
        bottom -= 1
    image.crop((0, 0, image.width, min(image.height, bottom + margin))).save(path)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", default=os.path.join(REPO, "target/release/graygate"))
    parser.add_argument("--load-rate", default="80", help="LOAD_RATE, as compose takes it")
    parser.add_argument("--scale", type=float, default=1.0, help="stretch the scenario")
    parser.add_argument("--out", default=os.path.join(REPO, "docs"))
    args = parser.parse_args()

    compose = yaml.safe_load(open(os.path.join(REPO, "docker-compose.yml")))["services"]
    work = tempfile.mkdtemp(prefix="graygate-stack-")
    procs = {}

    def start(name, env_overrides, rewrite):
        env = dict(os.environ, **env_overrides)
        service = compose[name]
        command = [interpolate(a, env) for a in service["command"]]
        rewrite(command)
        child_env = dict(os.environ, RUST_LOG="warn")
        for key, value in (service.get("environment") or {}).items():
            child_env[key] = interpolate(str(value), env)
        log = open(os.path.join(work, f"{name}.log"), "a")
        procs[name] = subprocess.Popen([args.bin] + command, env=child_env, stdout=log, stderr=log)

    def listen_on(port):
        def rewrite(command):
            command[command.index("--listen") + 1] = f"127.0.0.1:{port}"
        return rewrite

    try:
        ports = {name: free_port() for name in ("blue", "green", "canary")}
        for name, port in ports.items():
            start(name, {}, listen_on(port))
            wait_http(f"http://127.0.0.1:{port}/healthz")

        listen, admin = free_port(), free_port()
        config = open(os.path.join(REPO, "deploy/gateway/graygate.toml")).read()
        for name, port in ports.items():
            config = config.replace(f'"{name}:8000"', f'"127.0.0.1:{port}"')
        config = config.replace('listen = "0.0.0.0:8080"', f'listen = "127.0.0.1:{listen}"')
        config = config.replace('admin_listen = "0.0.0.0:9901"', f'admin_listen = "127.0.0.1:{admin}"')
        config = config.replace('"/var/lib/graygate/rollout.state"', '"rollout.state"')
        config_path = os.path.join(work, "graygate.toml")
        open(config_path, "w").write(config)
        log = open(os.path.join(work, "gateway.log"), "a")
        procs["gateway"] = subprocess.Popen([args.bin, "run", "--config", config_path],
                                            stdout=log, stderr=log)
        wait_http(f"http://127.0.0.1:{admin}/readyz")

        def target(command):
            command[command.index("--target") + 1] = f"http://127.0.0.1:{listen}"
        start("load", {"LOAD_RATE": args.load_rate}, target)

        prometheus_port = free_port()
        prometheus_yml = open(os.path.join(REPO, "deploy/prometheus/prometheus.yml")).read()
        open(os.path.join(work, "prometheus.yml"), "w").write(
            prometheus_yml.replace('"gateway:9901"', f'"127.0.0.1:{admin}"'))
        open(os.path.join(work, "alerts.yml"), "w").write(
            open(os.path.join(REPO, "deploy/prometheus/alerts.yml")).read())
        log = open(os.path.join(work, "prometheus.log"), "a")
        procs["prometheus"] = subprocess.Popen(
            ["/usr/bin/prometheus", f"--config.file={work}/prometheus.yml",
             f"--storage.tsdb.path={work}/data", f"--web.listen-address=127.0.0.1:{prometheus_port}"],
            stdout=log, stderr=log)
        prometheus = f"http://127.0.0.1:{prometheus_port}"
        started = time.time()
        print(f"stack up: gateway http://127.0.0.1:{listen}, status page "
              f"http://127.0.0.1:{admin}/admin/ui, Prometheus {prometheus}; files in {work}", flush=True)

        def at(minutes):
            left = started + minutes * 60 * args.scale - time.time()
            if left > 0:
                time.sleep(left)

        at(1.5)
        print("saving a broken config", flush=True)
        broken = config.replace('to = "canary"', 'to = "canery"', 1)
        open(config_path + ".new", "w").write(broken)
        os.rename(config_path + ".new", config_path)
        at(2.0)
        print("saving a fixed one", flush=True)
        fixed = config.replace('max_p99 = "1s"', 'max_p99 = "800ms"')
        open(config_path + ".new", "w").write(fixed)
        os.rename(config_path + ".new", config_path)
        at(3.0)
        print("telling the canary to fail a third of its requests", flush=True)
        procs["canary"].terminate()
        procs["canary"].wait()
        start("canary", {"CANARY_ERROR_RATE": "0.3"}, listen_on(ports["canary"]))
        at(5.0)

        os.makedirs(args.out, exist_ok=True)
        profile = os.path.join(work, "chromium")
        subprocess.run(
            ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
             "--hide-scrollbars", "--window-size=1280,2400", "--virtual-time-budget=4000",
             f"--screenshot={os.path.join(args.out, 'status-page.png')}",
             f"http://127.0.0.1:{admin}/admin/ui"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
        crop_blank_bottom(os.path.join(args.out, "status-page.png"))
        print(f"wrote {os.path.join(args.out, 'status-page.png')}", flush=True)
        subprocess.run(
            [sys.executable, os.path.join(REPO, "scripts/render_dashboard.py"),
             "--prometheus", prometheus, "--dashboard",
             os.path.join(REPO, "deploy/grafana/dashboards/graygate.json"),
             "--start", str(started), "--end", str(time.time()),
             "--out", os.path.join(args.out, "dashboard.png")], check=True)
        with urllib.request.urlopen(f"{prometheus}/api/v1/alerts") as r:
            print("alerts:", r.read().decode()[:2000])
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    main()
