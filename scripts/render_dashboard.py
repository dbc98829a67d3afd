#!/usr/bin/env python3
"""Draws the Grafana dashboard's panels from a real Prometheus's data, for the README.

Grafana cannot run where the README's figures are made, so this script does what the
dashboard does, by other means: for every panel of
deploy/grafana/dashboards/graygate.json it sends each target's PromQL (with
$__rate_interval replaced as Grafana would) to Prometheus's range-query API and draws
the series with matplotlib, at the panel's place in the dashboard's grid. The picture
is labelled as such: it is not a Grafana screenshot.

    python3 scripts/render_dashboard.py --prometheus http://127.0.0.1:9090 \\
        --start UNIX --end UNIX --out docs/dashboard.png

Needs matplotlib (pip install matplotlib). scripts/render_dashboard.sh runs the
stack natively, makes an incident, and calls this.
"""

import argparse
import json
import math
import urllib.parse
import urllib.request
from datetime import datetime, timezone

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

COLORS = {"blue": "#2f6fdf", "green": "#2f9e44", "canary": "#e8a200"}
PALETTE = ["#ae3ec9", "#d9480f", "#0c8599", "#5c940d", "#c2255c", "#495057"]


def query(prometheus, expr, start, end, step, instant):
    """The series of `expr`, each as [(time, value)]: over the range, or (an instant
    query, as the stat panels ask) at `end` alone."""
    if instant:
        params = urllib.parse.urlencode({"query": expr, "time": end})
        path = "query"
    else:
        params = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
        path = "query_range"
    with urllib.request.urlopen(f"{prometheus}/api/v1/{path}?{params}", timeout=30) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise SystemExit(f"query failed: {expr}: {body}")
    return [(series["metric"], [series["value"]] if instant else series["values"])
            for series in body["data"]["result"]]


def legend(fmt, labels):
    text = fmt
    for key, value in labels.items():
        text = text.replace("{{" + key + "}}", value)
    return text.replace("{{", "").replace("}}", "")


def color_for(name, used):
    for pool, color in COLORS.items():
        if pool in name.split() or name.endswith(pool) or name.startswith(pool):
            return color
    return PALETTE[len(used) % len(PALETTE)]


def unit_format(unit):
    if unit == "percentunit":
        return lambda v, _: f"{v * 100:.0f}%" if abs(v) >= 0.1 or v == 0 else f"{v * 100:.1f}%"
    if unit == "bytes":
        return lambda v, _: f"{v / 2**20:.0f} MiB"
    if unit == "s":
        return lambda v, _: (f"{v * 1000:.1f} ms" if v < 0.1 else
                             f"{v * 1000:.0f} ms" if v < 1 else f"{v:.1f} s")
    if unit == "reqps":
        return lambda v, _: f"{v:g}/s"
    if unit and unit.startswith("suffix:"):
        suffix = unit.split(":", 1)[1]
        return lambda v, _: f"{v:g}{suffix}"
    return lambda v, _: f"{v:g}"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--prometheus", required=True)
    parser.add_argument("--dashboard", default="deploy/grafana/dashboards/graygate.json")
    parser.add_argument("--start", type=float, required=True)
    parser.add_argument("--end", type=float, required=True)
    parser.add_argument("--step", default="5s")
    parser.add_argument("--rate-interval", default="20s",
                        help="what Grafana puts for $__rate_interval (4 scrape intervals)")
    parser.add_argument("--out", default="docs/dashboard.png")
    args = parser.parse_args()

    dashboard = json.load(open(args.dashboard))
    panels = dashboard["panels"]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    fig = plt.figure(figsize=(18, rows * 0.42))
    fig.patch.set_facecolor("#111217")
    span = f"{datetime.fromtimestamp(args.start, timezone.utc):%Y-%m-%d %H:%M} to " \
           f"{datetime.fromtimestamp(args.end, timezone.utc):%H:%M} UTC"
    fig.suptitle(
        f"{dashboard['title']} dashboard: its panels drawn by scripts/render_dashboard.py from "
        f"Prometheus data ({span}), not a Grafana screenshot",
        color="#d8d9da", fontsize=12, y=0.995)
    for panel in panels:
        g = panel["gridPos"]
        # Grid: 24 columns; rows in Grafana units, top to bottom.
        left, width = g["x"] / 24, g["w"] / 24
        bottom = 1 - (g["y"] + g["h"]) / rows
        ax = fig.add_axes([left + 0.035, bottom + 0.02, width - 0.045, g["h"] / rows - 0.045])
        ax.set_facecolor("#181b1f")
        for spine in ax.spines.values():
            spine.set_color("#2c3235")
        ax.tick_params(colors="#9fa7b3", labelsize=7)
        ax.set_title(panel["title"], color="#d8d9da", fontsize=9, loc="left")
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit")
        used = []
        last_values = []
        for target in panel["targets"]:
            expr = target["expr"].replace("$__rate_interval", args.rate_interval)
            instant = bool(target.get("instant"))
            for labels, values in query(args.prometheus, expr, args.start, args.end, args.step,
                                        instant):
                name = legend(target.get("legendFormat", ""), labels) or expr[:30]
                points = [(float(t), float(v)) for t, v in values]
                points = [(t, v) for t, v in points if math.isfinite(v)]
                if not points:
                    continue
                color = color_for(name, used)
                used.append(name)
                last_values.append((name, points[-1][1], color))
                if panel["type"] == "stat":
                    continue
                times = [datetime.fromtimestamp(t, timezone.utc) for t, _ in points]
                ax.plot(times, [v for _, v in points], color=color, linewidth=1.4, label=name,
                        drawstyle="steps-post" if "Rollout weight" in panel["title"] else "default")
        if panel["type"] == "stat":
            ax.set_xticks([])
            ax.set_yticks([])
            text_mode = panel.get("options", {}).get("textMode", "value_and_name")
            fmt = unit_format(unit)
            lines = []
            for name, value, color in last_values:
                if text_mode == "name":
                    lines.append((name, color))
                elif text_mode == "value":
                    lines.append((fmt(value, None), color))
                else:
                    lines.append((f"{name}: {fmt(value, None)}", color))
            for i, (text, color) in enumerate(lines[:4]):
                ax.text(0.5, 0.62 - i * 0.24 if len(lines) > 1 else 0.45, text, color=color,
                        ha="center", va="center", fontsize=14 if len(lines) == 1 else 10,
                        fontweight="bold", transform=ax.transAxes)
            continue
        ax.yaxis.set_major_formatter(plt.FuncFormatter(unit_format(unit)))
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))
        ax.grid(color="#2c3235", linewidth=0.6)
        if used:
            ax.legend(fontsize=6.5, loc="upper left", facecolor="#181b1f", edgecolor="#2c3235",
                      labelcolor="#d8d9da", ncol=min(3, len(used)))
    fig.savefig(args.out, dpi=80, facecolor=fig.get_facecolor())
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
