"""A webhook receiver for tests/suite/e2e/webhooks.rs that checks every request with the Standard Webhooks
reference library (PyPI `standardwebhooks`): an implementation independent of the service's
signer, with its own parsing of the secret, the headers and the timestamp tolerance.

Appends one JSON line per request to --log (written and flushed under a lock, so a reader sees
whole lines): {"path", "id", "verified", "status", "type", "data", "signatures"}.
Answers 204 to a request that verifies, 401 to one that does not. With --busy N, the first N
requests are answered 503 with a Retry-After header (--retry-after: "120" for delay-seconds, or
"date:+90" for an HTTP-date 90 seconds after the answer's own Date header) and logged with
"accepted": false. Runs until killed.

    python3 webhook_receiver.py --port 7601 --secret whsec_... --log /tmp/hooks.jsonl
"""

import argparse
import email.utils
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--busy", type=int, default=0)
    parser.add_argument("--retry-after", default="")
    args = parser.parse_args()
    busy = [args.busy]

    verifier = Webhook(args.secret)
    lock = threading.Lock()
    log = open(args.log, "a", encoding="utf-8")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers.get("content-length", "0"))
            body = self.rfile.read(length)
            headers = {name.lower(): value for name, value in self.headers.items()}
            record = {
                "path": self.path,
                "id": headers.get("webhook-id"),
                "signatures": len(headers.get("webhook-signature", "").split(" ")),
            }
            try:
                payload = verifier.verify(body, headers)
                record.update(verified=True, status=204, type=payload.get("type"),
                              data=payload.get("data"), timestamp=payload.get("timestamp"))
            except (WebhookVerificationError, ValueError) as error:
                record.update(verified=False, status=401, error=str(error))
            with lock:
                refuse = busy[0] > 0
                if refuse:
                    busy[0] -= 1
                    record.update(status=503)
                log.write(json.dumps(record) + "\n")
                log.flush()
            if refuse:
                now = time.time()
                self.send_response_only(503)
                self.send_header("date", email.utils.formatdate(now, usegmt=True))
                spec = args.retry_after
                if spec.startswith("date:+"):
                    spec = email.utils.formatdate(now + int(spec[6:]), usegmt=True)
                self.send_header("retry-after", spec)
            else:
                self.send_response(record["status"])
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *_):
            pass

    # The default accept backlog (5) drops SYNs of a burst of parallel deliveries: each then
    # waits a 1 s retransmit, which would measure the kernel, not the service.
    ThreadingHTTPServer.request_queue_size = 256
    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
