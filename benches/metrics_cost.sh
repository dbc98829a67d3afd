#!/usr/bin/env bash
# What metrics and the access log cost on the request path, as proxy CPU per request:
#   A  metrics on (the normal build), access log off
#   B  the same code with recording compiled out (--features bench-no-metrics)
#   C  metrics on and the access log writing to a file
# One worker, pinned to core 0; wrk and the nginx origin on core 1. Runs interleave
# (A B C A B C ...) and the medians are compared, so the machine's noise hits all three.
#
#   cargo build --release
#   CARGO_TARGET_DIR=target/nometrics cargo build --release --features bench-no-metrics
#   bash benches/metrics_cost.sh [repetitions] [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
reps=${1:-3}
secs=${2:-8}
with_metrics=${WITH_METRICS:-target/release/graygate}
without_metrics=${WITHOUT_METRICS:-target/nometrics/release/graygate}
for bin in "$with_metrics" "$without_metrics"; do
  [ -x "$bin" ] || { echo "missing $bin: build it first (see the header of this script)" >&2; exit 1; }
done
command -v nginx >/dev/null && command -v wrk >/dev/null || { echo "needs nginx and wrk (apt-get install -y nginx wrk)" >&2; exit 1; }

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]:-}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

. benches/job.sh
origin_conf "$work" 19181 19182 > "$work/origin.conf"
taskset -c 1 nginx -c "$work/origin.conf" -p "$work" & pids+=($!)

seq 1000 1009 > "$work/staff.txt"
config() { graygate_conf 18181 18182 19181 19182 "$1"; }
config "" > "$work/plain.toml"
config "[log]
access = \"access.log\"" > "$work/logged.toml"

cat > "$work/ids.lua" <<'LUA'
local i = 0
request = function()
  i = (i % 1000) + 1
  return wrk.format("GET", "/", { ["x-user-id"] = tostring(i) })
end
LUA

ticks=$(getconf CLK_TCK)
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# run BIN CONFIG -> prints "cpu_us_per_request requests_per_second"
run() {
  "$1" --config "$2" >/dev/null 2>"$work/gateway.log" & local gw=$!
  taskset -p -c 0 "$gw" >/dev/null
  for _ in $(seq 50); do curl -s -o /dev/null http://127.0.0.1:18181/ && break; sleep 0.1; done
  taskset -c 1 wrk -t1 -c32 -d1s -s "$work/ids.lua" http://127.0.0.1:18181/ >/dev/null # warm-up
  local before; before=$(cpu_ticks "$gw")
  local out; out=$(taskset -c 1 wrk -t1 -c32 -d"${secs}s" -s "$work/ids.lua" http://127.0.0.1:18181/)
  local after; after=$(cpu_ticks "$gw")
  kill "$gw"; wait "$gw" 2>/dev/null || true
  local requests; requests=$(echo "$out" | awk '/requests in/ { print $1 }')
  local rps; rps=$(echo "$out" | awk '/Requests\/sec/ { print $2 }')
  if echo "$out" | grep -q "Non-2xx\|Socket errors"; then echo "errors in run: $out" >&2; fi
  awk -v t="$((after - before))" -v hz="$ticks" -v n="$requests" -v r="$rps" 'BEGIN { printf "%.2f %.0f\n", t / hz * 1e6 / n, r }'
}

declare -A cpu
for rep in $(seq "$reps"); do
  cpu[A]+="$(run "$with_metrics" "$work/plain.toml" | cut -d' ' -f1) "
  cpu[B]+="$(run "$without_metrics" "$work/plain.toml" | cut -d' ' -f1) "
  cpu[C]+="$(run "$with_metrics" "$work/logged.toml" | cut -d' ' -f1) "
  echo "repetition $rep: A ${cpu[A]}| B ${cpu[B]}| C ${cpu[C]}" >&2
done
median() { tr ' ' '\n' | grep . | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
a=$(echo "${cpu[A]}" | median); b=$(echo "${cpu[B]}" | median); c=$(echo "${cpu[C]}" | median)
echo
echo "| variant | proxy CPU µs/request (median of $reps) | vs recording compiled out |"
echo "| --- | ---: | ---: |"
awk -v a="$a" -v b="$b" -v c="$c" 'BEGIN {
  printf "| B: recording compiled out | %.2f | 1.000 |\n", b
  printf "| A: metrics on | %.2f | %.3f |\n", a, a / b
  printf "| C: metrics on + access log to a file | %.2f | %.3f |\n", c, c / b
}'
echo
echo "$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%F)"
