#!/usr/bin/env bash
# Run Triggers locally: a private Postgres (unless DATABASE_URL is set), then one worker in the
# background and ingest in the foreground on 127.0.0.1:8080. Ctrl-C stops both.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"

if [[ -z ${DATABASE_URL:-} ]]; then
  DATABASE_URL=$(deploy/local/postgres.sh start)
  export DATABASE_URL
fi
# Local development delivers to webhooks on this machine.
export TRIGGERS_ALLOW_PRIVATE_WEBHOOKS=${TRIGGERS_ALLOW_PRIVATE_WEBHOOKS:-true}
export TRIGGERS_INGEST_ADDR=${TRIGGERS_INGEST_ADDR:-127.0.0.1:8080}
export TRIGGERS_WORKER_ADDR=${TRIGGERS_WORKER_ADDR:-127.0.0.1:9091}
profile=${TRIGGERS_PROFILE:-release}

cargo build --profile "$profile" --bins
bin="$root/target/$([[ $profile == dev ]] && echo debug || echo "$profile")"

"$bin/triggers-ingest" migrate
"$bin/triggers-worker" &
worker=$!
trap 'kill -TERM "$worker" 2>/dev/null || true; wait "$worker" 2>/dev/null || true' EXIT

base="http://$TRIGGERS_INGEST_ADDR"
cat >&2 <<MSG

  Triggers is starting.
    API:      $base
    Docs:     $base/docs   (OpenAPI: $base/openapi.json)
    Console:  $base/console   (sign in with an API key)
    Worker:   http://$TRIGGERS_WORKER_ADDR/health/ready
    Database: $DATABASE_URL

  Create your first organisation and API key:
    curl -s -X POST $base/api/keys/generate -H 'Content-Type: application/json' \\
         -d '{"organization_name": "Acme", "tier": "free"}'

  Point its webhook at your receiver (the answer holds the signing secret, whsec_...):
    curl -s -X POST $base/api/webhook/config -H 'Content-Type: application/json' -H "X-API-Key: \$KEY" \\
         -d '{"webhook_url": "http://127.0.0.1:4000/"}'

  Then send an event:
    curl -s -X POST $base/api/events -H 'Content-Type: application/json' -H "X-API-Key: \$KEY" \\
         -d '{"type": "user.created", "payload": {"id": 1}}'

  Or open the console with a link that signs in (the answer's url; it works once):
    curl -s -X POST $base/api/portal/sessions -H "X-API-Key: \$KEY"

  The README's Quickstart runs a receiver that verifies each delivery's signature
  (examples/ has it in Rust, Python and Node).

MSG
"$bin/triggers-ingest"
