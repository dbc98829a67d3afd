#!/usr/bin/env bash
# What a feature costs on the request path, as proxy CPU per request:
#   N  the load benchmark's three-rule job, without the feature
#   F  the same job with it:
#        rollout  a [rollout] driving the 50 per-mille rule at 50 per mille, so the
#                 routing is the same and only cohort marking and recording are added
#        mirror   a [[mirror]] copying every request blue serves to the canary origin,
#                 with the answers compared: two upstream requests per client request
# One worker, pinned to core 0; wrk and the nginx origin on core 1. Runs interleave
# (N F N F ...) and the medians are compared, so the machine's noise hits both.
#
#   cargo build --release
#   bash benches/feature_cost.sh rollout|mirror [repetitions] [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
feature=${1:?give the feature: rollout or mirror}
reps=${2:-5}
secs=${3:-8}
bin=${GRAYGATE:-target/release/graygate}
[ -x "$bin" ] || { echo "missing $bin: cargo build --release" >&2; exit 1; }

. benches/job.sh
cost_setup   # $work, the nginx origin on core 1, staff.txt and ids.lua

case "$feature" in
  rollout) extra=$(rollout_toml) ;;
  mirror) extra=$(mirror_toml) ;;
  *) echo "unknown feature $feature: rollout or mirror" >&2; exit 2 ;;
esac
graygate_conf 18181 18182 19181 19182 "" > "$work/plain.toml"
graygate_conf 18181 18182 19181 19182 "$extra" > "$work/feature.toml"
"$bin" check --config "$work/feature.toml" >&2

declare -A cpu
for rep in $(seq "$reps"); do
  for variant in N F; do
    config=$work/plain.toml
    [ "$variant" = F ] && config=$work/feature.toml
    read -r c _ < <(cpu_run "$work" "$secs" "$bin" "$config")
    cpu[$variant]+="$c "
  done
  echo "repetition $rep: N ${cpu[N]}| F ${cpu[F]}" >&2
done
n=$(echo "${cpu[N]}" | median); f=$(echo "${cpu[F]}" | median)
echo
echo "| variant | proxy CPU µs/request (median of $reps) | ratio |"
echo "| --- | ---: | ---: |"
awk -v n="$n" -v f="$f" -v what="$feature" 'BEGIN {
  printf "| N: without | %.2f | 1.000 |\n", n
  printf "| F: with %s | %.2f | %.3f |\n", what, f, f / n
}'
echo
echo "$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%F)"
