#!/usr/bin/env bash
# The integrator's path, end to end, against a real instance: `deploy/local/run.sh` (debug build)
# on spare ports, then
#   1. every command of the README quickstart (its ```sh blocks between the quickstart markers),
#   2. the Rust, Python and Node example receivers, each receiving a real signed delivery sent
#      with the Rust example sender, and each refusing a forged and a stale request; then, across
#      a secret rotation with an 8-second grace, one receiver holding the old secret and one the
#      new both accept deliveries during the grace, and after it the old one refuses while the
#      new one accepts,
#   3. both /metrics scraped after that traffic: every metric name that the Grafana dashboard and
#      the Prometheus rules use must be exported by ingest or the worker.
# `deploy/local/test.sh` runs it after the cargo tests; it needs the workspace's binaries built.
# Python and npm packages are installed under target/examples-env (pinned versions).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
log_name=integration-test

for tool in curl jq; do
  if ! command -v "$tool" >/dev/null; then
    log "installing $tool"
    apt-get install -y -qq "$tool" >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq "$tool" >/dev/null; }
  fi
done

env_dir=$root/target/examples-env
if [[ ! -x $env_dir/venv/bin/python ]] || ! "$env_dir/venv/bin/python" -c 'import standardwebhooks' 2>/dev/null; then
  log "installing standardwebhooks for Python and Node under target/examples-env"
  python3 -m venv "$env_dir/venv"
  "$env_dir/venv/bin/pip" install -q --disable-pip-version-check standardwebhooks==1.1.0
fi
if [[ ! -d $env_dir/node/node_modules/standardwebhooks ]]; then
  mkdir -p "$env_dir/node"
  npm install -q --no-audit --no-fund --prefix "$env_dir/node" standardwebhooks@1.1.1 >/dev/null
fi

if [[ -z ${DATABASE_URL:-} ]]; then
  DATABASE_URL=$(TRIGGERS_PG_NAME=test deploy/local/postgres.sh start)
fi
psql_bin=$(pg_bin psql)
# A fresh database (test.sh drops triggers_test_* leftovers at its start).
db_name=triggers_test_integration_$RANDOM$RANDOM
"$psql_bin" "$DATABASE_URL" -qc "CREATE DATABASE $db_name" >/dev/null
db_url=$(python3 -c 'import sys, urllib.parse as u; p = u.urlsplit(sys.argv[1]); print(p._replace(path="/" + sys.argv[2]).geturl())' "$DATABASE_URL" "$db_name")

ingest_port=$(free_port)
worker_port=$(free_port)
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -f "$root/receiver.log" "$root/billing.log"
  [[ ${keep_work:-} ]] || rm -rf "$work"
}
trap cleanup EXIT
trap 'keep_work=1; log "logs kept in $work"' ERR

# --- run.sh, exactly as a user starts it (own process group, so it can be stopped whole) ---
DATABASE_URL=$db_url TRIGGERS_PROFILE=dev RUST_LOG=warn \
  TRIGGERS_INGEST_ADDR=127.0.0.1:$ingest_port TRIGGERS_WORKER_ADDR=127.0.0.1:$worker_port \
  setsid deploy/local/run.sh >"$work/run.log" 2>&1 &
pids+=($!)
ingest=http://127.0.0.1:$ingest_port
wait_ready "$ingest/health/ready" 120 "$work/run.log" || fail "ingest did not come up"
wait_ready "http://127.0.0.1:$worker_port/health/ready" 120 "$work/run.log" || fail "the worker did not come up"
grep -q "api/webhook/config" "$work/run.log" || fail "run.sh does not print the webhook step"
log "run.sh is up: ingest :$ingest_port, worker :$worker_port"

# --- 1. the README quickstart ---
receiver_port=$(free_port)
billing_port=$(free_port)
python3 - "$root/README.md" "$ingest_port" "$worker_port" "$receiver_port" "$billing_port" >"$work/quickstart.sh" <<'PY'
import re, sys
readme, ingest, worker, receiver, billing = sys.argv[1:]
text = open(readme, encoding="utf-8").read()
section = text.split("<!-- quickstart -->", 1)[1].split("<!-- /quickstart -->", 1)[0]
blocks = re.findall(r"(<!-- quickstart:skip[^>]*-->\s*)?```sh\n(.*?)```", section, re.S)
run = [body for skip, body in blocks if not skip]
if len(run) < 5:
    sys.exit(f"only {len(run)} runnable quickstart blocks found")
