"""Alert e-mail against a real SMTP server on 127.0.0.1 (aiosmtpd, started by each test on a free
port): STARTTLS with a self-signed certificate made here, AUTH, and implicit TLS; the exact
messages received; retries after temporary refusals; a dead server leaves counted failures and
no password anywhere; min-severity filtering; the runner never waits for the mail server."""
import datetime
import email
import email.policy
import ipaddress
import logging
import socket
import threading

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from alerts.config import validate_rule
from alerts.mail import MailConfig, MailSender
from alerts.messages import payload
from alerts.service import AlertRunner
from common import wait_for
from records import Rollup
from settings import Settings
from storage import alert_log
from storage.db import connect
from storage.store import RollupStore
from web_helpers import free_port

pytestmark = pytest.mark.system          # servers and threads of its own
USER, PASSWORD = "alerts@example.test", "s3cret-Pa55word-\u00e9t\u00e9"
T = 1_700_035_200                        # a minute boundary


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """(cert.pem, key.pem): a self-signed certificate for 127.0.0.1, its own CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    folder = tmp_path_factory.mktemp("tls")
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    return str(folder / "cert.pem"), str(folder / "key.pem")


class Inbox:
    """aiosmtpd handler: keeps what it is sent; answers DATA with the replies in `refusals` first."""

    def __init__(self):
        self.mails, self.refusals, self.logins = [], [], []

    async def handle_DATA(self, server, session, envelope):
        if self.refusals:
            return self.refusals.pop(0)
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        tls = server.transport.get_extra_info("ssl_object") is not None
        self.mails.append((envelope.mail_from, list(envelope.rcpt_tos), message, tls))
        return "250 OK"


def authenticator(inbox):
    def check(server, session, envelope, mechanism, auth_data):
        ok = auth_data.login == USER.encode() and auth_data.password == PASSWORD.encode()
        inbox.logins.append((mechanism, ok))
        return AuthResult(success=ok)
    return check


@pytest.fixture
def smtp_server(certificate):
    """start(implicit=False): (inbox, port) of a server on 127.0.0.1 that offers STARTTLS and
    AUTH only over TLS (or speaks TLS from the start)."""
    import ssl
    started = []

    def start(implicit=False):
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(*certificate)
        inbox, port = Inbox(), free_port()
        tls = {"ssl_context": context} if implicit else {"tls_context": context}
        # aiosmtpd counts only STARTTLS as TLS for auth_require_tls: an implicit-TLS server must not ask
        controller = Controller(inbox, hostname="127.0.0.1", port=port, auth_required=True,
                                auth_require_tls=not implicit, authenticator=authenticator(inbox), **tls)
        controller.start()
        started.append(controller)
        return inbox, port
    yield start
    for controller in started:
        controller.stop()


def settings_for(port, certificate, **more):
    values = dict(smtp_host="127.0.0.1", smtp_port=port, smtp_ca_file=certificate[0], smtp_user=USER,
                  smtp_password=PASSWORD, smtp_from="nettally@probe.example", smtp_to=("noc@example.test",
                                                                                      "oncall@example.test"))
    values.update(more)
    return Settings(**values)


def event(severity="warning", action="opened", subject="10.0.0.1"):
    rule = validate_rule({"name": "lan-hour", "kind": "bytes", "threshold": "100 MB", "severity": severity})
    message = f"host {subject}: 150 MB in 1 h (limit 100 MB, rule lan-hour)"
    return (f"live-lan-hour-{subject}-{T}-{action}",
            payload(action, rule, subject, T + (600 if action == "closed" else 0), 150e6 if action == "opened" else 2e6,
                    7, message, T))


def test_starttls_auth_and_the_exact_message(smtp_server, certificate):
    inbox, port = smtp_server()
    sender = MailSender(MailConfig.from_settings(settings_for(port, certificate)), backoff=0.01)
    sender.send(*event("critical"))
    sender.send(*event("critical", "closed"))
    wait_for(lambda: sender.delivered == 2 and sender.idle(), 20, "two e-mails")
    sender.close()
    assert inbox.logins == [("PLAIN", True), ("PLAIN", True)]
    (frm, to, opened, tls), (_, _, closed, _) = inbox.mails
    assert (frm, to, tls) == ("nettally@probe.example", ["noc@example.test", "oncall@example.test"], True)
    assert opened["Subject"] == "[NetTally critical] host 10.0.0.1: 150 MB in 1 h (limit 100 MB, rule lan-hour)"
    assert (opened["From"], opened["To"]) == ("nettally@probe.example", "noc@example.test, oncall@example.test")
    assert opened["X-NetTally-Severity"] == "critical"
    assert opened["X-NetTally-Event"] == f"live-lan-hour-10.0.0.1-{T}-opened"
    assert opened.get_content().splitlines() == [
        "severity: critical", "event: opened", "rule: lan-hour (bytes, scope host)", "subject: 10.0.0.1",
        "value: 150 MB", "limit: 100 MB", "window: 1 h", "opened: 2023-11-15T08:00:00Z", "alert: 7",
        "message: host 10.0.0.1: 150 MB in 1 h (limit 100 MB, rule lan-hour)", "", "-- ",
        "NetTally (docs/ALERTS.md)"]
    assert closed["Subject"] == "[NetTally critical] over: lan-hour 10.0.0.1"
    assert closed.get_content().splitlines()[:10] == [
        "severity: critical", "event: closed", "rule: lan-hour (bytes, scope host)", "subject: 10.0.0.1",
        "value now: 2 MB", "limit: 100 MB", "window: 1 h", "opened: 2023-11-15T08:00:00Z",
        "closed: 2023-11-15T08:10:00Z", "alert: 7"]


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_implicit_tls_on_its_own_port(smtp_server, certificate):
    inbox, port = smtp_server(implicit=True)
    sender = MailSender(MailConfig.from_settings(settings_for(port, certificate, smtp_security="tls")), backoff=0.01)
    sender.send(*event())
    wait_for(lambda: sender.delivered == 1, 20, "the e-mail over implicit TLS")
    sender.close()
    assert inbox.mails[0][3] and inbox.logins == [("PLAIN", True)]


def test_a_server_refusing_the_first_attempts_gets_the_mail_after_retries(smtp_server, certificate, caplog):
    inbox, port = smtp_server()
    inbox.refusals = ["451 4.3.0 busy, try later", "421 4.3.2 going down"]
    sender = MailSender(MailConfig.from_settings(settings_for(port, certificate)), backoff=0.01)
    with caplog.at_level(logging.WARNING, "nettally.alerts"):
        sender.send(*event())
        wait_for(lambda: sender.delivered == 1, 20, "the e-mail after two refusals")
    sender.close()
    assert len(inbox.mails) == 1 and inbox.mails[0][2]["Subject"].startswith("[NetTally warning] host 10.0.0.1")
    assert (sender.retried, sender.failed) == (2, 0)
    lines = [r.getMessage() for r in caplog.records if r.name == "nettally.alerts"]
    assert [line.split(", attempt ")[1] for line in lines] == ["1: 451 4.3.0 busy, try later; trying again in 0.01 s",
                                                               "2: 421 4.3.2 going down; trying again in 0.02 s"]


def test_permanent_refusal_is_not_retried(smtp_server, certificate):
    inbox, port = smtp_server()
    inbox.refusals = ["554 5.7.1 rejected"]
    sender = MailSender(MailConfig.from_settings(settings_for(port, certificate)), backoff=0.01)
    sender.send(*event())
    wait_for(lambda: sender.failed == 1, 20, "the e-mail given up")
    sender.close()
    assert (sender.retried, sender.delivered, inbox.mails) == (0, 0, [])
    assert sender.status()["last_error"] == "554 5.7.1 rejected"


def test_a_dead_server_leaves_counted_failures_and_no_password_anywhere(tmp_path, certificate, caplog, capsys):
    with socket.socket() as s:      # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = settings_for(port, certificate, smtp_password="", smtp_password_file=str(tmp_path / "pw"))
    (tmp_path / "pw").write_text(PASSWORD + "\n")
    config = MailConfig.from_settings(settings)
    assert config.password == PASSWORD and PASSWORD not in repr(config)
    sender = MailSender(config, retries=2, backoff=0.01)
    with caplog.at_level(logging.DEBUG):
        for i in range(3):
            sender.send(*event(subject=f"10.0.0.{i}"))
        wait_for(lambda: sender.failed == 3, 20, "three e-mails given up")
    sender.close()
    status = sender.status()
    assert (status["delivered"], status["failed"], status["retries"], status["waiting"]) == (0, 3, 6, 0)
    assert "refused" in status["last_error"].lower()
    lines = [r.getMessage() for r in caplog.records]
    assert len([line for line in lines if "given up (" in line]) == 3
    assert lines[-1].endswith("given up (3 e-mails failed so far)")
    out, err = capsys.readouterr()
    for text in (*lines, out, err, repr(status), repr(settings)):
        assert PASSWORD not in text


def test_an_echoed_password_is_redacted(certificate, caplog):
    """A server (or a proxy) that repeats the credentials in its reply: the log and the status
    show *** instead."""
    import base64

    class Echo(Inbox):
        async def handle_DATA(self, server, session, envelope):
            plain = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()
            return f"451 4.7.0 not now {PASSWORD} {plain}"
    import ssl
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    inbox, port = Echo(), free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, tls_context=context, auth_required=True,
                            authenticator=authenticator(inbox))
    controller.start()
    try:
        sender = MailSender(MailConfig.from_settings(settings_for(port, certificate)), retries=1, backoff=0.01)
        with caplog.at_level(logging.WARNING, "nettally.alerts"):
            sender.send(*event())
            wait_for(lambda: sender.failed == 1, 20, "the e-mail given up")
        sender.close()
    finally:
        controller.stop()
    assert sender.status()["last_error"] == "451 4.7.0 not now *** ***"
    lines = [r.getMessage() for r in caplog.records if r.name == "nettally.alerts"]
    assert len(lines) == 2 and all(PASSWORD not in line and "*** ***" in line for line in lines)


def test_min_severity_filters_and_counts(smtp_server, certificate):
    inbox, port = smtp_server()
    sender = MailSender(MailConfig.from_settings(settings_for(port, certificate, smtp_min_severity="warning")),
                        backoff=0.01)
    for n, severity in enumerate(("info", "warning", "critical", "info")):
        sender.send(*event(severity, subject=f"10.0.0.{n}"))
    wait_for(lambda: sender.delivered == 2 and sender.idle(), 20, "the warning and critical e-mails")
    sender.close()
    assert [m["X-NetTally-Severity"] for _, _, m, _ in inbox.mails] == ["warning", "critical"]
    assert (sender.filtered, sender.dropped) == (2, 0)


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_no_password_over_a_server_without_starttls(certificate):
    inbox, port = Inbox(), free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, auth_required=True, auth_require_tls=False,
                            authenticator=authenticator(inbox))
    controller.start()
    try:
        sender = MailSender(MailConfig.from_settings(settings_for(port, certificate)), backoff=0.01)
        sender.send(*event())
        wait_for(lambda: sender.failed == 1, 20, "the e-mail given up")
        sender.close()
    finally:
        controller.stop()
    assert (inbox.logins, sender.retried) == ([], 0)
    assert "offers no STARTTLS" in sender.status()["last_error"]


@pytest.mark.parametrize("more, says", [
    ({"smtp_to": ()}, "smtp_to"),
    ({"smtp_min_severity": "loud"}, "smtp_min_severity is one of info, warning, critical"),
    ({"smtp_security": "ssl"}, "smtp_security is one of auto, starttls, tls, none"),
    ({"smtp_password": ""}, "no password"),
    ({"smtp_password_file": "/nonexistent/pw"}, "smtp_password_file /nonexistent/pw: No such file"),
])
def test_bad_settings_are_one_line_without_the_password(certificate, more, says):
    with pytest.raises(ValueError) as e:
        MailConfig.from_settings(settings_for(25, certificate, **more))
    assert says in str(e.value) and "\n" not in str(e.value) and PASSWORD not in str(e.value)


def test_the_queue_is_bounded_and_counts_what_it_drops(certificate):
    sender = MailSender(MailConfig.from_settings(settings_for(9, certificate)), retries=0, max_waiting=3)
    with sender._wake:
        sender._stopping = True          # nothing is sent: only the queue is looked at
        sender._wake.notify()
    sender._thread.join(10)
    for i in range(5):
        sender.send(*event(subject=f"10.0.0.{i}"))
    assert [e for e, _ in sender.waiting] == [f"live-lan-hour-10.0.0.{i}-{T}-opened" for i in (2, 3, 4)]
    assert sender.dropped == 2


def test_the_runner_mails_its_alerts_and_never_waits_for_a_hung_server(tmp_path, certificate):
    listener = socket.socket()           # accepts connections (the kernel's backlog) and never answers
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    rules = tmp_path / "alerts.toml"
    rules.write_text('[[rule]]\nname = "host-bytes-hour"\nkind = "bytes"\nthreshold = "100 MB"\nseverity = "critical"\n')
    path = str(tmp_path / "live.db")
    store = RollupStore(connect(path))
    settings = settings_for(port, certificate, alerts_config=str(rules), db=path)
    runner = AlertRunner(settings, path, clock=lambda: T + 60, start=False)
    runner.mail.backoff = 0.01
    store.apply([Rollup(T, [], {f"10.0.0.{i}": [150_000_000, 0, 1, 1] for i in range(1, 6)}, {}, {}, {}, {})])
    done = threading.Event()
    threading.Thread(target=lambda: (runner.step(T + 60), done.set()), daemon=True).start()
    try:
        assert done.wait(20)             # evaluated and stored while the mail server hangs
        opened = [a for a in alert_log.alert_list(store.con, state="open") if a["rule"] == "host-bytes-hour"]
        assert sorted(a["severity"] for a in opened) == ["critical"] * 5
        status = {s["channel"]: s for s in alert_log.delivery_status(store.con)}
        assert status["email"]["target"] == f"127.0.0.1:{port}" and status["email"]["waiting"] >= 1
    finally:
        listener.close()                 # the server dies: every attempt fails at once now
    wait_for(lambda: runner.mail.failed == 5, 60, "five e-mails given up")
    runner.close()
    status = alert_log.delivery_status(store.con)
    assert [(s["channel"], s["delivered"], s["failed"], s["waiting"]) for s in status] == [("email", 0, 5, 0)]
    assert PASSWORD not in repr(status)
    store.con.close()


def test_a_bad_mail_setting_leaves_alerts_on_and_says_why(tmp_path, certificate):
    path = str(tmp_path / "bad.db")
    connect(path).close()
    runner = AlertRunner(settings_for(25, certificate, smtp_to=(), db=path), path, clock=lambda: T, start=False)
    runner.step(T)
    assert runner.mail is None and runner.trackers
    [status] = alert_log.delivery_status(runner.con)
    assert status["channel"] == "email" and status["last_error"] == "e-mail off: smtp_to names no address to send alerts to"
    runner.close()


def test_webhook_status_shows_its_url_without_credentials():
    from alerts.webhook import WebhookSender
    sender = WebhookSender("https://user:pw@hooks.example:8443/nettally?token=abc#x", retries=0)
    sender.close()
    status = sender.status()
    assert status["target"] == "https://hooks.example:8443/nettally"
    assert (status["delivered"], status["failed"], status["retries"], status["dropped"]) == (0, 0, 0, 0)
