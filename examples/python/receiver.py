"""A webhook receiver that verifies Triggers' Standard Webhooks signature and timestamp.

    pip install standardwebhooks==1.1.0
    WEBHOOK_SECRET=whsec_... PORT=4000 python3 examples/python/receiver.py

Prints `verified <webhook-id> <type>` per accepted delivery and answers 204; a bad signature or
a timestamp more than 5 minutes off (the library's tolerance) answers 401. Deliveries are
at-least-once, so a repeated `webhook-id` is acknowledged again but processed only once.
"""

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

webhook = Webhook(os.environ["WEBHOOK_SECRET"])
seen = set()


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        try:
            # Verify the exact bytes received, before parsing them.
            event = webhook.verify(body, dict(self.headers))
        except WebhookVerificationError as e:
            print(f"refused: {e}", file=sys.stderr, flush=True)
            self.send_response(401)
            self.end_headers()
            return
        msg_id = self.headers["webhook-id"]
        if msg_id not in seen:
            seen.add(msg_id)
            print(f"verified {msg_id} {event['type']}", flush=True)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


port = int(os.environ.get("PORT", "4000"))
print(f"receiver listening on http://127.0.0.1:{port}/", file=sys.stderr, flush=True)
ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
