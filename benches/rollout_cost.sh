#!/usr/bin/env bash
# What a rollout costs on the request path (cohort marking in the chain, recording in
# the record phase), as proxy CPU per request:
#   N  the load benchmark's three-rule job, no rollout
#   R  the same job with a [rollout] driving its 50 per-mille rule at 50 per mille
# One worker, pinned to core 0; wrk and the nginx origin on core 1. Runs interleave
# (N R N R ...) and the medians are compared, so the machine's noise hits both.
#
#   cargo build --release
#   bash benches/rollout_cost.sh [repetitions] [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
reps=${1:-5}
secs=${2:-8}
bin=${GRAYGATE:-target/release/graygate}
[ -x "$bin" ] || { echo "missing $bin: cargo build --release" >&2; exit 1; }
. benches/job.sh
cost_setup   # $work, the nginx origin on core 1, staff.txt and ids.lua
graygate_conf 18181 18182 19181 19182 "" > "$work/plain.toml"
graygate_conf 18181 18182 19181 19182 "$(rollout_toml)" > "$work/rollout.toml"
"$bin" check --config "$work/rollout.toml" >&2

declare -A cpu rps
for rep in $(seq "$reps"); do
  for variant in N R; do
    config=$work/plain.toml
    [ "$variant" = R ] && config=$work/rollout.toml
    read -r c r < <(cpu_run "$work" "$secs" "$bin" "$config")
    cpu[$variant]+="$c "
    rps[$variant]+="$r "
  done
  echo "repetition $rep: N ${cpu[N]}| R ${cpu[R]}" >&2
done
# The rollout's cohorts saw the traffic: the recording was on the path measured.
grep -q . "$work/rollout.state" || { echo "no rollout state written" >&2; exit 1; }
n=$(echo "${cpu[N]}" | median); r=$(echo "${cpu[R]}" | median)
echo
echo "| variant | proxy CPU µs/request (median of $reps) | ratio |"
echo "| --- | ---: | ---: |"
awk -v n="$n" -v r="$r" 'BEGIN {
  printf "| N: no rollout | %.2f | 1.000 |\n", n
  printf "| R: rollout active (cohorts marked and recorded) | %.2f | %.3f |\n", r, r / n
}'
echo
echo "$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%F)"
