# Sourced by benches/callgrind.sh and benches/metrics_cost.sh: the one-worker setup they
# share, so both measure the same job. Functions only; nothing runs on sourcing.

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
