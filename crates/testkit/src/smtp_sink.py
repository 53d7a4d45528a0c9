#!/usr/bin/env python3
"""jetmart SMTP sink: a real SMTP server (aiosmtpd) that keeps every message it accepts.

Each accepted message becomes one file in a Maildir (<maildir>/new/), written to tmp/ first and
renamed, so a reader never sees half a message. The file is the message exactly as received,
preceded by envelope headers:

    X-Jetmart-Envelope-From: <sender>
    X-Jetmart-Envelope-To: <recipient>        (one line per recipient)
    X-Jetmart-Auth-Login: <user>              (only if the client authenticated)

The mode file is read on every RCPT and DATA, so a test can switch behaviour between messages:
    accept         250 for everything (the default, also when the file is missing)
    tempfail       451 on RCPT TO
    reject         550 on RCPT TO
    tempfail-data  451 after DATA
    reject-data    550 after DATA

AUTH (PLAIN, LOGIN) is offered without TLS and any credentials are accepted: the sink stands in
for a relay, it does not check anyone.

Usage: smtp_sink.py --port PORT --maildir DIR [--host 127.0.0.1] [--mode-file FILE]
"""

import argparse
import asyncio
import os
import signal
import sys
import time

from aiosmtpd.smtp import SMTP, AuthResult

RESPONSES = {
    "tempfail": "451 4.3.0 jetmart sink: temporary failure (mode tempfail)",
    "reject": "550 5.7.1 jetmart sink: rejected (mode reject)",
    "tempfail-data": "451 4.3.0 jetmart sink: temporary failure (mode tempfail-data)",
    "reject-data": "550 5.7.1 jetmart sink: rejected (mode reject-data)",
}


class Sink:
    def __init__(self, maildir, mode_file):
        self.maildir = maildir
        self.mode_file = mode_file
        self.seq = 0
        for sub in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(maildir, sub), exist_ok=True)

    def mode(self):
        if not self.mode_file:
            return "accept"
        try:
            with open(self.mode_file, encoding="ascii") as f:
                return f.read().strip() or "accept"
        except FileNotFoundError:
            return "accept"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        mode = self.mode()
        if mode in ("tempfail", "reject"):
            return RESPONSES[mode]
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        mode = self.mode()
        if mode in RESPONSES:
            return RESPONSES[mode]
        self.seq += 1
        # time_ns first: names sort in arrival order.
        name = f"{time.time_ns()}.P{os.getpid()}Q{self.seq}.jetmart-smtp-sink"
        lines = [f"X-Jetmart-Envelope-From: {envelope.mail_from or ''}"]
        lines += [f"X-Jetmart-Envelope-To: {rcpt}" for rcpt in envelope.rcpt_tos]
        login = session.login_data
        if login:
            if isinstance(login, bytes):
                login = login.decode("utf-8", "replace")
            lines.append(f"X-Jetmart-Auth-Login: {login}")
        head = ("\r\n".join(lines) + "\r\n").encode("utf-8")
        tmp = os.path.join(self.maildir, "tmp", name)
        with open(tmp, "wb") as f:
            f.write(head)
            f.write(envelope.original_content)
        os.rename(tmp, os.path.join(self.maildir, "new", name))
        return f"250 2.0.0 OK: queued as {name}"


def accept_any(server, session, envelope, mechanism, auth_data):
    return AuthResult(success=True, auth_data=auth_data)


async def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--maildir", required=True)
    parser.add_argument("--mode-file")
    args = parser.parse_args()

    handler = Sink(args.maildir, args.mode_file)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(
            handler,
            hostname="jetmart-smtp-sink",
            enable_SMTPUTF8=True,
            authenticator=accept_any,
            auth_require_tls=False,
        ),
        host=args.host,
        port=args.port,
        reuse_address=True,
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"jetmart-smtp-sink: listening on {args.host}:{args.port}, maildir {args.maildir}",
          file=sys.stderr, flush=True)
    await stop.wait()
    server.close()


if __name__ == "__main__":
    asyncio.run(main())
