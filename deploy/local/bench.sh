#!/usr/bin/env bash
# Benchmark Triggers on this machine: a private Postgres (cluster `bench`, port 55434, a fresh
# database each time), release builds of ingest and one worker on spare ports, then R runs of
# `triggers-bench` with webhook delivery to its embedded receiver, and the median of each figure.
#
#   deploy/local/bench.sh [-n EVENTS] [-c CONCURRENCY] [-k ORGS] [-r RUNS] [--no-webhook]
#
# Defaults (or BENCH_EVENTS, BENCH_CONCURRENCY, BENCH_ORGS, BENCH_RUNS): 20000 events, 64
# connections, 4 organisations, 3 runs. BENCH_PROFILE (default release) picks the cargo profile,
# BENCH_INGEST_ADDR / BENCH_WORKER_ADDR (127.0.0.1:18080 / 127.0.0.1:18091) the ports,
# BENCH_DURATION_LIMIT (120s) bounds each run, BENCH_KEEP_PG=1 leaves the cluster running.
# Each run's JSON and the service logs land in target/bench/.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"

events=${BENCH_EVENTS:-20000}
concurrency=${BENCH_CONCURRENCY:-64}
orgs=${BENCH_ORGS:-4}
runs=${BENCH_RUNS:-3}
webhook=--webhook
while (($#)); do
  case $1 in
    -n | --events) events=$2; shift 2 ;;
    -c | --concurrency) concurrency=$2; shift 2 ;;
    -k | --orgs) orgs=$2; shift 2 ;;
    -r | --runs) runs=$2; shift 2 ;;
    --no-webhook) webhook=""; shift ;;
    -h | --help) sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ $runs =~ ^[1-9][0-9]*$ && $runs -le 20 ]] || { echo "bench.sh: runs must be 1..20" >&2; exit 2; }
profile=${BENCH_PROFILE:-release}
ingest_addr=${BENCH_INGEST_ADDR:-127.0.0.1:18080}
worker_addr=${BENCH_WORKER_ADDR:-127.0.0.1:18091}
limit=${BENCH_DURATION_LIMIT:-120s}
out="$root/target/bench"
mkdir -p "$out"
rm -f "$out"/run-*.json

log() { echo "bench.sh: $*" >&2; }
port_busy() { (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null; }
for addr in "$ingest_addr" "$worker_addr"; do
  if port_busy "$addr"; then log "$addr is already in use; set BENCH_INGEST_ADDR / BENCH_WORKER_ADDR"; exit 1; fi
done

# Postgres: its own cluster, and a fresh database so runs on different days start alike.
export TRIGGERS_PG_NAME=bench
DATABASE_URL=$(deploy/local/postgres.sh start)
psql_bin=$(command -v psql || ls /usr/lib/postgresql/*/bin/psql | head -n 1)
"$psql_bin" "${DATABASE_URL%/*}/postgres" -qc "DROP DATABASE IF EXISTS triggers WITH (FORCE)" >&2
DATABASE_URL=$(deploy/local/postgres.sh start)
export DATABASE_URL

pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [[ ${BENCH_KEEP_PG:-0} != 1 ]]; then deploy/local/postgres.sh stop || true; fi
}
trap cleanup EXIT

# The same feature set as run.sh's build, so the two share compiled artifacts.
cargo build --profile "$profile" --workspace --bins
bin="$root/target/$([[ $profile == dev ]] && echo debug || echo "$profile")"

export TRIGGERS_ALLOW_PRIVATE_WEBHOOKS=true
export TRIGGERS_INGEST_ADDR=$ingest_addr TRIGGERS_WORKER_ADDR=$worker_addr
export RUST_LOG=${RUST_LOG:-warn}
"$bin/triggers-ingest" migrate
"$bin/triggers-worker" >"$out/worker.log" 2>&1 &
pids+=($!)
"$bin/triggers-ingest" >"$out/ingest.log" 2>&1 &
pids+=($!)

wait_ready() {
  local url=$1 i
  for ((i = 0; i < 300; i++)); do
    curl -fsS -o /dev/null "$url" 2>/dev/null && return 0
    sleep 0.1
  done
  log "$url did not become ready; see $out/*.log"
  return 1
}
wait_ready "http://$ingest_addr/health/ready"
wait_ready "http://$worker_addr/health/ready"

log "$(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); $events events, $concurrency connections, $orgs orgs, $runs runs, ${webhook:-no webhook}"
status=0
for ((i = 1; i <= runs; i++)); do
  log "run $i of $runs"
  # One JSON object per run; the bench's exit status says whether the run was complete.
  if ! "$bin/triggers-bench" --url "http://$ingest_addr" --events "$events" --concurrency "$concurrency" \
    --orgs "$orgs" $webhook --duration-limit "$limit" --json >"$out/run-$i.json"; then
    status=1
  fi
  if [[ ! -s $out/run-$i.json ]]; then rm -f "$out/run-$i.json"; fi
done

shopt -s nullglob
files=("$out"/run-*.json)
if ((${#files[@]} > 0)); then
  echo
  echo "Triggers benchmark, $(date -u +%Y-%m-%dT%H:%MZ): $events events, $concurrency connections, $orgs orgs, ${webhook:-no webhook}; $profile build"
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
echo "runs: $out/run-*.json; logs: $out/{ingest,worker}.log"
exit "$status"
