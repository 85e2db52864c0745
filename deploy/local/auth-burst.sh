#!/usr/bin/env bash
# Does a flood of wrong secrets for one key prefix delay another organisation's first request?
# A timing budget, so a measurement here rather than a test of the suite (the suite checks the
# throttle's counts: ingest/tests/it/auth_cache.rs, ingest/src/auth/throttle.rs).
#
#   deploy/local/auth-burst.sh [INGEST_BINARY]
#
# Starts the binary (default: a release build of this checkout) on a fresh database of the
# private cluster TRIGGERS_PG_NAME (default `latency`; or DATABASE_URL's server when set) at
# AUTH_BURST_ADDR (127.0.0.1:18181), creates an attacked organisation and 10 bystanders, and
# times the first request of 5 bystanders on a quiet server. Then three times: 200 wrong
# secrets for the attacked prefix at once and, a second in, another bystander's first request.
# Prints both medians and fails when the guesses add over 100 ms to the quiet median, when
# more wrong secrets were hashed than the throttle's budget (10, then one a second), when none
# was throttled, or when the real key is still refused once the budget refilled.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
bin=${1:-}
if [[ -z $bin ]]; then
  cargo build --release -p triggers-ingest --bin triggers-ingest
  bin=$root/target/release/triggers-ingest
fi
addr=${AUTH_BURST_ADDR:-127.0.0.1:18181}
port_busy "$addr" && fail "$addr is already in use; set AUTH_BURST_ADDR"
if [[ -z ${DATABASE_URL:-} ]]; then
  export TRIGGERS_PG_NAME=${TRIGGERS_PG_NAME:-latency} TRIGGERS_PG_PORT=${TRIGGERS_PG_PORT:-55435}
  DATABASE_URL=$(deploy/local/postgres.sh start)
fi
psql_bin=$(pg_bin psql)
admin_url="${DATABASE_URL%/*}/postgres"
db="auth_burst_$RANDOM"
"$psql_bin" "$admin_url" -qc "CREATE DATABASE $db" >&2
work=$(mktemp -d)
pid=""
cleanup() {
  [[ -n $pid ]] && kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  "$psql_bin" "$admin_url" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >&2 || true
  rm -rf "$work"
}
trap cleanup EXIT

DATABASE_URL="${DATABASE_URL%/*}/$db" TRIGGERS_INGEST_ADDR=$addr RUST_LOG=warn "$bin" >"$work/ingest.log" 2>&1 &
pid=$!
base=http://$addr
wait_ready "$base/health/ready" 60 "$work/ingest.log" || fail "ingest did not come up"

new_key() { # NAME -> an organisation's API key
  curl -fsS -H 'Content-Type: application/json' -d "{\"organization_name\":\"$1\"}" "$base/api/keys/generate" \
    | sed -E 's/.*"api_key":"([^"]+)".*/\1/'
}
first_request_ms() { # KEY -> ms of its first (uncached) request, on a fresh connection
  local out
  out=$(curl -sS -o /dev/null -m 10 -w '%{http_code} %{time_total}' -H "X-API-Key: $1" "$base/api/webhook/config")
  [[ ${out% *} == 200 ]] || fail "a bystander's first request answered ${out% *}"
  awk -v s="${out#* }" 'BEGIN { printf "%.1f\n", s * 1000 }'
}
median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
metric() { # OUTCOME -> triggers_auth_cache_total{outcome=OUTCOME}
  curl -fsS "$base/metrics" | awk -v s="triggers_auth_cache_total{outcome=\"$1\"}" '$1 == s { v = $2 } END { print v + 0 }'
}

target=$(new_key Attacked)
prefix=${target:0:21}
bystanders=()
for n in $(seq 0 9); do bystanders+=("$(new_key "Bystander $n")"); done
quiet=$(for key in "${bystanders[@]:0:5}"; do first_request_ms "$key"; done)
rejected0=$(metric rejected)

started=$SECONDS
during=""
for wave in 0 1 2; do
  # 200 wrong secrets for the one prefix at once.
  for n in $(seq $((wave * 200)) $((wave * 200 + 199))); do
    printf 'next\nurl = "%s/api/webhook/config"\nheader = "X-API-Key: %s_%s"\noutput = /dev/null\nwrite-out = "%%{http_code}\\n"\n' \
      "$base" "$prefix" "$(printf '%43s' "$n" | tr ' ' G)"
  done >"$work/wave.conf"
  curl -sS --parallel --parallel-max 200 -K "$work/wave.conf" >"$work/wave.codes" 2>/dev/null &
  attacker=$!
  # Long enough for the server to have read all 200, not to have hashed them all.
  sleep 1
  during+="$(first_request_ms "${bystanders[$((5 + wave))]}")"$'\n'
  wait "$attacker"
  [[ $(grep -cv '^401$' "$work/wave.codes" || true) -eq 0 ]] || fail "a wrong secret was not refused with 401"
done
lasted=$((SECONDS - started))
quiet_median=$(median <<<"$quiet")
during_median=$(median <<<"${during%$'\n'}")
echo "first requests (ms): quiet $(tr '\n' ' ' <<<"$quiet")(median $quiet_median); during 600 guesses $(tr '\n' ' ' <<<"${during%$'\n'}")(median $during_median)"
awk -v q="$quiet_median" -v d="$during_median" 'BEGIN { exit !(d < q + 100) }' \
  || fail "the guesses delayed other organisations' first requests by over 100 ms"

hashed=$(($(metric rejected) - rejected0))
budget=$((10 + lasted + 5))
echo "wrong secrets hashed: $hashed (budget $budget); throttled: $(metric throttled)"
((hashed <= budget)) || fail "$hashed wrong secrets were hashed (budget $budget)"
(($(metric throttled) > 0)) || fail "no guess was throttled"
# The real key is not locked out for longer than the budget takes to refill.
sleep 1.1
[[ $(curl -sS -o /dev/null -w '%{http_code}' -H "X-API-Key: $target" "$base/api/webhook/config") == 200 ]] \
  || fail "the real key is still refused after the budget refilled"
log "ok"
