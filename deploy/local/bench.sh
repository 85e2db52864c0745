#!/usr/bin/env bash
# Benchmark Triggers on this machine: a private Postgres (cluster `bench`, port 55434, a fresh
# database each time), release builds of ingest and one worker on spare ports, then R runs of
# `triggers-bench` with webhook delivery to its embedded receiver, and the median of each figure.
#
#   deploy/local/bench.sh [-n EVENTS] [-c CONCURRENCY] [-k ORGS] [-r RUNS] [-w WORKERS]
#                         [--drain] [--no-webhook] [--rate R --duration S] [--slow-org N]
#                         [--slow-endpoint N] [--endpoints E [--matching M]]
#                         [--poison C [--poison-payload KIND]] [--prefill N] [--recover N]
#                         [--batch-size B]
#   deploy/local/bench.sh --all     # every scenario of BENCHMARKS.md, then latency.sh
#                                   # (BENCH_SCENARIOS="drain-1 scale ..." runs only those)
#
# Defaults (or BENCH_EVENTS, BENCH_CONCURRENCY, BENCH_ORGS, BENCH_RUNS, BENCH_WORKERS): 20000
# events, 64 connections, 4 organisations, 3 runs, 1 worker. --drain: the workers start only once
# every event is queued, and the delivery rate is that of draining the backlog. --rate/--duration:
# open loop (R events/s for S seconds, at most C in flight). --slow-org N: isolation (N events
# of an organisation whose endpoint takes 3 s are queued before each run; --slow-endpoint N: the
# same for a slow endpoint of the measured organisation itself). --endpoints E --matching M: each
# organisation has E endpoints and each event matches M of them (deliveries/s counts each).
# --poison C: another
# organisation sends payloads Postgres cannot store (issue 15's five, or --poison-payload's one)
# from C connections while the events are sent, to show what they cost. --prefill N: the
# database first gets N events of history (delivered, with dedup keys and attempts, of 16 other
# organisations; deploy/local/sql/prefill.sql), to show the per-event cost at scale. --recover N:
# a recovery under load (one more organisation's endpoint misses N events, which
# POST /api/endpoints/{id}/recover restarts right before the measured events). --batch-size B:
# the events go B at a time through POST /api/events/batch (closed loop). BENCH_PROFILE
# (default release) picks the cargo profile, BENCH_SERVICE_BIN a folder with prebuilt
# triggers-ingest and triggers-worker (e.g. of another commit), BENCH_INGEST_ADDR /
# BENCH_WORKER_ADDR (127.0.0.1:18080 / 127.0.0.1:18091, then the next ports) the ports,
# BENCH_DURATION_LIMIT (120s) bounds each run, BENCH_KEEP_PG=1 leaves the cluster running.
# Also measured in the same run: the commit floor (pgbench, one single-row INSERT per
# transaction, sequential, 10 s) and, per run, statements and commits per delivery
# (pg_stat_statements, loaded into the bench cluster, and pg_stat_database.xact_commit).
# Each run's JSON, chart (SVG), statement report, the hot tables' live and dead rows every 2 s
# (tables-N.tsv) and the service logs land in target/bench/
# (BENCH_OUT), and the peak RSS (VmHWM) of ingest and workers in memory.txt.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"

events=${BENCH_EVENTS:-20000}
concurrency=${BENCH_CONCURRENCY:-64}
orgs=${BENCH_ORGS:-4}
runs=${BENCH_RUNS:-3}
workers=${BENCH_WORKERS:-1}
drain=0
webhook=--webhook
extra=()
all=0
prefill=0
while (($#)); do
  case $1 in
    -n | --events) events=$2; shift 2 ;;
    -c | --concurrency) concurrency=$2; shift 2 ;;
    -k | --orgs) orgs=$2; shift 2 ;;
    -r | --runs) runs=$2; shift 2 ;;
    -w | --workers) workers=$2; shift 2 ;;
    --drain) drain=1; shift ;;
    --no-webhook) webhook=""; shift ;;
    --rate | --duration | --slow-org | --slow-endpoint | --slow-delay | --poison | --poison-payload | --recover | --endpoints | --matching | --batch-size)
      extra+=("$1" "$2"); shift 2 ;;
    --all) all=1; shift ;;
    --prefill) prefill=$2; shift 2 ;;
    -h | --help) sed -n '2,38p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ $prefill =~ ^[0-9]+$ ]] || { echo "bench.sh: --prefill takes a number of events" >&2; exit 2; }
