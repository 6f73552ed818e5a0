"""A real SMTP server for custode's mailer tests (aiosmtpd), run as a child process.

Each accepted message is written whole to <out>/<n>.eml (written to a temporary name, then
renamed, so a reader never sees half a message). While the file <out>/refuse exists, every
message is refused with a transient 451, as a relay that is down for maintenance would; a
test deletes the file to let the server "recover".

With USER and PASSWORD, the server requires SMTP AUTH (PLAIN or LOGIN) with them before it
takes a message.

With CERT and KEY (PEM files) as well, it offers STARTTLS and requires it before AUTH.

usage: smtp_sink.py PORT OUT_DIR [USER PASSWORD [CERT KEY]]
"""

import asyncio
import os
import ssl
import sys
import uuid

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Sink:
    def __init__(self, out):
        self.out = out

    async def handle_DATA(self, server, session, envelope):
        if os.path.exists(os.path.join(self.out, "refuse")):
            # As a real relay words it, quoting the recipient (custode keeps it masked).
            return f"451 4.3.0 <{', '.join(envelope.rcpt_tos)}>: Try again later"
        name = uuid.uuid4().hex
        tmp = os.path.join(self.out, f".{name}.tmp")
        with open(tmp, "wb") as f:
            f.write(f"X-Envelope-To: {', '.join(envelope.rcpt_tos)}\r\n".encode())
            f.write(envelope.original_content or envelope.content)
        os.rename(tmp, os.path.join(self.out, f"{name}.eml"))
        return "250 OK"


def main():
    port = int(sys.argv[1])
    out = sys.argv[2]
    os.makedirs(out, exist_ok=True)
    auth = {}
    if len(sys.argv) >= 5:
        user, password = sys.argv[3].encode(), sys.argv[4].encode()

        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = (
                isinstance(auth_data, LoginPassword)
                and auth_data.login == user
                and auth_data.password == password
            )
            return AuthResult(success=ok, handled=False)

        # Plain-text AUTH only because this server listens on loopback for tests.
        auth = dict(authenticator=authenticator, auth_required=True, auth_require_tls=False)
    if len(sys.argv) == 7:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(sys.argv[5], sys.argv[6])
        auth.update(tls_context=context, require_starttls=True, auth_require_tls=True)
    controller = Controller(Sink(out), hostname="127.0.0.1", port=port, **auth)
    controller.start()
    print("ready", flush=True)
    try:
        asyncio.get_event_loop().run_forever()
    except KeyboardInterrupt:
        pass
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
