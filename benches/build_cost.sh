#!/usr/bin/env bash
# Two builds side by side: proxy CPU per request of build A and build B on the load
# benchmark's three-rule job (see feature_cost.sh for the setup: one worker pinned to
# core 0, wrk and the nginx origin on core 1). Runs interleave (A B A B ...) and the
# medians are compared, so the machine's noise hits both.
#
#   git worktree add /tmp/before <rev> && (cd /tmp/before && cargo build --release)
#   cargo build --release
#   bash benches/build_cost.sh /tmp/before/target/release/graygate target/release/graygate [repetitions] [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
a=${1:?give build A}
b=${2:?give build B}
reps=${3:-5}
secs=${4:-8}
for bin in "$a" "$b"; do [ -x "$bin" ] || { echo "missing $bin" >&2; exit 1; }; done

. benches/job.sh
cost_setup
graygate_conf 18181 18182 19181 19182 "" > "$work/plain.toml"

declare -A cpu
for rep in $(seq "$reps"); do
  for variant in A B; do
    bin=$a
    [ "$variant" = B ] && bin=$b
    read -r c _ < <(cpu_run "$work" "$secs" "$bin" "$work/plain.toml")
    cpu[$variant]+="$c "
  done
  echo "repetition $rep: A ${cpu[A]}| B ${cpu[B]}" >&2
done
ma=$(echo "${cpu[A]}" | median); mb=$(echo "${cpu[B]}" | median)
echo
echo "| build | proxy CPU µs/request (median of $reps) | ratio |"
echo "| --- | ---: | ---: |"
awk -v a="$ma" -v b="$mb" -v an="$a" -v bn="$b" 'BEGIN {
  printf "| A: %s | %.2f | 1.000 |\n", an, a
  printf "| B: %s | %.2f | %.3f |\n", bn, b, b / a
}'
echo
echo "$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%F)"
