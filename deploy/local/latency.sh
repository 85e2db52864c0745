#!/usr/bin/env bash
# Latency of a lone POST /api/events, beside the commit floor of the same Postgres.
#
#   deploy/local/latency.sh [-n REQUESTS] [-r RUNS] [INGEST_BINARY...]
#
# For each ingest binary (default: a release build of this checkout) and each of RUNS rounds
# (default 3, binaries interleaved): a fresh database on the private cluster TRIGGERS_PG_NAME
# (default `latency`; TRIGGERS_PG_PORT, default 55435), the binary on LATENCY_ADDR (127.0.0.1:18180), one
# enterprise organisation with a webhook (so every event is stored with its delivery job; no
# worker runs), then REQUESTS (default 2000) sequential POSTs over ONE keep-alive connection
# (a single curl process), after 200 warm-up requests. Prints p50 / p95 / p99 / mean in ms per
# run. Each round ends with the commit floor: `pgbench -n -c1 -T10` of a single-row INSERT.
# With LATENCY_BENCH=path/to/triggers-bench, each run also sends a burst of 20,000 events
# (LATENCY_BURST_EVENTS) over 64 connections and prints its throughput and latency.
# LATENCY_BODY=file: every POST sends that file as its body (default: a one-field event).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
requests=2000
runs=3
while (($#)); do
  case $1 in
    -n) requests=$2; shift 2 ;;
    -r) runs=$2; shift 2 ;;
    -h | --help) sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "latency.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    *) break ;;
  esac
done
binaries=("$@")
if ((${#binaries[@]} == 0)); then
  # The same feature set as bench.sh's build, so the two share compiled artifacts.
  cargo build --release --workspace --bins
  binaries=("$root/target/release/triggers-ingest")
fi
addr=${LATENCY_ADDR:-127.0.0.1:18180}
export TRIGGERS_PG_NAME=${TRIGGERS_PG_NAME:-latency} TRIGGERS_PG_PORT=${TRIGGERS_PG_PORT:-55435}
base_url=$(deploy/local/postgres.sh start)
psql_bin=$(pg_bin psql)
pgbench_bin=$(pg_bin pgbench)
admin_url="${base_url%/*}/postgres"
work=$(mktemp -d)
pid=""
cleanup() {
  [[ -n $pid ]] && kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

# Quantiles (ms) of curl's per-transfer time_total (seconds), one per line.
summarize() {
  sort -g | awk '{ v[NR] = $1 * 1000; s += $1 * 1000 }
    END { printf "p50 %.2f  p95 %.2f  p99 %.2f  mean %.2f ms (n=%d)\n",
      v[int(NR * 0.50 + 0.5)], v[int(NR * 0.95 + 0.5)], v[int(NR * 0.99 + 0.5)], s / NR, NR }'
}

one_run() {
  local bin=$1 db url key org i
  db="latency_$RANDOM"
  "$psql_bin" "$admin_url" -qc "CREATE DATABASE $db" >&2
  url="${base_url%/*}/$db"
  DATABASE_URL=$url TRIGGERS_INGEST_ADDR=$addr TRIGGERS_ALLOW_PRIVATE_WEBHOOKS=true RUST_LOG=warn \
    "$bin" >"$work/ingest.log" 2>&1 &
  pid=$!
  wait_ready "http://$addr/health/ready" 30 "$work/ingest.log"
  curl -fsS -o "$work/org.json" -H 'Content-Type: application/json' \
    -d '{"organization_name":"latency","tier":"enterprise"}' "http://$addr/api/keys/generate"
  key=$(sed -E 's/.*"api_key":"([^"]+)".*/\1/' "$work/org.json")
  # Its webhook (the default endpoint) through the API: nothing listens there, no worker runs.
  curl -fsS -o /dev/null -H "X-API-Key: $key" -H 'Content-Type: application/json' \
    -d '{"webhook_url":"http://127.0.0.1:9/hook"}' "http://$addr/api/webhook/config"
  # One curl process, one connection: every URL of the list is a POST over the kept-alive socket.
  post() {
    local n=$1
    {
      printf 'header = "X-API-Key: %s"\nheader = "Content-Type: application/json"\n' "$key"
      if [[ -n ${LATENCY_BODY:-} ]]; then
        printf 'data-binary = "@%s"\n' "$LATENCY_BODY"
      else
        printf 'data = "{\\"type\\":\\"latency.test\\",\\"payload\\":{\\"n\\":1}}"\n'
      fi
      printf 'write-out = "%%{http_code} %%{time_total} %%{num_connects}\\n"\n'
      for ((i = 0; i < n; i++)); do printf 'url = "http://%s/api/events"\noutput = "/dev/null"\n' "$addr"; done
    } >"$work/curlrc"
    curl -s -K "$work/curlrc"
  }
  post 200 >/dev/null
  post "$requests" >"$work/times"
  if grep -qv '^202 ' "$work/times"; then
    log "some answers were not 202: $(grep -v '^202 ' "$work/times" | cut -d' ' -f1 | sort | uniq -c | tr '\n' ' ')"
  fi
  echo "$bin: $(cut -d' ' -f2 "$work/times" | summarize), $(awk '{ c += $3 } END { print c }' "$work/times") connection(s)"
  if [[ -n ${LATENCY_BENCH:-} ]]; then
    # The burst beside it: 64 connections, no webhooks (no worker runs), same database.
    "$LATENCY_BENCH" --url "http://$addr" --events "${LATENCY_BURST_EVENTS:-20000}" --concurrency 64 \
      --orgs 4 --json >"$work/burst.json" 2>"$work/burst.log" || log "the burst failed: $(tail -n 3 "$work/burst.log")"
    echo "$bin: burst $(tr -d '\n' <"$work/burst.json" | grep -oE '"(accepted|ingest_throughput_eps|p50|p99)": *[0-9.]+' | tr '\n' ' ')"
  fi
  kill -TERM "$pid"
  wait "$pid" 2>/dev/null || true
  pid=""
  "$psql_bin" "$admin_url" -qc "DROP DATABASE $db WITH (FORCE)" >&2
}

commit_floor() {
  local db=latency_floor
  "$psql_bin" "$admin_url" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db" >&2
  "$psql_bin" "${base_url%/*}/$db" -qc "CREATE TABLE t (id bigserial PRIMARY KEY, v int)" >&2
  echo "INSERT INTO t (v) VALUES (1);" >"$work/insert.sql"
  "$pgbench_bin" -n -c1 -T10 -f "$work/insert.sql" "${base_url%/*}/$db" 2>&1 |
    awk '/latency average/ { printf "commit floor (pgbench -n -c1 -T10, single-row INSERT): %s ms", $4 } /tps =/ { printf ", %s tps\n", $3 }'
}

log "$(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); $requests sequential POSTs per run, $runs rounds"
for ((r = 1; r <= runs; r++)); do
  for bin in "${binaries[@]}"; do one_run "$bin"; done
  commit_floor
done
