#!/usr/bin/env bash
# A smoke run of every triggers-bench mode against real binaries: closed loop (also in batches,
# --batch-size), open loop (--rate/--duration), drain (--drain-start), isolation (--slow-org, --slow-endpoint), many
# endpoints (--endpoints/--matching) and poison (--poison), each with a handful of
# events and a chart, beside a small history from bench.sh's --prefill. No timing is asserted:
# it fails only when a mode breaks (an accepted event not delivered, errors, no chart, a prefill
# that stored less than asked). `deploy/local/test.sh` runs it after the tests.
#
#   DATABASE_URL=postgres://... deploy/local/bench-smoke.sh
#
# Uses the debug binaries (BENCH_SMOKE_BIN to override), a fresh database
# `triggers_test_bench_smoke` on DATABASE_URL's server (test.sh drops it afterwards), and free
# loopback ports from 18300 up (BENCH_SMOKE_PORT).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
: "${DATABASE_URL:?bench-smoke.sh needs DATABASE_URL (deploy/local/test.sh sets it)}"
bin=${BENCH_SMOKE_BIN:-$root/target/debug}
out="$root/target/bench-smoke"
mkdir -p "$out"
rm -f "$out"/*.json "$out"/*.svg "$out"/*.log

psql_bin=$(pg_bin psql)
db=triggers_test_bench_smoke
"$psql_bin" "$DATABASE_URL" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db" >/dev/null
DATABASE_URL="${DATABASE_URL%/*}/$db"
export DATABASE_URL

port=${BENCH_SMOKE_PORT:-18300}
while port_busy "$port"; do port=$((port + 1)); done
ingest_addr=127.0.0.1:$port
port=$((port + 1))
while port_busy "$port"; do port=$((port + 1)); done
worker_addr=127.0.0.1:$port
export TRIGGERS_ALLOW_PRIVATE_WEBHOOKS=true TRIGGERS_INGEST_ADDR=$ingest_addr TRIGGERS_WORKER_ADDR=$worker_addr
export RUST_LOG=${RUST_LOG:-warn}

pids=()
worker_pid=
cleanup() {
  local pid
  for pid in "${pids[@]}" $worker_pid; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}" $worker_pid; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
start_worker() {
  "$bin/triggers-worker" >>"$out/worker.log" 2>&1 &
  worker_pid=$!
  wait_ready "http://$worker_addr/health/ready"
}
stop_worker() {
  kill -TERM "$worker_pid" 2>/dev/null || true
  wait "$worker_pid" 2>/dev/null || true
  worker_pid=
}

"$bin/triggers-ingest" migrate
# bench.sh --prefill's history (a few rows here): the modes below then run beside it.
"$psql_bin" "$DATABASE_URL" -q -v n=500 -f deploy/local/sql/prefill.sql >/dev/null
[[ $("$psql_bin" "$DATABASE_URL" -Atc "SELECT count(*) FROM events e JOIN deliveries dl ON dl.event_id = e.id AND dl.status = 'delivered' JOIN delivery_attempts a ON a.event_id = e.id AND a.endpoint_id = dl.endpoint_id JOIN dedup_keys d ON d.event_id = e.id WHERE e.status = 'delivered'") == 500 ]] \
  || { log "prefill.sql did not store 500 delivered events with their deliveries, attempts and dedup keys"; exit 1; }
"$bin/triggers-ingest" >"$out/ingest.log" 2>&1 &
pids+=($!)
wait_ready "http://$ingest_addr/health/ready"
start_worker

bench() { # name, then triggers-bench arguments
  local name=$1
  shift
  log "$name"
  "$bin/triggers-bench" --url "http://$ingest_addr" --webhook --orgs 2 --duration-limit 30s \
    --json --chart "$out/$name.svg" "$@" >"$out/$name.json"
  grep -q '"ok":true' "$out/$name.json" || { log "$name: not ok: $(cat "$out/$name.json")"; return 1; }
  grep -q '<polyline' "$out/$name.svg" || { log "$name: no chart"; return 1; }
}
bench closed-loop --events 200 --concurrency 8
# Batches through POST /api/events/batch (100, 100, then 50), every event delivered.
bench batch --events 250 --concurrency 4 --batch-size 100
grep -q '"accepted":250' "$out/batch.json" || { log "batch: not 250 accepted: $(cat "$out/batch.json")"; exit 1; }
bench open-loop --rate 200 --duration 1s --concurrency 16
grep -q '"backlog_at_schedule_end":[0-9]' "$out/open-loop.json" || { log "open loop: no backlog figure"; exit 1; }
bench isolation --events 50 --concurrency 8 --slow-org 20 --slow-delay 1s
bench isolation-endpoint --events 50 --concurrency 8 --slow-endpoint 20 --slow-delay 1s
# Many endpoints: each event owed to 3 of 5 (the bench waits for every delivery).
bench fanout --events 100 --concurrency 8 --endpoints 5 --matching 3
grep -q '"delivered":300' "$out/fanout.json" \
  || { log "fanout: not 100 events x 3 endpoints = 300 deliveries: $(cat "$out/fanout.json")"; exit 1; }
# Issue 15's five poison payloads in turn beside the measured events: every one answered 4xx.
bench poison --events 100 --concurrency 4 --poison 2
grep -q '"server_errors":0' "$out/poison.json" && grep -q '"422":' "$out/poison.json" \
  || { log "poison: not every payload answered 422: $(cat "$out/poison.json")"; exit 1; }
stop_worker
# The drain: the bench runs this once every event is queued; it starts the worker and returns.
export bin out
rm -f "$out/drain-worker.pid"
drain_status=0
bench drain --events 200 --concurrency 8 \
  --drain-start '"$bin/triggers-worker" >>"$out/worker.log" 2>&1 & echo $! >"$out/drain-worker.pid"' || drain_status=$?
worker_pid=$(cat "$out/drain-worker.pid" 2>/dev/null || true)
((drain_status == 0)) || exit "$drain_status"
log "every mode ran: $out/*.json, $out/*.svg"
