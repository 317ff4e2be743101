"""Alert events by e-mail: one message per event through an SMTP server (smtplib), sent from a
thread of its own with bounded retries.

`send` only puts the event in a bounded queue, so a slow or dead mail server never holds up
evaluation or capture; when the queue is full the oldest event waiting is given up (`dropped`).
Events below `smtp_min_severity` are not sent (`filtered`). TLS: implicit on port 465 (or
smtp_security = "tls"), otherwise STARTTLS when the server offers it; a password is sent only
over TLS unless smtp_security = "none" says the server is a plain relay on purpose.

Retries: connection errors, timeouts and temporary (4xx) replies are tried again `retries`
times, `backoff` 1, 2, 4, 8 s apart; permanent (5xx) replies, a refused login or a missing
STARTTLS are not. The password appears in no log line, error or status: every error text goes
through `_redact` first.
"""
import base64
import collections
import email.policy
import logging
import smtplib
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from alerts import messages
from alerts.rules import SEVERITIES

log = logging.getLogger("nettally.alerts")
SECURITY = ("auto", "starttls", "tls", "none")
SMTPS_PORT = 465
# Headers up to RFC 5322's 998 characters are not folded: Python folds a long Subject right after
# "Subject:", which readers show with a leading space. Subjects are at most 200 characters.
_POLICY = email.policy.default.clone(max_line_length=998)


@dataclass(frozen=True)
class MailConfig:
    host: str
    port: int = 587
    security: str = "auto"
    ca_file: str = ""
    user: str = ""
    password: str = field(default="", repr=False)
    sender: str = ""
    to: tuple = ()
    min_severity: str = "warning"

    @property
    def implicit_tls(self):
        return self.security == "tls" or (self.security == "auto" and self.port == SMTPS_PORT)

    @property
    def target(self):
        return f"{self.host}:{self.port}"

    @classmethod
    def from_settings(cls, settings):
        """The e-mail settings, None when smtp_host is empty; ValueError (one line, never the
        password) when they do not make a working configuration."""
        host = getattr(settings, "smtp_host", "")
        if not host:
            return None
        security, severity = settings.smtp_security.lower(), settings.smtp_min_severity.lower()
        if security not in SECURITY:
            raise ValueError(f"smtp_security is one of {', '.join(SECURITY)}, not {settings.smtp_security!r}")
        if severity not in SEVERITIES:
            raise ValueError(f"smtp_min_severity is one of {', '.join(SEVERITIES)}, not {settings.smtp_min_severity!r}")
        to = tuple(a for a in settings.smtp_to if a)
        if not to:
            raise ValueError("smtp_to names no address to send alerts to")
        password = settings.smtp_password
        if settings.smtp_password_file:
            try:
                with open(settings.smtp_password_file, encoding="utf-8") as f:
                    password = f.readline().rstrip("\r\n")
            except (OSError, UnicodeDecodeError) as e:
                reason = getattr(e, "strerror", None) or e.__class__.__name__
                raise ValueError(f"smtp_password_file {settings.smtp_password_file}: {reason}") from None
        if settings.smtp_user and not password:
            raise ValueError("smtp_user is set but no password (smtp_password_file or smtp_password)")
        sender = settings.smtp_from or f"nettally@{socket.gethostname()}"
        return cls(host, settings.smtp_port, security, settings.smtp_ca_file, settings.smtp_user,
                   password if settings.smtp_user else "", sender, to, severity)


class _Permanent(Exception):
    """A failure that trying again cannot mend (5xx reply, refused login, no STARTTLS)."""