[[ $runs =~ ^[1-9][0-9]*$ && $runs -le 20 ]] || { echo "bench.sh: runs must be 1..20" >&2; exit 2; }
[[ $workers =~ ^[1-9][0-9]*$ && $workers -le 8 ]] || { echo "bench.sh: workers must be 1..8" >&2; exit 2; }
if ((drain)) && [[ -z $webhook ]]; then echo "bench.sh: --drain needs webhooks" >&2; exit 2; fi
profile=${BENCH_PROFILE:-release}

if ((all)); then
  # Every scenario of BENCHMARKS.md, each with its own fresh database and 3 runs (medians), then
  # the sequential latency of a lone POST. Results: target/bench/all/<scenario>/ and summary.txt.
  base="$root/target/bench/all"
  if [[ -z ${BENCH_SCENARIOS:-} ]]; then rm -rf "$base"; fi
  mkdir -p "$base"
  wanted() { [[ -z ${BENCH_SCENARIOS:-} || " $BENCH_SCENARIOS " == *" $1 "* ]]; }
  scenario() { # name, then bench.sh arguments
    local name=$1
    shift
    wanted "$name" || return 0
    echo "== $name: bench.sh $*" | tee -a "$base/summary.txt"
    BENCH_OUT="$base/$name" "${BASH_SOURCE[0]}" "$@" 2>&1 | tee "$base/$name.log" \
      | sed -n '/^Triggers benchmark/,$p' | tee -a "$base/summary.txt"
    grep -h 'commits and' "$base/$name.log" | tee -a "$base/summary.txt" || true
  }
  scenario drain-1 --drain -n 20000 -w 1
  scenario drain-2 --drain -n 20000 -w 2
  scenario open-loop --rate 2500 --duration 60 -c 256 -w 1
  scenario burst-webhook -n 60000 -c 64 -w 1
  scenario burst-no-webhook -n 60000 -c 64 --no-webhook
  scenario isolation --slow-org 2000 -n 300 -c 64 -k 1 -w 1
  # Many endpoints (issue 14): fan-out to 4 and 16 matching endpoints (ingest with webhooks on and
  # no worker, then one worker's drain in deliveries/s), 50 endpoints of which 1 matches (ingest
  # beside drain-1's), a slow endpoint beside a fast one of the same organisation, and an open
  # loop of 500 events/s to one endpoint.
  scenario fanout-4 --drain -n 20000 -w 1 --endpoints 4 --matching 4
  scenario fanout-16 --drain -n 10000 -w 1 --endpoints 16 --matching 16
  scenario endpoints-50 --drain -n 20000 -w 1 --endpoints 50 --matching 1
  scenario isolation-endpoint --slow-endpoint 2000 -n 300 -c 64 -k 1 -w 1
  scenario open-loop-500 --rate 500 --duration 30 -c 256 -w 1
  scenario scale --prefill 10000000 -n 60000 -c 64 -w 1
  # A backlog left by a long burst (issue 15 §3): 175,000 events in batches of 100 from 16
  # connections with one worker running (single events from 64 connections leave no backlog on 2
  # cores: the worker keeps pace with them), whose backlog must drain at >= 80 % of a fresh
  # drain of 100,000.
  scenario burst-backlog -n 175000 -c 16 -k 4 -w 1 --batch-size 100
  scenario drain-100k --drain -n 100000 -w 1
  # Back to back: the same open loop of 4 organisations, without and then during a recovery of
  # 100,000 deliveries of a fifth one (its live end-to-end p99 must stay within 2x). Recoveries
  # are paced (TRIGGERS_RECOVERY_RATE, 1,000/s), so the stream lasts about as long as the
  # recovery, and each run waits for its recovery to end before the next begins.
  BENCH_DURATION_LIMIT=240s scenario recovery-baseline --rate 500 --duration 100 -c 256 -w 1
  BENCH_DURATION_LIMIT=240s scenario recovery --rate 500 --duration 100 -c 256 -w 1 --recover 100000
  # Batch ingest (issue 15 §2): batches of 100 from 16 connections, without webhooks (target:
  # >= 40,000 durable events/s), then with one endpoint and one worker (every event delivered).
  scenario batch-100 -n 100000 -c 16 -k 4 --no-webhook --batch-size 100
  scenario batch-100-worker -n 60000 -c 16 -k 1 -w 1 --batch-size 100
  # One organisation's stream from 16 connections, alone, then beside another sending each of
  # issue 15's poison payloads from 4 connections (target: >= 80 % of the rate alone).
  scenario victim-alone -n 40000 -c 16 -k 1 --no-webhook
  for kind in deep-objects deep-arrays lone-surrogate huge-exponent long-number; do
    scenario "victim-beside-$kind" -n 40000 -c 16 -k 1 --no-webhook --poison 4 --poison-payload "$kind"
  done
  if wanted sequential; then
    echo "== sequential: latency.sh -r 3" | tee -a "$base/summary.txt"
    deploy/local/latency.sh -r 3 2>&1 | tee "$base/latency.log" | tail -n 12 | tee -a "$base/summary.txt"
  fi
  echo "all results: $base/summary.txt"
  exit 0
