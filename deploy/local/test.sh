#!/usr/bin/env bash
# The whole test suite: provisions a private Postgres (unless DATABASE_URL is set) and runs every
# test of the workspace against it. `.ci/run` calls exactly this.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"

if [[ -z ${DATABASE_URL:-} ]]; then
  DATABASE_URL=$(TRIGGERS_PG_NAME=test deploy/local/postgres.sh start)
  export DATABASE_URL
fi
echo "test.sh: DATABASE_URL=$DATABASE_URL" >&2

# Each test makes a database of its own: drop them when the run ends (pass or fail), and any
# an interrupted earlier run left.
psql_bin=$(pg_bin psql)
drop_test_databases() {
  "$psql_bin" "$DATABASE_URL" -Atqc \
    "SELECT format('DROP DATABASE IF EXISTS %I WITH (FORCE);', datname) FROM pg_database WHERE datname LIKE 'triggers_test_%'" \
    | "$psql_bin" "$DATABASE_URL" -q >/dev/null 2>&1 || true
}
drop_test_databases
trap drop_test_databases EXIT

# The console's browser test drives Debian's headless chromium through chromedriver: install both
# when missing (as postgres.sh installs Postgres), and make that test fail rather than skip.
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  echo "test.sh: installing Debian's chromium and chromium-driver (the console's browser test)" >&2
  sudo=""
  [[ $(id -u) -ne 0 ]] && sudo="sudo"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >&2
fi
CHROMIUM=$(command -v chromium)
CHROMEDRIVER=$(command -v chromedriver)
TRIGGERS_BROWSER_TESTS=required
export CHROMIUM CHROMEDRIVER TRIGGERS_BROWSER_TESTS

# Binaries the end-to-end tests start as real processes.
cargo build --workspace --bins

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  # One test at a time: each crate's integration tests are one binary, and the tests that read
  # metrics need the process-wide recorder to themselves (nextest gives every test a process).
  RUST_TEST_THREADS=1 cargo test --workspace --no-fail-fast "$@"
fi

# The README quickstart and the example receivers against a real instance, and the OpenAPI
# document validated and fuzzed against the service (whole suite only).
if [[ $# -eq 0 ]]; then
  deploy/local/integration-test.sh
  deploy/local/api-check.sh
  deploy/local/bench-smoke.sh
fi
