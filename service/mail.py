"""Sending mail from a request: bounded in time and in number, all or nothing.

A request that sends mail holds its slot while it talks to the SMTP server.
Every conversation, connect to QUIT, has one deadline: the earlier of
SLUICE_MAIL_TIMEOUT_S and the request's own. smtplib's timeout bounds each
socket operation; a watchdog hangs up at the deadline, so a server that
answers slowly, a byte at a time, is cut off as surely as a silent one. At
most SLUICE_MAIL_CONCURRENCY conversations run per worker
(service/turns.py); beyond, 503 mail_busy.

`Mailer.connect` opens the conversation before the caller decides whether to
send: password recovery connects for every request, so an unreachable mail
server is a 503 whether or not the account exists, and the answer never
tells one from the other.
"""

from __future__ import annotations

import contextlib
import html
import logging
import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from email.utils import formataddr

from service.errors import MailBusy, MailNotConfigured, MailUnavailable
from service.settings import Settings
from service.turns import Turns

log = logging.getLogger("sluice.mail")


class _Watchdog:
    """Hangs up on the conversation at its deadline, waking any blocked read or write.

    A read cut short may still look like a reply ("220" of "220 ready"), so
    whatever the conversation did after the hang-up counts as failed.
    """

    def __init__(self, smtp: smtplib.SMTP, seconds: float) -> None:
        self._smtp = smtp
        self.fired = threading.Event()
        self._timer = threading.Timer(seconds, self._hang_up)
        self._timer.daemon = True
        self._timer.start()

    def _hang_up(self) -> None:
        self.fired.set()
        sock = self._smtp.sock
        if sock is not None:
            with contextlib.suppress(OSError):  # already closed
                sock.shutdown(socket.SHUT_RDWR)

    def check(self) -> None:
        if self.fired.is_set():
            raise TimeoutError("the mail deadline passed")

    def cancel(self) -> None:
        self._timer.cancel()


class Outbox:
    """An open SMTP conversation; `send` delivers one message on it."""

    def __init__(self, smtp: smtplib.SMTP, watchdog: _Watchdog) -> None:
        self._smtp = smtp
        self._watchdog = watchdog

    def send(self, message: EmailMessage) -> bool:
        """Deliver `message`: True if accepted, False if its recipient is refused for good.

        A permanent refusal of one address (unknown to the relay, or
        internationalized where the server cannot take it) is no outage:
        retrying cannot help, and a 503 only for existing accounts would tell
        which emails have one. It is logged, and the caller answers as usual.
        """
        try:
            self._smtp.send_message(message)
            self._watchdog.check()
        except (smtplib.SMTPRecipientsRefused, smtplib.SMTPNotSupportedError) as exc:
            log.warning("the SMTP server refused the recipient %s: %s", message["To"], exc)
            return False
        except (OSError, smtplib.SMTPException) as exc:
            log.warning("mail not accepted by the SMTP server: %s", exc)
            raise MailUnavailable() from exc
        return True


class Mailer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.turns = Turns(
            concurrency=settings.mail_concurrency,
            wait_s=settings.mail_wait_ms / 1000,
            busy=MailBusy,
        )
        # Loading the CA bundle takes tens of milliseconds: once, not per message.
        self._tls = ssl.create_default_context() if settings.smtp_tls or settings.smtp_ssl else None

    @property
    def configured(self) -> bool:
        return bool(self.settings.smtp_host and self.settings.emails_from_email)

    def require_configured(self) -> None:
        if not self.configured:
            raise MailNotConfigured()

    @contextmanager
    def connect(self, *, deadline: float | None = None) -> Iterator[Outbox]:
        """A conversation with the SMTP server, greeted and authenticated; QUIT on exit.

        503 mail_busy without a turn, 503 mail_unavailable when the server
        does not take part in time; nothing is sent unless `Outbox.send` is.
        """
        self.require_configured()
        s = self.settings
        left = s.mail_timeout_s
        if deadline is not None:
            left = min(left, deadline - time.monotonic())
        if left <= 0:
            raise MailUnavailable("The request ran out of time before the mail could be sent.")
        with self.turns.turn():
            smtp = (
                smtplib.SMTP_SSL(timeout=left, context=self._tls)
                if s.smtp_ssl
                else smtplib.SMTP(timeout=left)
            )
            watchdog = _Watchdog(smtp, left)
            try:
                try:
                    smtp.connect(s.smtp_host or "", s.smtp_port)
                    if s.smtp_tls:
                        smtp.starttls(context=self._tls)
                    if s.smtp_user:
                        password = s.smtp_password.get_secret_value() if s.smtp_password else ""
                        smtp.login(s.smtp_user, password)
                    watchdog.check()
                except (OSError, smtplib.SMTPException) as exc:
                    smtp.close()
                    log.warning("SMTP server %s:%s unusable: %s", s.smtp_host, s.smtp_port, exc)
                    raise MailUnavailable() from exc
                try:
                    yield Outbox(smtp, watchdog)
                finally:
                    try:
                        smtp.quit()
                    except (OSError, smtplib.SMTPException):
                        # A message accepted at the end of DATA is delivered;
                        # a lost QUIT changes nothing.
                        smtp.close()
            finally:
                watchdog.cancel()

    def message(self, *, to: str, subject: str, text: str, html_body: str) -> EmailMessage:
        s = self.settings
        message = EmailMessage()
        message["Subject"] = subject
        message["From"] = formataddr((s.emails_from_name, str(s.emails_from_email)))
        message["To"] = to
        message.set_content(text)
        message.add_alternative(html_body, subtype="html")
        return message


def reset_password_email(*, settings: Settings, email: str, token: str) -> tuple[str, str, str]:
    """(subject, text, html) of the password-recovery email, as the template words it."""
    link = f"{settings.frontend_host.rstrip('/')}/reset-password?token={token}"
    hours = settings.email_reset_token_expire_hours
    subject = f"{settings.emails_from_name} - Password recovery for user {email}"
    text = (
        f"We received a request to recover the password for user {email}.\n\n"
        f"Reset your password: {link}\n\n"
        f"The link expires in {hours} hours. If you did not ask for it, ignore this email.\n"
    )
    body = (
        f"<p>We received a request to recover the password for user "
        f"<strong>{html.escape(email)}</strong>.</p>"
        f'<p><a href="{html.escape(link)}">Reset your password</a></p>'
        f"<p>The link expires in {hours} hours. "
        "If you did not ask for it, ignore this email.</p>"
    )
    return subject, text, body
