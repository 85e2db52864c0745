#!/usr/bin/env bash
# A private Postgres cluster for development and tests, under target/.
#
#   deploy/local/postgres.sh [start]   start (or reuse) the cluster; print its DATABASE_URL
#   deploy/local/postgres.sh stop      stop it
#   deploy/local/postgres.sh url       print the DATABASE_URL without starting anything
#
# TRIGGERS_PG_NAME (default `dev`) picks the cluster (target/pg-<name>), TRIGGERS_PG_PORT its port
# (default 55432 for dev, 55433 for test, 55434 for bench). Installs Debian's `postgresql` package
# when initdb and pg_ctl are missing. Run as root, the cluster runs as the `postgres` user. Only the
# URL goes to stdout; progress goes to stderr.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

verb=${1:-start}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
name=${TRIGGERS_PG_NAME:-dev}
case "$name" in
  test) default_port=55433 ;;
  bench) default_port=55434 ;;
  *) default_port=55432 ;;
esac
port=${TRIGGERS_PG_PORT:-$default_port}
dir="$root/target/pg-$name"
# Run as root, the cluster belongs to the `postgres` user, which must be able to reach it: when
# the checkout sits somewhere it cannot traverse (e.g. under /root), use a private folder in /tmp.
if [[ $(id -u) -eq 0 ]] && id postgres >/dev/null 2>&1 && ! runuser -u postgres -- test -x "$root" 2>/dev/null; then
  dir="/tmp/triggers-pg-$name-$(printf '%s' "$root" | md5sum | cut -c1-12)"
fi
data="$dir/data"
db=triggers
user=triggers
url="postgres://$user@127.0.0.1:$port/$db"


ensure_installed() {
  if pg_bin initdb >/dev/null && pg_bin pg_ctl >/dev/null; then return 0; fi
  log "initdb/pg_ctl not found: installing Debian's postgresql package"
  local sudo=""
  [[ $(id -u) -ne 0 ]] && sudo="sudo"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
  pg_bin initdb >/dev/null && pg_bin pg_ctl >/dev/null || { log "postgresql install failed"; exit 1; }
}

# Run a Postgres tool as the cluster's owner (postgres when we are root).
as_owner() {
  if [[ $(id -u) -eq 0 ]]; then
    (cd / && runuser -u postgres -- "$@")
  else
    "$@"
  fi
}

running() {
  [[ -f $data/PG_VERSION ]] && as_owner "$(pg_bin pg_ctl)" -D "$data" status >/dev/null 2>&1
}

start() {
  ensure_installed
  local initdb pg_ctl psql
  initdb=$(pg_bin initdb); pg_ctl=$(pg_bin pg_ctl); psql=$(pg_bin psql)
  mkdir -p "$dir"
  if [[ $(id -u) -eq 0 ]]; then
    id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
    chown postgres "$dir"
  fi
  if [[ ! -f $data/PG_VERSION ]]; then
    log "initialising a cluster in $data"
    as_owner "$initdb" -D "$data" -U "$user" --auth=trust --encoding=UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
      || as_owner "$initdb" -D "$data" -U "$user" --auth=trust --encoding=UTF8 --locale=C >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; exit 1; }
  fi
  if running; then
    log "reusing the running cluster on port $port"
  else
    local extra=""
    if [[ $name == test ]]; then
      # Throwaway data: trade durability for speed.
      extra="-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    fi
    log "starting the cluster on 127.0.0.1:$port"
    as_owner "$pg_ctl" -D "$data" -l "$dir/server.log" -w -t 60 start \
      -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=500 -c shared_buffers=256MB $extra" >&2 \
      || { tail -n 30 "$dir/server.log" >&2; exit 1; }
  fi
  if ! "$psql" -h 127.0.0.1 -p "$port" -U "$user" -d postgres -Atqc "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1; then
    "$psql" -h 127.0.0.1 -p "$port" -U "$user" -d postgres -qc "CREATE DATABASE $db" >&2
  fi
  echo "$url"
}

stop() {
  if running; then
    as_owner "$(pg_bin pg_ctl)" -D "$data" -m fast -w stop >&2
  else
    log "not running"
  fi
}

case "$verb" in
  start) start ;;
  stop) stop ;;
  url) echo "$url" ;;
  *) log "usage: $0 [start|stop|url]"; exit 2 ;;
esac