script = "\n".join(run)
script = script.replace("127.0.0.1:8080", "127.0.0.1:" + ingest).replace("127.0.0.1:9091", "127.0.0.1:" + worker)
script = script.replace("127.0.0.1:4000", "127.0.0.1:" + receiver).replace("PORT=4000", "PORT=" + receiver)
script = script.replace("127.0.0.1:4001", "127.0.0.1:" + billing).replace("PORT=4001", "PORT=" + billing)
# run.sh runs here with the dev profile (the suite's build), so its binaries are in target/debug.
script = script.replace("target/release/", "target/debug/")
print(script)
PY
(
  set -euo pipefail
  # shellcheck disable=SC1091
  source "$work/quickstart.sh" >"$work/quickstart.out"
  # What the quickstart promises, checked.
  got=$(curl -sf "$ingest/api/events/$EVENT" -H "X-API-Key: $KEY")
  [[ $(jq -r .status <<<"$got") == delivered ]] || fail "quickstart event not delivered: $got"
  [[ $(jq -c '[.attempts_log[].response_status]' <<<"$got") == '[204]' ]] || fail "attempts: $got"
  [[ $(jq -c '[.deliveries[].status]' <<<"$got") == '["delivered"]' ]] || fail "deliveries: $got"
  # Two endpoints, one filter: billing got the invoice only; the default endpoint got both.
  grep -q "verified $INVOICE" "$root/billing.log" || fail "billing did not get the invoice"
  ! grep -q "verified $ORDER" "$root/billing.log" || fail "billing got the order it did not subscribe to"
  got=$(curl -sf "$ingest/api/events/$INVOICE" -H "X-API-Key: $KEY")
  [[ $(jq -c '[.deliveries[].status]' <<<"$got") == '["delivered","delivered"]' ]] || fail "invoice: $got"
  got=$(curl -sf "$ingest/api/events/$ORDER" -H "X-API-Key: $KEY")
  [[ $(jq -c '[.deliveries[].status]' <<<"$got") == '["delivered"]' ]] || fail "order: $got"
  got=$(curl -sf "$ingest/api/events/$PULLED" -H "X-API-Key: $KEY")
  [[ $(jq -r '.type, (.acknowledged_at != null), (.deliveries | length)' <<<"$got" | tr '\n' ' ') == 'user.signup true 0 ' ]] \
    || fail "pulled event not acknowledged: $got"
) || { cat "$work/quickstart.out" >&2; fail "README quickstart"; }
log "README quickstart: ok"

