#!/usr/bin/env bash
# graygate side-by-side load benchmark: graygate vs nginx vs HAProxy doing the same
# gray-release routing job in front of one nginx origin, on 127.0.0.1 only.
#
#   bash benches/load/run.sh                    # full run (3 interleaved repetitions, 10 s runs)
#   bash benches/load/run.sh --quick            # smoke test (1 repetition, 5 s runs)
#   bash benches/load/run.sh --quick --sections post --layouts 1w   # one section, a few minutes
#   bash benches/load/run.sh --help             # every option (passed on to bench.py)
#
# Run as root on Debian. It installs what is missing (nginx, haproxy, wrk, h2load from
# nghttp2-client, openssl, strace from apt; oha from crates.io), builds graygate in release mode, stops the nginx/haproxy services
# the packages may have started, then runs bench.py, which prints the markdown report
# on stdout (progress on stderr). See benches/load/README.md.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
CMDLINE="bash ${BASH_SOURCE[0]}${*:+ $*}"
export PATH="$HOME/.cargo/bin:$PATH"

for arg in "$@"; do
  case "$arg" in
    -h|--help) exec python3 "$HERE/bench.py" --graygate /dev/null --help ;;
  esac
done

say() { echo "[run.sh] $*" >&2; }

if [[ $(id -u) -ne 0 ]]; then
  say "warning: not root; apt-get and service control will probably fail"
fi

# 1. tools -------------------------------------------------------------------------
# tool -> the Debian package that has it
declare -A package=([nginx]=nginx [haproxy]=haproxy [wrk]=wrk [h2load]=nghttp2-client [openssl]=openssl
  [strace]=strace [python3]=python3 [taskset]=util-linux)
missing=()
for tool in "${!package[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("${package[$tool]}")
done
if ((${#missing[@]})); then
  say "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y "${missing[@]}"
fi
if ! command -v cargo >/dev/null 2>&1; then
  say "cargo not found: install a Rust toolchain (rustup) first"
  exit 1
fi
if ! command -v oha >/dev/null 2>&1; then
  say "installing oha (cargo install oha --locked)"
  cargo install oha --locked
fi

# 2. the packages' own services: stop them, so only the benchmark's processes run.
# Only the daemons the packages started are stopped (their service scripts, then the
# pids in their own pid files); other nginx/haproxy processes on the machine are left
# alone (no pkill by name).
for svc in nginx haproxy; do
  if command -v service >/dev/null 2>&1; then
    service "$svc" stop >/dev/null 2>&1 || true
  fi
done
for pidfile in /run/nginx.pid /var/run/nginx.pid /run/haproxy.pid /var/run/haproxy.pid; do
  if [[ -s "$pidfile" ]]; then
    pid="$(head -n1 "$pidfile" | tr -dc 0-9)"
    if [[ -n "$pid" ]] && comm="$(cat "/proc/$pid/comm" 2>/dev/null)" && [[ "$comm" == nginx || "$comm" == haproxy ]]; then
      say "stopping system $comm (pid $pid from $pidfile)"
      kill -TERM "$pid" 2>/dev/null || true
    fi
  fi
done

# 3. graygate ------------------------------------------------------------------------
say "building graygate (cargo build --release)"
(cd "$REPO" && cargo build --release)
GG="$REPO/target/release/graygate"

# 4. limits and the run ----------------------------------------------------------------
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

WORK="$(mktemp -d /tmp/graygate-load-XXXXXX)"
BENCH_PID=""
cleanup() {
  # bench.py kills what it started; this is the backstop if it was killed hard.
  if [[ -n "$BENCH_PID" ]] && kill -0 "$BENCH_PID" 2>/dev/null; then
    kill -TERM "$BENCH_PID" 2>/dev/null || true
    for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$BENCH_PID" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$BENCH_PID" 2>/dev/null || true
  fi
  if [[ -s "$WORK/pgids" ]]; then
    while read -r pg; do
      [[ -n "$pg" ]] && kill -KILL -- "-$pg" 2>/dev/null || true
    done <"$WORK/pgids"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

say "workdir: $WORK"
python3 "$HERE/bench.py" --graygate "$GG" --workdir "$WORK" --cmdline "$CMDLINE" \
  --report "$WORK/report.md" "$@" &
BENCH_PID=$!
wait "$BENCH_PID"