fi
ingest_addr=${BENCH_INGEST_ADDR:-127.0.0.1:18080}
worker_addr=${BENCH_WORKER_ADDR:-127.0.0.1:18091}
limit=${BENCH_DURATION_LIMIT:-120s}
out=${BENCH_OUT:-$root/target/bench}
mkdir -p "$out"
rm -f "$out"/run-*.json "$out"/run-*.svg "$out"/statements-*.txt "$out"/memory.txt

worker_addrs=()
for ((w = 0; w < workers; w++)); do worker_addrs+=("${worker_addr%:*}:$((${worker_addr##*:} + w))"); done
for addr in "$ingest_addr" "${worker_addrs[@]}"; do
  if port_busy "$addr"; then log "$addr is already in use; set BENCH_INGEST_ADDR / BENCH_WORKER_ADDR"; exit 1; fi
done

# Postgres: its own cluster, and a fresh database so runs on different days start alike.
export TRIGGERS_PG_NAME=bench
DATABASE_URL=$(deploy/local/postgres.sh start)
psql_bin=$(pg_bin psql)
"$psql_bin" "${DATABASE_URL%/*}/postgres" -qc "DROP DATABASE IF EXISTS triggers WITH (FORCE)" >&2
DATABASE_URL=$(deploy/local/postgres.sh start)
export DATABASE_URL
psql() { "$psql_bin" "$DATABASE_URL" -Atq "$@"; }
# pg_stat_statements must be preloaded: set it on the bench cluster only, and restart it once.
if [[ $(psql -c "SHOW shared_preload_libraries") != *pg_stat_statements* ]]; then
  psql -c "ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'"
  deploy/local/postgres.sh stop
  DATABASE_URL=$(deploy/local/postgres.sh start)
fi
psql -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"

pids=()
# Peak resident memory (VmHWM) of a service process, recorded before it is stopped.
peak_rss() { # name pid
  local kb
  kb=$(awk '/^VmHWM:/ { print $2 }' "/proc/$2/status" 2>/dev/null || true)
  [[ -n $kb ]] && echo "$1 $((kb / 1024)) MB" >>"$out/memory.txt"
  return 0
}
cleanup() {
  local pid
  [[ -n ${ingest_pid:-} ]] && peak_rss ingest "$ingest_pid"
  for pid in ${worker_pids[@]+"${worker_pids[@]}"}; do peak_rss worker "$pid"; done
  if [[ -s $out/memory.txt ]]; then
    log "peak RSS: $(sort -k2 -n "$out/memory.txt" | awk '{ m[$1] = $2 } END { for (k in m) printf "%s %d MB  ", k, m[k] }')"
  fi
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [[ ${BENCH_KEEP_PG:-0} != 1 ]]; then deploy/local/postgres.sh stop || true; fi
}
trap cleanup EXIT