# --- 2. the three example receivers, each with a real delivery ---
ingest_bin=$root/target/debug/triggers-ingest
sign() { # SECRET ID TIMESTAMP BODY -> v1,<base64>
  python3 -c 'import base64, hashlib, hmac, sys
s, i, t, b = sys.argv[1:]
k = base64.b64decode(s.removeprefix("whsec_"))
print("v1," + base64.b64encode(hmac.new(k, f"{i}.{t}.{b}".encode(), hashlib.sha256).digest()).decode())' "$@"
}
for lang in rust python node; do
  org=$(DATABASE_URL=$db_url RUST_LOG=warn "$ingest_bin" org create --name "example-$lang")
  key=$(jq -r .api_key <<<"$org")
  port=$(free_port)
  secret=$(curl -sf -X POST "$ingest/api/webhook/config" -H "X-API-Key: $key" -H 'Content-Type: application/json' \
    -d "{\"webhook_url\": \"http://127.0.0.1:$port/\"}" | jq -r .signing_secret)
  case $lang in
    rust) cmd=("$root/target/debug/example-receiver") ;;
    python) cmd=("$env_dir/venv/bin/python" "$root/examples/python/receiver.py") ;;
    node) cmd=(env "NODE_PATH=$env_dir/node/node_modules" node "$root/examples/node/receiver.js") ;;
  esac
  WEBHOOK_SECRET=$secret PORT=$port setsid "${cmd[@]}" >"$work/$lang.out" 2>"$work/$lang.err" &
  pids+=($!)
  for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done

  id=$(TRIGGERS_URL=$ingest TRIGGERS_API_KEY=$key "$root/target/debug/example-sender" order.created '{"order": 42}')
  for _ in $(seq 1 150); do grep -q "verified $id order.created" "$work/$lang.out" && break; sleep 0.2; done
  grep -q "verified $id order.created" "$work/$lang.out" \
    || { cat "$work/$lang.out" "$work/$lang.err" >&2; fail "$lang receiver did not verify event $id"; }

  body='{"id":"x","type":"forged","data":{}}'
  now=$(date +%s)
  post() { curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$port/" -H 'Content-Type: application/json' \
    -H "webhook-id: msg_x" -H "webhook-timestamp: $1" -H "webhook-signature: $2" --data-raw "$body"; }
  [[ $(post "$now" "$(sign "$secret" msg_x "$now" "$body")") == 204 ]] || fail "$lang refused a valid signature"
  [[ $(post "$now" "v1,$(printf 'forged' | base64)") == 401 ]] || fail "$lang accepted a forged signature"
  stale=$((now - 600))
  [[ $(post "$stale" "$(sign "$secret" msg_x "$stale" "$body")") == 401 ]] || fail "$lang accepted a 10-minute-old timestamp"
  old_receiver=${pids[-1]}

  # Secret rotation with a grace period: until it ends every request carries a signature per
  # valid secret, so a receiver holding the old secret and one holding the new both accept it;
  # after it the old secret no longer signs and its receiver refuses.
  endpoint=$(curl -sf "$ingest/api/endpoints" -H "X-API-Key: $key" | jq -r '.endpoints[] | select(.default) | .id')
  rotated=$(curl -sf -X POST "$ingest/api/endpoints/$endpoint/secret/rotate" -H "X-API-Key: $key" \
    -H 'Content-Type: application/json' -d '{"grace_period_seconds": 8}')
  new_secret=$(jq -r .signing_secret <<<"$rotated")
  grace_ends=$(date -d "$(jq -r .previous_secret_expires_at <<<"$rotated")" +%s)
  new_port=$(free_port)
  WEBHOOK_SECRET=$new_secret PORT=$new_port setsid "${cmd[@]}" >"$work/$lang-new.out" 2>"$work/$lang-new.err" &
  pids+=($!)
  new_receiver=$!
  for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$new_port/" && break; sleep 0.1; done
  point_at() { curl -sf -X PATCH "$ingest/api/endpoints/$endpoint" -H "X-API-Key: $key" \
    -H 'Content-Type: application/json' -d "{\"url\": \"http://127.0.0.1:$1/\"}" >/dev/null; }
  verified_by() { # EVENT OUTFILE
    for _ in $(seq 1 150); do grep -q "verified $1 " "$2" && return 0; sleep 0.1; done
    cat "$work/$lang.out" "$work/$lang.err" "$work/$lang-new.out" "$work/$lang-new.err" >&2
    return 1
  }
  send() { TRIGGERS_URL=$ingest TRIGGERS_API_KEY=$key "$root/target/debug/example-sender" "$1" '{"order": 42}'; }
  id=$(send order.rotating)
  verified_by "$id" "$work/$lang.out" || fail "$lang: the old secret's receiver refused a delivery during the grace"
  point_at "$new_port"
  id=$(send order.rotating)
  verified_by "$id" "$work/$lang-new.out" || fail "$lang: the new secret's receiver refused a delivery during the grace"
  (($(date +%s) < grace_ends)) || fail "$lang: the grace ended before both deliveries (machine too slow?)"
  point_at "$port"
  while (($(date +%s) <= grace_ends)); do sleep 0.2; done
  id=$(send order.rotated)
  for _ in $(seq 1 150); do
    [[ $(curl -sf "$ingest/api/events/$id" -H "X-API-Key: $key" | jq -c '[.attempts_log[].response_status]') == '[401]' ]] && break
    sleep 0.1
  done
  [[ $(curl -sf "$ingest/api/events/$id" -H "X-API-Key: $key" | jq -c '[.attempts_log[].response_status]') == '[401]' ]] \
    || fail "$lang: the old secret's receiver did not refuse a delivery after the grace"
  ! grep -q "verified $id " "$work/$lang.out" || fail "$lang: the old secret's receiver accepted a delivery after the grace"
  # Its retry (due in 5 s) goes to the new secret's receiver, which accepts it.
  point_at "$new_port"
  for _ in $(seq 1 150); do grep -q "verified $id " "$work/$lang-new.out" && break; sleep 0.1; done
  grep -q "verified $id " "$work/$lang-new.out" || fail "$lang: the new secret's receiver refused the retry after the grace"
  kill -TERM -- "-$old_receiver" "-$new_receiver" 2>/dev/null || true
  log "$lang receiver: verified a real delivery, refused forged and stale requests; during a rotation's grace either secret verifies, after it only the new one"
done

# --- 3. every metric the dashboard and the alerts use is exported ---
curl -sf "$ingest/metrics" >"$work/ingest.metrics" || fail "scraping ingest /metrics"
curl -sf "http://127.0.0.1:$worker_port/metrics" >"$work/worker.metrics" || fail "scraping worker /metrics"
python3 - "$work/ingest.metrics" "$work/worker.metrics" deploy/grafana/triggers.json deploy/prometheus/rules.yaml <<'PY' \
  || fail "metrics used by the dashboard or the alerts are not exported"
import re, sys
base = lambda name: re.sub(r"_(bucket|sum|count)$", "", name)
exported = {}
for path, service in zip(sys.argv[1:3], ["ingest", "worker"]):
    for line in open(path, encoding="utf-8"):
        if line.strip() and not line.startswith("#"):
            exported.setdefault(base(re.split(r"[{ ]", line, 1)[0]), set()).add(service)
used = {}
for path in sys.argv[3:]:
    for name in re.findall(r"\btriggers_[a-z0-9_]+", open(path, encoding="utf-8").read()):
        used.setdefault(base(name), set()).add(path.rsplit("/", 1)[-1])
missing = {name: files for name, files in used.items() if name not in exported}
for name in sorted(exported):
    if name.startswith("triggers_"):
        print(f"  exported: {name} ({', '.join(sorted(exported[name]))})", file=sys.stderr)
for name, files in sorted(missing.items()):
    print(f"  MISSING: {name} (used in {', '.join(sorted(files))})", file=sys.stderr)
sys.exit(1 if missing or len(used) < 10 else 0)
PY
log "metrics: every name used by triggers.json and rules.yaml is exported"
echo "integration-test: 3 passed, 0 failed"
