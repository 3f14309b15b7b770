# Helpers for bench/compare-etcd.sh and bench/failover.sh: install the tools, start and stop the two
# 3-member clusters on 127.0.0.1, read raftkv's fsync counters, print the table.
# Sourced, not run.

BENCH_PIDS=()
ETCD_PIDS=()
RAFTKV_PIDS=()
ETCD_ENDPOINTS=""
RAFTKV_ENDPOINTS=""
RAFTKV_METRICS_PORTS=()

_bench_sudo() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# etcd (the server under comparison) and jq (to read `raftkv bench --json`).
bench_install_tools() {
  local missing=()
  command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
  command -v jq >/dev/null 2>&1 || missing+=(jq)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "compare-etcd: installing ${missing[*]}" >&2
    _bench_sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive _bench_sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# The raftkv binary to benchmark: the one given, or an optimized build (a
# comparison against an unoptimized raftkv would say nothing).
bench_raftkv_bin() {
  local given="$1"
  if [ -n "$given" ]; then
    [ -x "$given" ] || { echo "compare-etcd: $given is not an executable" >&2; return 1; }
    echo "$given"
    return
  fi
  source .ci/setup >&2
  echo "compare-etcd: building raftkv --release (the first build compiles RocksDB: ~30 min)" >&2
  cargo build --release --locked -p raftkv-node --bin raftkv >&2
  echo "$CARGO_TARGET_DIR/release/raftkv"
}

# Start etcd member I (1..3) of the cluster under DIR, ports BASE+10*I
# (client) and +1 (peer); again after a stop, on the same data. Sets
# BENCH_LAST_PID. etcd fsyncs its WAL on every commit by default.
bench_start_etcd_member() {
  local dir="$1" base="$2" i="$3" cluster="" j
  for j in 1 2 3; do
    cluster+="${cluster:+,}e$j=http://127.0.0.1:$((base + 10 * j + 1))"
  done
  local client="http://127.0.0.1:$((base + 10 * i))" peer="http://127.0.0.1:$((base + 10 * i + 1))"
  local state=new
  [ -d "$dir/e$i/data" ] && state=existing
  mkdir -p "$dir/e$i"
  etcd --name "e$i" --data-dir "$dir/e$i/data" \
    --listen-client-urls "$client" --advertise-client-urls "$client" \
    --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
    --initial-cluster "$cluster" --initial-cluster-token raftkv-bench \
    --initial-cluster-state "$state" >>"$dir/e$i/log" 2>&1 &
  BENCH_LAST_PID=$!
  BENCH_PIDS+=($!)
}

# Start 3 etcd members under DIR (see bench_start_etcd_member). Sets
# ETCD_ENDPOINTS and ETCD_PIDS.
bench_start_etcd() {
  local dir="$1" base="$2" i
  for i in 1 2 3; do
    bench_start_etcd_member "$dir" "$base" "$i"
    ETCD_PIDS+=("$BENCH_LAST_PID")
    ETCD_ENDPOINTS+="${ETCD_ENDPOINTS:+,}127.0.0.1:$((base + 10 * i))"
  done
}

# Start raftkv member I (1..3) of the cluster under DIR, ports BASE+10*I
# (client), +1 (peer), +2 (metrics); again after a stop, on the same data.
# Extra arguments go to `raftkv serve`. Sets BENCH_LAST_PID. raftkv always
# fsyncs its log.
bench_start_raftkv_member() {
  local bin="$1" dir="$2" base="$3" i="$4" cluster="" j
  shift 4
  for j in 1 2 3; do
    cluster+="${cluster:+,}$j=http://127.0.0.1:$((base + 10 * j + 1))"
  done
  mkdir -p "$dir/r$i"
  "$bin" serve --name "r$i" --id "$i" --data-dir "$dir/r$i/data" \
    --listen-client-urls "http://127.0.0.1:$((base + 10 * i))" \
    --listen-peer-urls "http://127.0.0.1:$((base + 10 * i + 1))" \
    --listen-metrics-urls "http://127.0.0.1:$((base + 10 * i + 2))" \
    --initial-cluster "$cluster" --initial-cluster-token raftkv-bench "$@" >>"$dir/r$i/log" 2>&1 &
  BENCH_LAST_PID=$!
  BENCH_PIDS+=($!)
}

# Start 3 raftkv members under DIR (see bench_start_raftkv_member; extra
# arguments go to each). Sets RAFTKV_ENDPOINTS, RAFTKV_PIDS and
# RAFTKV_METRICS_PORTS.
bench_start_raftkv() {
  local bin="$1" dir="$2" base="$3" i
  shift 3
  for i in 1 2 3; do
    bench_start_raftkv_member "$bin" "$dir" "$base" "$i" "$@"
    RAFTKV_PIDS+=("$BENCH_LAST_PID")
    RAFTKV_ENDPOINTS+="${RAFTKV_ENDPOINTS:+,}127.0.0.1:$((base + 10 * i))"
    RAFTKV_METRICS_PORTS+=($((base + 10 * i + 2)))
  done
}

# Wait until a write through every endpoint succeeds (a leader is elected and
# every member serves).
bench_wait_ready() {
  local bin="$1" endpoints="$2" ep deadline=$((SECONDS + 60))
  for ep in ${endpoints//,/ }; do
    until "$bin" put bench-ready x --endpoints "$ep" >/dev/null 2>&1; do
      if [ $SECONDS -ge $deadline ]; then
        echo "compare-etcd: $ep is not ready after 60 s; logs under the output directory" >&2
        return 1
      fi
      sleep 0.2
    done
  done
}

# Log fsyncs so far, summed over the raftkv members (from /metrics).
bench_raftkv_fsyncs() {
  local port total=0 value
  for port in "${RAFTKV_METRICS_PORTS[@]}"; do
    value="$(exec 3<>"/dev/tcp/127.0.0.1/$port" &&
      printf 'GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3 &&
      awk '$1 == "raftkv_log_fsyncs_total" {print $2}' <&3)" || value=0
    total=$((total + ${value:-0}))
  done
  echo "$total"
}

# CPU time (user + system, in clock ticks) the given processes used so far.
bench_cpu_ticks() {
  local pid total=0 ticks
  for pid in "$@"; do
    ticks="$(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null)" || ticks=0
    total=$((total + ${ticks:-0}))
  done
  echo "$total"
}

# Stop every process started, and wait until each is gone (polled, not
# `wait`ed: bench/failover.sh disowns its members), so their ports are free;
# SIGKILL for any still there after 10 s.
bench_stop_all() {
  local pid deadline=$((SECONDS + 10))
  for pid in "${BENCH_PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${BENCH_PIDS[@]}"; do
    while kill -0 "$pid" 2>/dev/null; do
      if [ $SECONDS -ge $deadline ]; then kill -9 "$pid" 2>/dev/null || true; fi
      sleep 0.05
    done
    wait "$pid" 2>/dev/null || true
  done
  BENCH_PIDS=()
}

# The markdown table of RESULTS (one `raftkv bench --json` line per run, plus
# system, name and fsyncs): an etcd row, a raftkv row and their ratio per run.
bench_table() {
  jq -s -r '
    def n: (. * 100 | round) / 100;
    def ratio(a; b): if b == 0 then "-" else "\((a / b) | n)x" end;
    def per_req(x): if x == null then "" else (x * 1000000 / ([.requests, 1] | max) | round | tostring) end;
    def row: "| \(.name) | \(.conns) x \(.clients) | \(.system) | \(.throughput | round) | \(.latency_ms.avg | n) | \(.latency_ms.p50 | n) | \(.latency_ms.p90 | n) | \(.latency_ms.p99 | n) | \(.latency_ms.max | n) | \(.errors) | \(.elections // "-") | \(per_req(.server_cpu_s)) | \(per_req(.client_cpu_s)) | \(if .fsyncs == null then "" else (.fsyncs / ([.requests, 1] | max) | n | tostring) end) |";
    . as $all
    | "| workload | conns x clients | system | req/s | avg ms | p50 ms | p90 ms | p99 ms | max ms | errors | elections | server CPU us/req | client CPU us/req | log fsyncs/req (3 members) |",
      "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
      ( $all | map([.name, .conns, .clients])
        | reduce .[] as $k ([]; if any(.[]; . == $k) then . else . + [$k] end)
        | .[] as $k
        | ($all | map(select([.name, .conns, .clients] == $k))) as $g
        | ($g | map(select(.system == "etcd")) | first) as $e
        | ($g | map(select(.system == "raftkv")) | first) as $r
        | ($g[] | row),
          (if $e != null and $r != null then
            "| | | **raftkv/etcd** | **\(ratio($r.throughput; $e.throughput))** | \(ratio($r.latency_ms.avg; $e.latency_ms.avg)) | \(ratio($r.latency_ms.p50; $e.latency_ms.p50)) | \(ratio($r.latency_ms.p90; $e.latency_ms.p90)) | **\(ratio($r.latency_ms.p99; $e.latency_ms.p99))** | \(ratio($r.latency_ms.max; $e.latency_ms.max)) | | | \(if $e.server_cpu_s == null or $r.server_cpu_s == null then "" else ratio($r.server_cpu_s / $r.requests; $e.server_cpu_s / $e.requests) end) | | |"
           else empty end) )
  ' "$1"
}