# The same feature set as run.sh's build, so the two share compiled artifacts.
cargo build --profile "$profile" --workspace --bins
bin="$root/target/$([[ $profile == dev ]] && echo debug || echo "$profile")"
service_bin=${BENCH_SERVICE_BIN:-$bin}

# The commit floor of this disk: sequential single-row inserts, one transaction each.
psql -c "CREATE TABLE IF NOT EXISTS bench_floor (id bigserial PRIMARY KEY, v int)"
echo "INSERT INTO bench_floor (v) VALUES (1);" >"$out/floor.sql"
pgbench_bin=$(command -v pgbench || ls /usr/lib/postgresql/*/bin/pgbench | head -n 1)
floor_tps=$("$pgbench_bin" -n -c1 -T10 -f "$out/floor.sql" "$DATABASE_URL" 2>/dev/null | awk '/^tps/ { print $3; exit }')
log "commit floor: ${floor_tps:-?} single-row commits/s (pgbench -n -c1 -T10)"

export TRIGGERS_ALLOW_PRIVATE_WEBHOOKS=true
export TRIGGERS_INGEST_ADDR=$ingest_addr TRIGGERS_WORKER_ADDR=$worker_addr
export RUST_LOG=${RUST_LOG:-warn}
"$service_bin/triggers-ingest" migrate
if ((prefill > 0)); then
  log "prefilling $prefill events of history (deploy/local/sql/prefill.sql)"
  started=$SECONDS
  psql -v n="$prefill" -f deploy/local/sql/prefill.sql >/dev/null
  log "prefilled in $((SECONDS - started)) s: $(psql -c "SELECT count(*) FROM events") events, database $(psql -c "SELECT pg_size_pretty(pg_database_size(current_database()))")"
fi
"$service_bin/triggers-ingest" >"$out/ingest.log" 2>&1 &
ingest_pid=$!
pids+=($!)

# The workers (for a drain, started by the bench once every event is queued).
worker_pids=()
start_workers() {
  local w
  for ((w = 0; w < workers; w++)); do
    TRIGGERS_WORKER_ADDR=${worker_addrs[w]} "$service_bin/triggers-worker" >>"$out/worker-$w.log" 2>&1 &
    worker_pids+=($!)
    pids+=($!)
  done
}
stop_workers() {
  local pid
  for pid in "${worker_pids[@]}"; do peak_rss worker "$pid"; done
  for pid in "${worker_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${worker_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  worker_pids=()
}

wait_ready "http://$ingest_addr/health/ready"
if ((!drain)); then
  start_workers
  for addr in "${worker_addrs[@]}"; do wait_ready "http://$addr/health/ready"; done
fi

mode=$( ((drain)) && echo "drain by $workers worker(s)" || echo "$workers worker(s) running")
log "$(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); $events events, $concurrency connections, $orgs orgs, $runs runs, ${webhook:-no webhook}, $mode"
commits() { psql -c "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"; }
sample_tables() { # file
  local started=$SECONDS
  printf 's\ttable\tlive\tdead\tautovacuums\tpages\n' >"$1"
  while true; do
    psql -F $'\t' -c "SELECT $((SECONDS - started)), s.relname, n_live_tup, n_dead_tup, autovacuum_count, c.relpages
                       FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
                       WHERE s.relname IN ('jobs', 'events', 'deliveries', 'delivery_attempts', 'dedup_keys')
                       ORDER BY s.relname" >>"$1" 2>/dev/null || true
    sleep 2
  done
}
status=0
for ((i = 1; i <= runs; i++)); do
  log "run $i of $runs"
  psql -c "SELECT pg_stat_statements_reset()" >/dev/null
  commits_before=$(commits)
  drain_args=()
  if ((drain)); then
    # The bench runs this once every event is queued: it signals us, and returns once we have
    # started the workers.
    rm -f "$out/drain-go"
    drain_args=(--drain-start "touch '$out/drain-go'; while [ -e '$out/drain-go' ]; do sleep 0.01; done")
  fi
  # One JSON object per run; the bench's exit status says whether the run was complete.
  "$bin/triggers-bench" --url "http://$ingest_addr" --events "$events" --concurrency "$concurrency" \
    --orgs "$orgs" $webhook "${drain_args[@]}" "${extra[@]}" --duration-limit "$limit" --json \
    --chart "$out/run-$i.svg" >"$out/run-$i.json" &
  bench_pid=$!
  if ((drain)); then
    while [[ ! -e $out/drain-go ]] && kill -0 "$bench_pid" 2>/dev/null; do sleep 0.01; done
    # From here on the database works for the workers only.
    psql -c "SELECT pg_stat_statements_reset()" >/dev/null
    commits_before=$(commits)
    start_workers
    rm -f "$out/drain-go"
  fi
  # Every 2 s while the run lasts: live and dead rows of the hot tables and their vacuums.
  sample_tables "$out/tables-$i.tsv" &
  sampler_pid=$!
  wait "$bench_pid" || status=1
  kill "$sampler_pid" 2>/dev/null || true
  wait "$sampler_pid" 2>/dev/null || true
  if [[ ! -s $out/run-$i.json ]]; then rm -f "$out/run-$i.json"; fi
  commits_after=$(commits)
  # The database's work during the run, per delivered event: commits, and statements by calls.
  delivered=$(sed -n 's/.*"delivered": *\([0-9]*\).*/\1/p' "$out/run-$i.json" 2>/dev/null | head -n 1)
  {
    echo "delivered ${delivered:-?}; commits $((commits_after - commits_before))"
    psql -F $'\t' -c "SELECT calls, round(total_exec_time::numeric, 1) AS ms, rows, left(regexp_replace(query, '\s+', ' ', 'g'), 110)
                      FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
                      ORDER BY calls DESC LIMIT 25"
  } >"$out/statements-$i.txt"
  if [[ ${delivered:-0} -gt 0 ]]; then
    calls=$(psql -c "SELECT sum(calls) FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())")
    scope=$( ((drain)) && echo "workers only" || echo "ingest included")
    log "run $i: $(awk -v c=$((commits_after - commits_before)) -v s="$calls" -v d="$delivered" -v w="$scope" \
      'BEGIN { printf "%.2f commits and %.2f statements per delivery (%s)", c / d, s / d, w }')"
  fi
  if ((drain)); then stop_workers; fi
done

shopt -s nullglob
files=("$out"/run-*.json)
if ((${#files[@]} > 0)); then
  echo
  what="$events events"
  ((${#extra[@]})) && what="${extra[*]}"
  echo "Triggers benchmark, $(date -u +%Y-%m-%dT%H:%MZ): $what, $concurrency connections, $orgs orgs, ${webhook:-no webhook}; $profile build"
  "$bin/triggers-bench" summarize "${files[@]}" || status=1
fi

# What the ingest's micro-batcher did over all runs: mean events per transaction and commit time.
metric_mean() { # name of a Prometheus histogram → sum / count
  curl -fsS "http://$ingest_addr/metrics" 2>/dev/null | awk -v n="$1" '
    $1 == n"_sum" { s = $2 } $1 == n"_count" { c = $2 }
    END { if (c > 0) printf "%.3f", s / c; else printf "-" }'
}
echo "ingest batches: mean $(metric_mean triggers_ingest_batch_size) events per transaction," \
  "mean commit $(metric_mean triggers_ingest_batch_commit_seconds) s"
echo "commit floor: ${floor_tps:-?} sequential single-row commits/s (pgbench -n -c1 -T10)"
echo "runs: $out/run-*.json, charts $out/run-*.svg; statements per run: $out/statements-*.txt; logs: $out/{ingest,worker-*}.log"
exit "$status"
