# Sourced by benches/callgrind.sh, benches/metrics_cost.sh and benches/feature_cost.sh:
# the one-worker setup they share, so all measure the same job. Functions only; nothing
# runs on sourcing.

# origin_conf WORKDIR BLUE_PORT CANARY_PORT: an nginx origin on 127.0.0.1 whose two
# servers answer `blue` and `canary` (nginx -c FILE -p WORKDIR).
origin_conf() {
  local work=$1 blue=$2 canary=$3
  mkdir -p "$work/tmp"
  cat <<CONF
worker_processes 1;
daemon off;
pid $work/origin.pid;
error_log $work/origin.err;
events { worker_connections 1024; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path $work/tmp; proxy_temp_path $work/tmp; fastcgi_temp_path $work/tmp;
  uwsgi_temp_path $work/tmp; scgi_temp_path $work/tmp;
  server { listen 127.0.0.1:$blue; location / { return 200 "blue\n"; } }
  server { listen 127.0.0.1:$canary; location / { return 200 "canary\n"; } }
}
CONF
}

# graygate_conf LISTEN_PORT ADMIN_PORT BLUE_PORT CANARY_PORT [EXTRA_TOML]: one worker
# and the load benchmark's three rules (x-canary header, the staff.txt whitelist beside
# the config, 50 per mille on x-user-id).
graygate_conf() {
  local listen=$1 admin=$2 blue=$3 canary=$4 extra=${5:-}
  cat <<TOML
[server]
listen = "127.0.0.1:$listen"
admin_listen = "127.0.0.1:$admin"
workers = 1
[pools.blue]
endpoints = ["127.0.0.1:$blue"]
[pools.canary]
endpoints = ["127.0.0.1:$canary"]
version = "v2"
[routing]
stable = "blue"
user_key = { header = "x-user-id" }
[[rules]]
name = "canary-header"
match = { header = { name = "x-canary", exact = "true" } }
to = "canary"
[[rules]]
name = "staff"
match = { whitelist_file = "staff.txt" }
to = "canary"
[[rules]]
name = "canary-50"
match = { permille = 50 }
to = "canary"
$extra
TOML
}

# The rollout the cost benchmarks add: it drives the job's `canary-50` rule at the
# same 50 per mille (its first step), so the routing is the same and only cohort
# marking and recording are added. No analysis runs while it is measured.
rollout_toml() {
  cat <<TOML
[rollout]
rule = "canary-50"
steps = [50, 100]
interval = "1h"
min_step_duration = "1h"
TOML
}

# The mirror the cost benchmark adds: every request blue serves is copied to a
# `shadow` pool on blue's own origin, and the answers (equal, as a dark launch's mostly
# are) are compared.
mirror_toml() {
  cat <<TOML
[pools.shadow]
endpoints = ["127.0.0.1:19181"]
[[mirror]]
from = "blue"
to = "shadow"
permille = 1000
max_in_flight = 1024
TOML
}

# The wrk script both cost benchmarks send: x-user-id cycling over 1,000 users.
ids_lua() {
  cat <<'LUA'
local i = 0
request = function()
  i = (i % 1000) + 1
  return wrk.format("GET", "/", { ["x-user-id"] = tostring(i) })
end
LUA
}

# cpu_run WORK SECONDS BIN CONFIG -> prints "cpu_us_per_request requests_per_second":
# the gateway pinned to core 0, wrk on core 1, its CPU ticks over one wrk run.
cpu_run() {
  local work=$1 secs=$2 bin=$3 config=$4
  local ticks; ticks=$(getconf CLK_TCK)
  "$bin" --config "$config" >/dev/null 2>"$work/gateway.log" & local gw=$!
  taskset -p -c 0 "$gw" >/dev/null
  for _ in $(seq 50); do curl -s -o /dev/null http://127.0.0.1:18181/ && break; sleep 0.1; done
  taskset -c 1 wrk -t1 -c32 -d1s -s "$work/ids.lua" http://127.0.0.1:18181/ >/dev/null # warm-up
  local before; before=$(awk '{ print $14 + $15 }' "/proc/$gw/stat")
  local out; out=$(taskset -c 1 wrk -t1 -c32 -d"${secs}s" -s "$work/ids.lua" http://127.0.0.1:18181/)
  local after; after=$(awk '{ print $14 + $15 }' "/proc/$gw/stat")
  kill "$gw"; wait "$gw" 2>/dev/null || true
  local requests; requests=$(echo "$out" | awk '/requests in/ { print $1 }')
  local rps; rps=$(echo "$out" | awk '/Requests\/sec/ { print $2 }')
  if echo "$out" | grep -q "Non-2xx\|Socket errors"; then echo "errors in run: $out" >&2; fi
  awk -v t="$((after - before))" -v hz="$ticks" -v n="$requests" -v r="$rps" 'BEGIN { printf "%.2f %.0f\n", t / hz * 1e6 / n, r }'
}

# median: the median of the numbers on stdin.
median() { tr ' ' '\n' | grep . | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# cost_setup: what both cost benchmarks start from. Sets $work (removed on exit) and
# $pids, starts the nginx origin on core 1 (ports 19181 and 19182), and writes
# staff.txt and ids.lua. Needs nginx and wrk.
cost_setup() {
  command -v nginx >/dev/null && command -v wrk >/dev/null || { echo "needs nginx and wrk (apt-get install -y nginx wrk)" >&2; exit 1; }
  work=$(mktemp -d)
  pids=()
  trap 'for p in "${pids[@]:-}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"' EXIT
  origin_conf "$work" 19181 19182 > "$work/origin.conf"
  taskset -c 1 nginx -c "$work/origin.conf" -p "$work" & pids+=($!)
  seq 1000 1009 > "$work/staff.txt"
  ids_lua > "$work/ids.lua"
}
