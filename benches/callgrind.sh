#!/usr/bin/env bash
# Instructions per proxied request, from callgrind: a figure that holds on a noisy
# machine, where wall-clock CPU does not. One worker, the load benchmark's three-rule
# job, `wrk -t1 -c8` with benches/load/load.lua, an nginx origin on 127.0.0.1.
#
#   bash benches/callgrind.sh                     # builds the `profiling` profile
#   bash benches/callgrind.sh path/to/graygate    # any build (symbols help annotate)
#   SECONDS_OF_LOAD=20 bash benches/callgrind.sh
#   ROLLOUT=1 bash benches/callgrind.sh           # the same job with a rollout active
#
# Prints `requests=N Ir=M Ir/req=K` and leaves callgrind.out in the work directory, for
# `callgrind_annotate --inclusive=yes <file>`. Needs valgrind, wrk, nginx and curl.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
LOAD="${SECONDS_OF_LOAD:-10}"
BIN="${1:-}"
if [[ -z "$BIN" ]]; then
  (cd "$REPO" && cargo build --profile profiling >&2)
  BIN="$REPO/target/profiling/graygate"
fi
for tool in valgrind wrk nginx curl; do
  command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 1; }
done

WORK="$(mktemp -d /tmp/graygate-callgrind-XXXXXX)"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

# Ports on 127.0.0.1 unlikely to clash with the load benchmark's.
GW=18281 ADMIN=18282 BLUE=19281 CANARY=19282
. "$HERE/job.sh"
origin_conf "$WORK" "$BLUE" "$CANARY" > "$WORK/origin.conf"
seq 1000000 1000099 > "$WORK/staff.txt"
EXTRA=""
[[ -n "${ROLLOUT:-}" ]] && EXTRA="$(rollout_toml)"
graygate_conf "$GW" "$ADMIN" "$BLUE" "$CANARY" "$EXTRA" > "$WORK/graygate.toml"

nginx -c "$WORK/origin.conf" -p "$WORK" &
PIDS+=($!)
valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.out" \
  "$BIN" run --config "$WORK/graygate.toml" > "$WORK/valgrind.log" 2>&1 &
VG=$!
PIDS+=($VG)
for _ in $(seq 1 150); do
  curl -s -o /dev/null "http://127.0.0.1:$GW/" && break
  sleep 0.2
done
wrk -t1 -c8 -d"${LOAD}s" -s "$HERE/load/load.lua" "http://127.0.0.1:$GW/" > "$WORK/wrk.txt"
kill -INT "$VG"
wait "$VG" || true
REQ=$(grep -oP '^\s*\K\d+(?= requests in)' "$WORK/wrk.txt")
IR=$(grep -oP 'summary: \K\d+' "$WORK/callgrind.out")
grep -E "Non-2xx|Socket errors" "$WORK/wrk.txt" >&2 || true
echo "requests=$REQ Ir=$IR Ir/req=$((IR / REQ))  (profile: $WORK/callgrind.out)"
