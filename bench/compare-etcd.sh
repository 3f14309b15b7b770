#!/usr/bin/env bash
# Benchmark raftkv against etcd, side by side, in one run.
#
# Starts a 3-member etcd (Debian's etcd-server, installed with apt if missing)
# and a 3-member raftkv on 127.0.0.1, both fsyncing their logs (each system's
# default: neither is started with any unsafe no-fsync switch), then runs the
# same `raftkv bench` workloads against each, etcd then raftkv, workload after
# workload: once with 1 client on 1 connection to the leader (so both systems'
# single client plays the same role; a follower adds a forwarding hop), once at
# high concurrency with connections spread over all members.
# Prints a markdown table of every figure and the raftkv/etcd ratio; stops
# everything it started on exit.
#
#   bench/compare-etcd.sh                  # full run (builds raftkv --release if needed)
#   bench/compare-etcd.sh --smoke          # a few seconds per workload (CI)
#
# Options (or the environment variables in brackets):
#   --raftkv-bin PATH  raftkv binary to benchmark [RAFTKV_BENCH_BIN]; default: build
#                      `cargo build --release` and use target/release/raftkv
#   --seconds N        seconds per workload and system [BENCH_SECONDS] (20; smoke 2)
#   --conns N          connections at high concurrency [BENCH_CONNS] (100; smoke 10)
#   --clients N        clients at high concurrency [BENCH_CLIENTS] (1000; smoke 100)
#   --workloads "..."  subset of: put range range-serializable txn mixed
#   --out DIR          keep logs and results.jsonl here [BENCH_OUT] (default: a temp dir)
#   --smoke            short run; fails if any request failed or a run did nothing
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

smoke=0
seconds="${BENCH_SECONDS:-}"
conns="${BENCH_CONNS:-}"
clients="${BENCH_CLIENTS:-}"
workloads="put range range-serializable txn mixed"
out="${BENCH_OUT:-}"
raftkv_bin="${RAFTKV_BENCH_BIN:-}"
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) smoke=1 ;;
    --seconds) seconds="$2"; shift ;;
    --conns) conns="$2"; shift ;;
    --clients) clients="$2"; shift ;;
    --workloads) workloads="$2"; shift ;;
    --out) out="$2"; shift ;;
    --raftkv-bin) raftkv_bin="$2"; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "compare-etcd: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if [ "$smoke" = 1 ]; then
  seconds="${seconds:-2}"; conns="${conns:-10}"; clients="${clients:-100}"
else
  seconds="${seconds:-20}"; conns="${conns:-100}"; clients="${clients:-1000}"
fi

bench_install_tools
raftkv_bin="$(bench_raftkv_bin "$raftkv_bin")"

if [ -z "$out" ]; then
  out="$(mktemp -d -t raftkv-bench.XXXXXX)"
fi
mkdir -p "$out"
results="$out/results.jsonl"
: >"$results"
trap 'bench_stop_all' EXIT
trap 'exit 130' INT TERM

bench_start_etcd "$out/etcd" 31000
bench_start_raftkv "$raftkv_bin" "$out/raftkv" 32000
etcd_endpoints="$ETCD_ENDPOINTS"
raftkv_endpoints="$RAFTKV_ENDPOINTS"
bench_wait_ready "$raftkv_bin" "$etcd_endpoints"
bench_wait_ready "$raftkv_bin" "$raftkv_endpoints"

{
  echo "date:    $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(free -g | awk '/Mem:/ {print $2}') GiB RAM"
  echo "disk:    $(df -h "$out" | awk 'NR==2 {print $1" ("$2")"}') for both data dirs"
  echo "etcd:    $(etcd --version | head -1)"
  echo "raftkv:  $("$raftkv_bin" --version) ($raftkv_bin)"
  echo "load:    $(uptime | sed 's/.*load average/load average/')"
  echo "runs:    ${seconds}s each; 1 conn x 1 client to the leader, and ${conns} conns x ${clients} clients"
} | tee "$out/machine.txt" >&2

failed=0
for workload in $workloads; do
  case "$workload" in
    range-serializable) args=(range --serializable) ;;
    put|range|txn|mixed) args=("$workload") ;;
    *) echo "compare-etcd: unknown workload $workload" >&2; exit 2 ;;
  esac
  for level in "1 1" "$conns $clients"; do
    set -- $level
    target=all
    [ "$1" = 1 ] && [ "$2" = 1 ] && target=leader
    for system in etcd raftkv; do
      if [ "$system" = etcd ]; then
        endpoints="$etcd_endpoints"; pids=("${ETCD_PIDS[@]}")
      else
        endpoints="$raftkv_endpoints"; pids=("${RAFTKV_PIDS[@]}")
      fi
      fsyncs_before="$(bench_raftkv_fsyncs)"
      cpu_before="$(bench_cpu_ticks "${pids[@]}")"
      echo "== $system: ${args[*]} at $1 conns x $2 clients ($(uptime | sed 's/.*load average: //'))" >&2
      # bash's `time` gives the client's own CPU (user and system seconds).
      TIMEFORMAT='%U %S'
      { time "$raftkv_bin" bench "${args[@]}" --endpoints "$endpoints" \
          --conns "$1" --clients "$2" --target "$target" --duration "$seconds" --key-space 10000 --json \
          >"$out/run.json" 2>"$out/run.err"; } 2>"$out/run.time" || {
        cat "$out/run.err" >&2
        echo "compare-etcd: the $system ${args[*]} run failed" >&2; failed=1; continue; }
      line="$(cat "$out/run.json")"
      server_cpu="$(awk -v t="$(( $(bench_cpu_ticks "${pids[@]}") - cpu_before ))" -v hz="$(getconf CLK_TCK)" 'BEGIN {print t / hz}')"
      client_cpu="$(awk '{print $1 + $2}' "$out/run.time")"
      fsyncs=null
      if [ "$system" = raftkv ]; then
        fsyncs=$(( $(bench_raftkv_fsyncs) - fsyncs_before ))
      fi
      echo "$line" | jq -c --arg system "$system" --arg name "$workload" \
        --argjson fsyncs "$fsyncs" --argjson server_cpu "$server_cpu" --argjson client_cpu "$client_cpu" \
        '. + {system: $system, name: $name, fsyncs: $fsyncs, server_cpu_s: $server_cpu, client_cpu_s: $client_cpu}' >>"$results"
      if [ "$(echo "$line" | jq '.errors > 0 or .requests == 0')" = true ]; then
        echo "compare-etcd: $system ${args[*]}: $(echo "$line" | jq -c '{requests, errors, error_samples}')" >&2
        failed=1
      fi
    done
  done
done

bench_table "$results" | tee "$out/table.md"
echo "results: $out" >&2
if [ "$smoke" = 1 ] && [ "$failed" = 1 ]; then
  echo "compare-etcd: smoke run failed (see above)" >&2
  exit 1
fi
