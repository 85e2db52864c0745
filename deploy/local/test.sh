#!/usr/bin/env bash
# The whole test suite: provisions a private Postgres (unless DATABASE_URL is set) and runs every
# test of the workspace against it. `.ci/run` calls exactly this.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"

if [[ -z ${DATABASE_URL:-} ]]; then
  DATABASE_URL=$(TRIGGERS_PG_NAME=test deploy/local/postgres.sh start)
  export DATABASE_URL
fi
echo "test.sh: DATABASE_URL=$DATABASE_URL" >&2

# Each test makes a database of its own: drop them when the run ends (pass or fail), and any
# an interrupted earlier run left.
psql_bin=$(command -v psql || ls /usr/lib/postgresql/*/bin/psql | head -n 1)
drop_test_databases() {
  "$psql_bin" "$DATABASE_URL" -Atqc \
    "SELECT format('DROP DATABASE IF EXISTS %I WITH (FORCE);', datname) FROM pg_database WHERE datname LIKE 'triggers_test_%'" \
    | "$psql_bin" "$DATABASE_URL" -q >/dev/null 2>&1 || true
}
drop_test_databases
trap drop_test_databases EXIT

# Binaries the end-to-end tests start as real processes.
cargo build --workspace --bins

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi

# The README quickstart and the example receivers against a real instance, and the OpenAPI
# document validated and fuzzed against the service (whole suite only).
if [[ $# -eq 0 ]]; then
  deploy/local/integration-test.sh
  deploy/local/api-check.sh
  deploy/local/bench-smoke.sh
fi
