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
. benches/job.sh
cost_setup   # $work, the nginx origin on core 1, staff.txt and ids.lua
config() { graygate_conf 18181 18182 19181 19182 "$1"; }
config "" > "$work/plain.toml"
config "[log]
access = \"access.log\"" > "$work/logged.toml"

run() { cpu_run "$work" "$secs" "$@"; }

declare -A cpu
for rep in $(seq "$reps"); do
  cpu[A]+="$(run "$with_metrics" "$work/plain.toml" | cut -d' ' -f1) "
  cpu[B]+="$(run "$without_metrics" "$work/plain.toml" | cut -d' ' -f1) "
  cpu[C]+="$(run "$with_metrics" "$work/logged.toml" | cut -d' ' -f1) "
  echo "repetition $rep: A ${cpu[A]}| B ${cpu[B]}| C ${cpu[C]}" >&2
done
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
