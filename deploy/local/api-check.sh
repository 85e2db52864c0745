#!/usr/bin/env bash
# The OpenAPI document against the service, on a real ingest (debug build) and a fresh database:
#   1. the served /openapi.json validates as OpenAPI 3.1 (openapi-spec-validator);
#   2. Schemathesis generates requests for every operation the document lists (a route added to
#      the document is fuzzed with no change here) and fails on any 5xx, any status the
#      operation does not document, any answer that does not match its schema, and any request
#      valid by the schema that is refused (checks: all). A fixed seed and a bounded number of
#      examples per operation keep the run reproducible and under two minutes.
# What a fuzzer cannot generate (credentials, values only the API issues, URLs that must resolve)
# is supplied by deploy/local/api_check_hooks.py from what the document says. `deploy/local/test.sh`
# runs this after the cargo tests; it needs `cargo build --workspace --bins` first. Python
# packages are pinned and installed under target/api-check.
#
#   deploy/local/api-check.sh [EXAMPLES]    # examples per operation (default 25)
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
log_name=api-check
examples=${1:-25}
seed=20261204
started=$SECONDS

venv=$root/target/api-check/venv
pins=(openapi-spec-validator==0.9.0 schemathesis==4.32.5)
if ! "$venv/bin/python" - "${pins[@]}" 2>/dev/null <<'PY'; then
import importlib.metadata, sys
sys.exit(any(importlib.metadata.version(n) != v for n, v in (p.split("==") for p in sys.argv[1:])))
PY
  log "installing ${pins[*]} into target/api-check"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "${pins[@]}"
fi

if [[ -z ${DATABASE_URL:-} ]]; then
  DATABASE_URL=$(TRIGGERS_PG_NAME=test deploy/local/postgres.sh start)
fi
psql_bin=$(pg_bin psql)
db_name=triggers_test_api_check_$RANDOM$RANDOM
"$psql_bin" "$DATABASE_URL" -qc "CREATE DATABASE $db_name" >/dev/null
db_url=$(python3 -c 'import sys, urllib.parse as u; p = u.urlsplit(sys.argv[1]); print(p._replace(path="/" + sys.argv[2]).geturl())' "$DATABASE_URL" "$db_name")

work=$(mktemp -d)
ingest_pid=
cleanup() {
  if [[ -n $ingest_pid ]]; then
    kill -TERM "$ingest_pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$ingest_pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$ingest_pid" 2>/dev/null || true
    wait "$ingest_pid" 2>/dev/null || true
  fi
  "$psql_bin" "$DATABASE_URL" -qc "DROP DATABASE IF EXISTS $db_name WITH (FORCE)" >/dev/null 2>&1 || true
  [[ ${keep_work:-} ]] || rm -rf "$work"
}
trap cleanup EXIT
trap 'keep_work=1; log "logs kept in $work"' ERR

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
admin_token=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
# Private targets allowed: the hooks point webhook URLs at 127.0.0.1 (DNS depends on the outside
# world). The endpoint cap is raised: the fuzzer creates many more endpoints than one
# organisation may keep, and `too_many_endpoints` depends on state, not on the request.
DATABASE_URL=$db_url TRIGGERS_INGEST_ADDR=127.0.0.1:$port TRIGGERS_ADMIN_TOKEN=$admin_token \
  TRIGGERS_ALLOW_PRIVATE_WEBHOOKS=true TRIGGERS_MAX_ENDPOINTS_PER_ORG=1000000 RUST_LOG=warn \
  target/debug/triggers-ingest >"$work/ingest.log" 2>&1 &
ingest_pid=$!
base=http://127.0.0.1:$port
wait_ready "$base/health/ready" 60 "$work/ingest.log" || fail "ingest did not come up"

# 1. The document as served.
curl -sf "$base/openapi.json" >"$work/openapi.json"
"$venv/bin/openapi-spec-validator" "$work/openapi.json" >&2
operations=$(python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); print(sum(len(v) for v in d["paths"].values()))' "$work/openapi.json")
log "openapi.json: valid OpenAPI 3.1, $operations operations"

# 2. The fuzzer, as the organisation of an enterprise tier (its rate limit is not the subject).
key=$(curl -sf -X POST "$base/api/keys/generate" -H "X-Admin-Token: $admin_token" -H 'Content-Type: application/json' \
  -d '{"organization_name": "api-check", "tier": "enterprise"}' | python3 -c 'import json, sys; print(json.load(sys.stdin)["api_key"])')
# A few events, so listings have pages and cursors to follow.
for i in 1 2 3; do
  curl -sf -o /dev/null -X POST "$base/api/events" -H "X-API-Key: $key" -H 'Content-Type: application/json' \
    -d "{\"type\": \"seed.event\", \"payload\": {\"n\": $i}}"
done
set +e
(
  cd "$work"
  TRIGGERS_API_CHECK_KEY=$key TRIGGERS_API_CHECK_ADMIN_TOKEN=$admin_token \
    PYTHONPATH=$root/deploy/local SCHEMATHESIS_HOOKS=api_check_hooks \
    "$venv/bin/st" run "$base/openapi.json" --checks all --seed "$seed" --max-examples "$examples" \
    --workers 1 --request-timeout 35 --no-color --suppress-health-check all \
    --report junit --report-junit-path "$work/junit.xml"
) >"$work/schemathesis.out" 2>&1
status=$?
set -e
tail -n 40 "$work/schemathesis.out" >&2
if [[ $status -ne 0 ]]; then
  keep_work=1
  log "FAILED: Schemathesis found problems (full output: $work/schemathesis.out, ingest log: $work/ingest.log)"
  exit 1
fi
if grep -q "panicked\|internal error" "$work/ingest.log"; then
  keep_work=1
  log "FAILED: ingest logged an internal error (log kept: $work/ingest.log)"
  exit 1
fi
log "passed in $((SECONDS - started)) s (seed $seed, up to $examples examples per operation)"
