#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 60) over its committed corpus, as CI
# does, and prints each target's executions, coverage and corpus. Exits non-zero at
# the first crash (its input lands in fuzz/artifacts/<target>/).
#
#   bash fuzz/run.sh          # 60 s each
#   bash fuzz/run.sh 1800     # the 30-minute runs reported in fuzz/README.md
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`). libFuzzer's instrumentation
# takes `-Z` flags: a nightly toolchain is used when rustup has one, else stable with
# RUSTC_BOOTSTRAP=1.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SECONDS_EACH="${1:-60}"
TARGETS=(request_parse response_head chunked_decoder config_compile)

toolchain=()
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  toolchain=(+nightly)
else
  export RUSTC_BOOTSTRAP=1
fi

cargo "${toolchain[@]}" fuzz build
for target in "${TARGETS[@]}"; do
  # New inputs go to a scratch directory: the committed corpus is only read.
  scratch="$(mktemp -d)"
  log="$(mktemp)"
  status=0
  cargo "${toolchain[@]}" fuzz run "$target" "$scratch" "fuzz/corpus/$target" -- \
    -max_total_time="$SECONDS_EACH" -print_final_stats=1 >"$log" 2>&1 || status=$?
  done_line="$(grep -E '^#[0-9]+ +DONE' "$log" | tail -1 || true)"
  runs="$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}' || true)"
  echo "$target: ${runs:-?} runs; ${done_line:-no final stats}"
  if [[ $status -ne 0 ]]; then
    tail -40 "$log" >&2
    echo "$target: crashed (exit $status)" >&2
    exit "$status"
  fi
  rm -rf "$scratch" "$log"
done
