"""A real SMTP server for the notifier tests (aiosmtpd).

Stores every accepted message as <n>.eml in the given directory, written under a temporary
name and renamed, so a reader never sees half a file, and the client's address and port as
<n>.peer beside it (which connection carried it). Runs until killed.

    python3 smtp_sink.py --port 2525 --dir /tmp/mail
        [--auth USER:PASSWORD]          # require AUTH (PLAIN/LOGIN), allowed without TLS
        [--starttls CERT.pem KEY.pem]   # offer STARTTLS and refuse mail without it
        [--implicit-tls CERT.pem KEY.pem]  # TLS from the first byte (smtps)
        [--stall-first-data SECONDS]    # answer the first DATA late (a hanging relay)
        [--reject-recipients]           # refuse every RCPT with 550, echoing the address
                                        # in the spellings relays use
"""

import argparse
import asyncio
import logging
import itertools
import os
import signal
import ssl
import sys
import threading

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class MaildropHandler:
    def __init__(self, directory, stall_first_data, reject_recipients=False):
        self.directory = directory
        self.stall = stall_first_data
        self.reject_recipients = reject_recipients
        self.counter = itertools.count(1)
        self.lock = threading.Lock()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.reject_recipients:
            local, _, domain = address.rpartition("@")
            return (
                f"550 5.1.1 <{address.upper()}> ({address.lower()}, "
                f"{local}%40{domain}, \"{local}\"@{domain}): unknown user {local}"
            )
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            number = next(self.counter)
        if number == 1 and self.stall:
            await asyncio.sleep(self.stall)
        with open(os.path.join(self.directory, f"{number}.peer"), "w") as out:
            out.write(f"{session.peer[0]} {session.peer[1]}")
        final = os.path.join(self.directory, f"{number}.eml")
        partial = final + ".part"
        with open(partial, "wb") as out:
            out.write(envelope.original_content or envelope.content)
        os.replace(partial, final)
        return "250 2.0.0 stored"


def authenticator_for(user, password):
    def authenticate(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == user.encode()
            and auth_data.password == password.encode()
        )
        # handled=False: let aiosmtpd send the 235/535 reply itself.
        return AuthResult(success=ok, handled=False)

    return authenticate


def server_context(cert, key):
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--auth", metavar="USER:PASSWORD")
    parser.add_argument("--starttls", nargs=2, metavar=("CERT", "KEY"))
    parser.add_argument("--implicit-tls", nargs=2, metavar=("CERT", "KEY"))
    parser.add_argument("--stall-first-data", type=float, default=0)
    parser.add_argument("--reject-recipients", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    options = {}
    if args.auth:
        user, _, password = args.auth.partition(":")
        options.update(
            authenticator=authenticator_for(user, password),
            auth_required=True,
            auth_require_tls=False,
        )
    if args.starttls:
        options.update(tls_context=server_context(*args.starttls), require_starttls=True)
    if args.implicit_tls:
        options.update(ssl_context=server_context(*args.implicit_tls))

    controller = Controller(
        MaildropHandler(args.dir, args.stall_first_data, args.reject_recipients),
        hostname="127.0.0.1",
        port=args.port,
        **options,
    )
    controller.start()
    print(f"smtp sink listening on 127.0.0.1:{args.port}", flush=True)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    controller.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