class MailSender:
    def __init__(self, config, retries=4, backoff=1.0, timeout=10.0, max_waiting=1000):
        self.config = config
        self.retries, self.backoff, self.timeout = retries, backoff, timeout
        self.max_waiting = max_waiting
        self.waiting = collections.deque()
        self.delivered = self.failed = self.retried = self.dropped = self.filtered = 0
        self.last_error, self.last_error_at = None, None
        self._min_rank = SEVERITIES.index(config.min_severity)
        self._secrets = _secret_forms(config.user, config.password)
        self._wake = threading.Condition()
        self._stopping = False
        self._busy = False
        self._thread = threading.Thread(target=self._run, name="alert-mail", daemon=True)
        self._thread.start()

    # ---- the runner's side --------------------------------------------------------------------

    def send(self, event_id, payload):
        """Queues one event (the webhook's payload dict) for e-mail; never blocks."""
        severity = payload.get("severity", "warning")
        rank = SEVERITIES.index(severity) if severity in SEVERITIES else len(SEVERITIES)
        with self._wake:
            if rank < self._min_rank:
                self.filtered += 1
                return
            if len(self.waiting) >= self.max_waiting:
                self.waiting.popleft()
                self.dropped += 1
            self.waiting.append((event_id, payload))
            self._wake.notify()

    def idle(self):
        with self._wake:
            return not self.waiting and not self._busy

    def status(self):
        """Counts for storage.alert_log.save_delivery_status, and the last error (redacted)."""
        with self._wake:
            return {"target": self.config.target, "delivered": self.delivered, "failed": self.failed,
                    "retries": self.retried, "dropped": self.dropped, "filtered": self.filtered,
                    "waiting": len(self.waiting) + self._busy, "last_error": self.last_error,
                    "last_error_at": self.last_error_at}

    def close(self, timeout=10.0):
        """Sends what is waiting for up to `timeout` seconds, then stops."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._thread.join(timeout)

    # ---- the sender's thread ------------------------------------------------------------------

    def _run(self):
        while True:
            with self._wake:
                while not self.waiting and not self._stopping:
                    self._wake.wait()
                if not self.waiting:
                    return
                event_id, payload = self.waiting.popleft()
                self._busy = True
            try:
                self._deliver(event_id, payload)
            except Exception as e:       # a bug here must not end the thread and strand the queue
                self._failure(event_id, 0, e, final=True)
            finally:
                with self._wake:
                    self._busy = False

    def _deliver(self, event_id, payload):
        message = self.message(event_id, payload)
        for attempt in range(self.retries + 1):
            if attempt:
                with self._wake:       # a close() cuts the wait short but not the remaining tries
                    self._wake.wait_for(lambda: self._stopping, self.backoff * 2 ** (attempt - 1))
            try:
                refused = self._attempt(message)
            except _Permanent as e:
                self._failure(event_id, attempt, e, final=True)
                return
            except (smtplib.SMTPException, OSError) as e:
                last = attempt == self.retries
                self._failure(event_id, attempt, e, final=last)
                if not last:
                    with self._wake:
                        self.retried += 1
                continue
            if refused:
                log.warning("alerts: e-mail via %s, event %s: refused for %s", self.config.target, event_id,
                            self._redact(", ".join(sorted(refused))))
            with self._wake:
                self.delivered += 1
            return

    def _attempt(self, message):
        """One SMTP session that sends `message`; returns the recipients refused (some, not all)."""
        c = self.config
        context = ssl.create_default_context(cafile=c.ca_file or None)
        if c.implicit_tls:
            smtp = smtplib.SMTP_SSL(c.host, c.port, timeout=self.timeout, context=context)
        else:
            smtp = smtplib.SMTP(c.host, c.port, timeout=self.timeout)
        with smtp:
            smtp.ehlo()
            if not c.implicit_tls and c.security != "none":
                if smtp.has_extn("starttls"):
                    smtp.starttls(context=context)
                    smtp.ehlo()
                elif c.security == "starttls" or c.user:
                    raise _Permanent("the server offers no STARTTLS; the password is sent only over TLS "
                                     "(smtp_security)" if c.user else "the server offers no STARTTLS")
            try:
                if c.user:
                    _login(smtp, c.user, c.password)
                return smtp.send_message(message, from_addr=c.sender, to_addrs=list(c.to))
            except smtplib.SMTPRecipientsRefused as e:
                codes = [code for code, _ in e.recipients.values()]
                if all(400 <= code < 500 for code in codes):
                    raise
                raise _Permanent(f"every recipient refused: {_replies(e.recipients)}") from None
            except (smtplib.SMTPAuthenticationError, smtplib.SMTPNotSupportedError) as e:
                raise _Permanent(f"login refused: {e}") from None
            except smtplib.SMTPResponseException as e:
                if e.smtp_code >= 500:
                    raise _Permanent(f"{e.smtp_code} {_text(e.smtp_error)}") from None
                raise

    def _failure(self, event_id, attempt, error, final):
        text = self._redact(_describe(error))
        with self._wake:
            self.last_error, self.last_error_at = text, time.time()
            if final:
                self.failed += 1
        if final:
            log.warning("alerts: e-mail via %s, event %s, attempt %d: %s; given up (%d e-mails failed so far)",
                        self.config.target, event_id, attempt + 1, text, self.failed)
        else:
            log.warning("alerts: e-mail via %s, event %s, attempt %d: %s; trying again in %g s",
                        self.config.target, event_id, attempt + 1, text, self.backoff * 2 ** attempt)

    def _redact(self, text):
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def message(self, event_id, payload):
        """The e-mail of one event: subject and body from alerts.messages.mail_text."""
        subject, body = messages.mail_text(payload)
        m = EmailMessage(policy=_POLICY)
        m["Subject"] = subject
        m["From"] = self.config.sender
        m["To"] = ", ".join(self.config.to)
        m["Date"] = formatdate(localtime=False, usegmt=True)
        m["Message-ID"] = make_msgid("nettally")    # one per event: every attempt sends the same message
        m["X-NetTally-Event"] = messages.flat(event_id)
        m["X-NetTally-Severity"] = payload.get("severity", "")
        m.set_content(body)
        return m


def _login(smtp, user, password):
    """smtplib's login, which encodes credentials as ASCII only; others go as AUTH PLAIN in UTF-8
    (RFC 4616)."""
    if (user + password).isascii():
        smtp.login(user, password)
        return
    if "PLAIN" not in smtp.esmtp_features.get("auth", "").upper().split():
        raise _Permanent("the server offers no AUTH PLAIN, needed for a user name or password beyond ASCII")
    token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
    code, reply = smtp.docmd("AUTH", f"PLAIN {token}")
    if code != 235:
        raise smtplib.SMTPAuthenticationError(code, reply)


def _secret_forms(user, password):
    """The password as it may travel: plain, and base64 as AUTH LOGIN and AUTH PLAIN send it."""
    if not password:
        return ()
    forms = {password, base64.b64encode(password.encode()).decode(),
             base64.b64encode(f"\0{user}\0{password}".encode()).decode(),
             base64.b64encode(f"{user}\0{user}\0{password}".encode()).decode()}
    return tuple(sorted(forms, key=len, reverse=True))


def _text(reply):
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)


def _replies(recipients):
    return "; ".join(f"{addr}: {code} {_text(reply)}" for addr, (code, reply) in sorted(recipients.items()))


def _describe(error):
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        return f"recipients refused: {_replies(error.recipients)}"
    if isinstance(error, smtplib.SMTPResponseException):
        return f"{error.smtp_code} {_text(error.smtp_error)}"
    return " ".join(str(error).split()) or error.__class__.__name__
