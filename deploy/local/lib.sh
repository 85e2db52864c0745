# Shell helpers the local scripts share. Source it after `set -euo pipefail`:
#
#   . "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# log() prefixes its messages with `$log_name` (default: the script's file name).

log() { echo "${log_name:-${0##*/}}: $*" >&2; }

# Log "FAILED: ..." and exit 1.
fail() { log "FAILED: $*"; exit 1; }

# The path of a Postgres tool (psql, pgbench, initdb, pg_ctl): on PATH, else Debian's
# /usr/lib/postgresql/<version>/bin; status 1 when there is none.
pg_bin() {
  local tool=$1 candidate
  if command -v "$tool" >/dev/null 2>&1; then command -v "$tool"; return 0; fi
  for candidate in /usr/lib/postgresql/*/bin/"$tool"; do
    [[ -x $candidate ]] && { echo "$candidate"; return 0; }
  done
  return 1
}

# Whether something accepts connections on PORT or HOST:PORT (default host 127.0.0.1).
port_busy() {
  local host=127.0.0.1 port=$1
  if [[ $1 == *:* ]]; then host=${1%:*}; port=${1##*:}; fi
  (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null
}

# A loopback port that was free a moment ago.
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# Wait until URL answers 2xx, for up to SECONDS (default 30). On timeout, log it (and print
# LOG_FILE, when given, to stderr) and return 1.
wait_ready() { # URL [SECONDS] [LOG_FILE]
  local url=$1 seconds=${2:-30} log_file=${3:-} i
  for ((i = 0; i < seconds * 10; i++)); do
    curl -fsS -o /dev/null "$url" 2>/dev/null && return 0
    sleep 0.1
  done
  [[ -n $log_file && -f $log_file ]] && cat "$log_file" >&2
  log "$url did not become ready in ${seconds}s"
  return 1
}
