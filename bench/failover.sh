#!/usr/bin/env bash
# Fail over raftkv and etcd, side by side, in one run, and time each failover.
#
# Starts a 3-member etcd and a 3-member raftkv on 127.0.0.1 (as
# bench/compare-etcd.sh does), then, trial after trial, alternating the two
# systems: `raftkv bench-failover` stops the leader (kill -9, or SIGTERM with
# --signal term) and times, from the signal, when a survivor reports a higher
# term, when it names a new leader, and when a put through a survivor is first
# acknowledged; the stopped member is restarted on its data and the cluster
# is left to settle before the next trial. Prints min / median / max per
# system and keeps every trial's JSON line.
#
#   bench/failover.sh                        # 20 kill -9 trials per system
#   bench/failover.sh --signal term          # planned restarts
#   bench/failover.sh --trials 3 --raftkv-bin target/debug/raftkv
#
# Options (or the environment variables in brackets):
#   --trials N         trials per system [FAILOVER_TRIALS] (20)
#   --signal S         kill (a crash) or term (a planned restart) (kill)
#   --raftkv-bin PATH  raftkv binary [RAFTKV_BENCH_BIN]; default: build --release
#   --settle SECONDS   wait after a restarted member is ready (2)
#   --out DIR          keep logs and trials.jsonl here [BENCH_OUT] (default: a temp dir)
#   --raftkv-args ".." extra `raftkv serve` arguments (e.g. timing flags)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

trials="${FAILOVER_TRIALS:-20}"
signal=kill
settle=2
out="${BENCH_OUT:-}"
raftkv_bin="${RAFTKV_BENCH_BIN:-}"
raftkv_args=""
while [ $# -gt 0 ]; do
  case "$1" in
    --trials) trials="$2"; shift ;;
    --signal) signal="$2"; shift ;;
    --settle) settle="$2"; shift ;;
    --out) out="$2"; shift ;;
    --raftkv-bin) raftkv_bin="$2"; shift ;;
    --raftkv-args) raftkv_args="$2"; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "failover: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
case "$signal" in kill|term) ;; *) echo "failover: --signal is kill or term" >&2; exit 2 ;; esac

bench_install_tools
raftkv_bin="$(bench_raftkv_bin "$raftkv_bin")"
if [ -z "$out" ]; then
  out="$(mktemp -d -t raftkv-failover.XXXXXX)"
fi
mkdir -p "$out"
results="$out/trials.jsonl"
: >"$results"
trap 'bench_stop_all' EXIT
trap 'exit 130' INT TERM

# Below the kernel's ephemeral range (32768-60999 by default): a port in it
# can be taken by any outgoing connection a moment before a member binds it
# (a CI run failed so: "cannot listen for clients on 127.0.0.1:34010").
etcd_base=27000
raftkv_base=28000
bench_start_etcd "$out/etcd" "$etcd_base"
# shellcheck disable=SC2086 # the extra arguments are meant to split
bench_start_raftkv "$raftkv_bin" "$out/raftkv" "$raftkv_base" $raftkv_args
for pid in "${ETCD_PIDS[@]}" "${RAFTKV_PIDS[@]}"; do disown "$pid"; done
bench_wait_ready "$raftkv_bin" "$ETCD_ENDPOINTS"
bench_wait_ready "$raftkv_bin" "$RAFTKV_ENDPOINTS"
{
  echo "date:    $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
  echo "etcd:    $(etcd --version | head -1) (election timeout 1000 ms, heartbeat 100 ms: its defaults)"
  echo "raftkv:  $("$raftkv_bin" --version) ($raftkv_bin) ${raftkv_args:-(defaults)}"
  echo "trials:  $trials per system, signal $signal"
} | tee "$out/machine.txt" >&2

# One trial of SYSTEM; restarts the member it stopped.
trial() {
  local system="$1" line stopped attempt
  local -n pids="${system^^}_PIDS"
  local endpoints_var="${system^^}_ENDPOINTS"
  for attempt in 1 2 3 4 5 6 7 8 9 10; do
    if line="$("$raftkv_bin" bench-failover --endpoints "${!endpoints_var}" \
        --pids "$(IFS=,; echo "${pids[*]}")" --signal "$signal" 2>"$out/trial.err")"; then
      break
    fi
    line=""
    # Retry only a trial that stopped nothing (the members did not agree on
    # a leader yet); one that failed after its signal is a finding.
    grep -q "nothing was stopped" "$out/trial.err" || break
    sleep 1
  done
  if [ -z "$line" ]; then
    cat "$out/trial.err" >&2
    echo "failover: a $system trial failed" >&2
    return 1
  fi
  echo "$line" | jq -c --arg system "$system" '. + {system: $system}' | tee -a "$results" >&2
  stopped="$(echo "$line" | jq .stopped)"
  while kill -0 "${pids[$stopped]}" 2>/dev/null; do sleep 0.05; done
  if [ "$system" = etcd ]; then
    bench_start_etcd_member "$out/etcd" "$etcd_base" "$((stopped + 1))"
  else
    # shellcheck disable=SC2086
    bench_start_raftkv_member "$raftkv_bin" "$out/raftkv" "$raftkv_base" "$((stopped + 1))" $raftkv_args
  fi
  pids[stopped]="$BENCH_LAST_PID"
  disown "$BENCH_LAST_PID"  # its death by the next trial's signal is expected: no "Killed" line
  bench_wait_ready "$raftkv_bin" "${!endpoints_var}"
  sleep "$settle"
}

for n in $(seq 1 "$trials"); do
  echo "== trial $n of $trials" >&2
  trial etcd
  trial raftkv
done

jq -s -r '
  def n: (. * 10 | round) / 10;
  def med: sort | if length == 0 then null elif length % 2 == 1 then .[length / 2 | floor]
                  else (.[length / 2 - 1] + .[length / 2]) / 2 end;
  def cell: if . == null then "-" else (n | tostring) end;
  "| system | trials | write acked: min | median | max (ms) | term bumped: median (ms) | new leader known: median (ms) |",
  "|---|---:|---:|---:|---:|---:|---:|",
  (group_by(.system)[] |
    "| \(.[0].system) | \(length) | \(map(.write_acked_ms) | min | cell) | \(map(.write_acked_ms) | med | cell) | \(map(.write_acked_ms) | max | cell) | \(map(.term_bumped_ms | select(. != null)) | med | cell) | \(map(.leader_known_ms | select(. != null)) | med | cell) |")
' "$results" | tee "$out/table.md"
echo "results: $out" >&2
