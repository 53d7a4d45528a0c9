"""SMTP sink standing in for Mailpit (scripts/images/standins/mailpit).

SMTP on MP_SMTP_BIND_ADDR (any or no AUTH accepted, over plain text, as the chart configures
Mailpit), messages kept in memory (at most MP_MAX_MESSAGES) and written as files next to
MP_DATABASE, and on MP_UI_BIND_ADDR the part of Mailpit's HTTP API a tool may read:
GET /api/v1/messages (total + summaries), GET /api/v1/info, GET /livez.
"""

import asyncio
import email
import email.policy
import json
import os
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult


def hostport(value, default_port):
    host, _, port = value.rpartition(":")
    return host or "0.0.0.0", int(port or default_port)


SMTP_HOST, SMTP_PORT = hostport(os.environ.get("MP_SMTP_BIND_ADDR", "0.0.0.0:1025"), 1025)
UI_HOST, UI_PORT = hostport(os.environ.get("MP_UI_BIND_ADDR", "0.0.0.0:8025"), 8025)
MAX_MESSAGES = int(os.environ.get("MP_MAX_MESSAGES", "500"))
STORE = os.path.join(os.path.dirname(os.environ.get("MP_DATABASE", "/data/mailpit.db")), "messages")
os.makedirs(STORE, exist_ok=True)

lock = threading.Lock()
messages = []


class Sink:
    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        summary = {
            "ID": str(uuid.uuid4()),
            "From": {"Address": envelope.mail_from},
            "To": [{"Address": a} for a in envelope.rcpt_tos],
            "Subject": str(msg.get("Subject", "")),
            "MessageID": str(msg.get("Message-ID", "")),
            "Size": len(envelope.content),
        }
        with open(os.path.join(STORE, summary["ID"] + ".eml"), "wb") as f:
            f.write(envelope.content)
        with lock:
            messages.insert(0, summary)
            del messages[MAX_MESSAGES:]
        return "250 OK"


def accept_any(server, session, envelope, mechanism, auth_data):
    return AuthResult(success=True)


class Api(BaseHTTPRequestHandler):
    def reply(self, code, body, ctype="application/json"):
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        with lock:
            snapshot = list(messages)
        if path == "/livez":
            self.reply(200, "ok", "text/plain")
        elif path == "/api/v1/messages":
            self.reply(200, json.dumps({"total": len(snapshot), "count": len(snapshot), "messages": snapshot}))
        elif path == "/api/v1/info":
            self.reply(200, json.dumps({"Version": "stand-in", "Messages": len(snapshot)}))
        elif path == "/":
            self.reply(200, f"<p>SMTP sink (Mailpit stand-in): {len(snapshot)} messages</p>", "text/html")
        else:
            self.reply(404, json.dumps({"error": "not found"}))

    def log_message(self, fmt, *args):
        pass


def main():
    controller = Controller(
        Sink(),
        hostname=SMTP_HOST,
        port=SMTP_PORT,
        authenticator=accept_any,
        auth_required=False,
        auth_require_tls=False,
    )
    controller.start()
    print(f"mail sink: SMTP on {SMTP_HOST}:{SMTP_PORT}, API on {UI_HOST}:{UI_PORT}, files in {STORE}", flush=True)
    ThreadingHTTPServer((UI_HOST, UI_PORT), Api).serve_forever()


if __name__ == "__main__":
    asyncio.set_event_loop(asyncio.new_event_loop())
    main()
