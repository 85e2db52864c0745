#!/usr/bin/env bash
# The query data of sqlx's macros (`.sqlx/`, what builds read offline) against the migrations.
#
#   deploy/local/sqlx-check.sh           fail when `.sqlx/` differs from what the queries describe
#   deploy/local/sqlx-check.sh --write   regenerate `.sqlx/` (after adding or changing a query or a
#                                        migration; commit the result)
#
# Creates the database `triggers_sqlx` afresh on the server of $DATABASE_URL (else the test cluster
# of postgres.sh), applies the migrations `migrate` applies (apalis' own, which its setup runs,
# then ours; from the SQL files, so no code whose queries are not described yet must build first),
# and builds the crates that use the macros against it, online, with the macros writing one
# `query-<hash>.json` per query into a temporary directory, which must then hold exactly the files
# of `.sqlx/`. No sqlx-cli: this is what `cargo sqlx prepare` does, without installing it.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"

mode=check
case "${1:-}" in
  "") ;;
  --write) mode=write ;;
  *) log "usage: $0 [--write]"; exit 2 ;;
esac

server_url=${DATABASE_URL:-$(TRIGGERS_PG_NAME=test deploy/local/postgres.sh start)}
url="${server_url%/*}/triggers_sqlx"
psql_bin=$(pg_bin psql) || fail "psql not found (deploy/local/postgres.sh installs it)"
"$psql_bin" "$server_url" -qc "DROP DATABASE IF EXISTS triggers_sqlx WITH (FORCE)" -c "CREATE DATABASE triggers_sqlx" >/dev/null
apalis=$(cargo metadata -q --format-version 1 --locked | python3 -c '
import json, os, sys
packages = json.load(sys.stdin)["packages"]
print(next(os.path.dirname(p["manifest_path"]) for p in packages if p["name"] == "apalis-postgres"))
')
for migration in "$apalis"/migrations/*.sql migrations/*.sql; do
  PGOPTIONS="-c client_min_messages=warning" \
    "$psql_bin" "$url" -q -v ON_ERROR_STOP=1 --single-transaction -f "$migration" >/dev/null \
    || fail "applying $migration"
done

# The packages whose code uses the query macros (only they describe queries).
packages=()
for manifest in */Cargo.toml examples/*/Cargo.toml; do
  dir=${manifest%/Cargo.toml}
  if grep -rqsE 'sqlx::query(_as|_scalar)?!' "$dir/src" "$dir/tests" "$dir/benches" 2>/dev/null; then
    packages+=(-p "$(sed -n 's/^name = "\(.*\)"$/\1/p' "$manifest" | head -n1)")
  fi
done
[[ ${#packages[@]} -gt 0 ]] || fail "no package uses sqlx's query macros"

# A macro expands (and describes its query) only when its crate is compiled: make them recompile.
generated=$(mktemp -d)
trap 'rm -rf "$generated"' EXIT
for ((i = 1; i < ${#packages[@]}; i += 2)); do
  dir=$(grep -lE "^name = \"${packages[i]}\"$" */Cargo.toml examples/*/Cargo.toml | head -n1)
  find "${dir%/Cargo.toml}" -name '*.rs' -path '*/src/*' -exec touch {} +
done
SQLX_OFFLINE=false SQLX_OFFLINE_DIR=$generated DATABASE_URL=$url \
  cargo check -q "${packages[@]}" --all-targets --all-features
# apalis-postgres uses the macros too: when this build happened to compile it, its queries were
# written here as well; they are its own (it ships them), not ours.
for shipped in "$apalis"/.sqlx/query-*.json; do
  rm -f "$generated/${shipped##*/}"
done

if [[ $mode == write ]]; then
  mkdir -p .sqlx
  rm -f .sqlx/query-*.json
  cp "$generated"/query-*.json .sqlx/
  log "wrote $(find .sqlx -name 'query-*.json' | wc -l) query files to .sqlx/"
  exit 0
fi
if ! diff -r "$generated" .sqlx >&2; then
  fail ".sqlx/ is stale: run deploy/local/sqlx-check.sh --write and commit .sqlx/ (\`<\` lines are what the queries describe now, \`>\` what .sqlx/ holds)"
fi
log ".sqlx/ matches the queries ($(find .sqlx -name 'query-*.json' | wc -l) files)"
