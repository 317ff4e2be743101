"""Settings: every knob declared once (name, default, help). Precedence, highest first:
command line > environment (NETTALLY_<NAME>) > config file (TOML, --config) > default.

Only run.py builds a Settings (via `build`); everything else receives it.
"""
import os
import socket
import tomllib
from dataclasses import dataclass, field, fields, replace


def _setting(default, help, **kw):
    return field(default=default, metadata={"help": help, **kw})


@dataclass(frozen=True)
class Settings:
    db: str = _setting("nettally.db", "SQLite database file")
    db_group: str = _setting("", "group that may read the database: it and its -wal and -shm are made 0640 and that group's (not the group NetTally runs as); empty: 0600, owner only")
    interfaces: tuple = _setting((), "interfaces to capture on (-i, repeatable); default: every interface that is up")
    bpf: str = _setting("", "BPF capture filter (-f), compiled by libpcap through scapy")
    host: str = _setting("127.0.0.1", "address the dashboard binds to; other than loopback needs the access token")
    port: int = _setting(8321, "dashboard / API port")
    count: int = _setting(0, "stop the capture after this many frames (-c); 0: no limit")
    duration: float = _setting(0.0, "stop the capture after this many seconds; 0: no limit")
    flush_interval: float = _setting(2.0, "seconds between flow-table drains to the database (bounds loss on a crash)")
    idle_timeout: float = _setting(120.0, "seconds without a packet after which a flow record ends")
    active_timeout: float = _setting(1800.0, "seconds after which a long flow's record is cut and a new one begins")
    max_flows: int = _setting(500_000, "flows held in memory; beyond it the least recently active are written out")
    ring_mb: int = _setting(64, "size of the kernel capture ring per interface, MiB (the pcap backend's kernel buffer)")
    capture_backend: str = _setting("auto", "how frames are captured: ring (Linux's AF_PACKET TPACKET_V3 ring), pcap (libpcap through scapy: Npcap on Windows, BPF on macOS), auto (ring on Linux, pcap elsewhere)")
    retention_seconds: float = _setting(900.0, "seconds the 1-second interface points (live view) are kept")
    retention_minutes: float = _setting(48.0, "hours the 1-minute rollups are kept")
    retention_hours: float = _setting(90.0, "days the 1-hour rollups are kept")
    retention_days: float = _setting(730.0, "days the 1-day rollups are kept")
    retention_flows: float = _setting(90.0, "days flow records (and every tier of per-flow rollups) are kept")
    retention_iface_minutes: float = _setting(35.0, "days the 1-minute interface rollups are kept (a billing month's 95th percentile; never less than retention_minutes)")
    maintenance_interval: float = _setting(60.0, "seconds between rounds of tier building, retention and WAL checkpoint")
    writer_backlog_rows: int = _setting(2_000_000, "rows of counts held in memory while the database cannot be written (disk full, read-only)")
    alerts_config: str = _setting("", "TOML file of alert rules; empty: the built-in rules (docs/ALERTS.md)")
    new_device_learning: float = _setting(86_400.0, "seconds after the first live start during which new-device alerts only learn (what is normal here)")
    webhook_url: str = _setting("", "URL that receives every alert event as a JSON POST; empty: no webhook")
    smtp_host: str = _setting("", "mail server that alert e-mails go through; empty: no e-mail (docs/ALERTS.md)")
    smtp_port: int = _setting(587, "mail server port; 465 means implicit TLS (smtps) when smtp_security is auto")
    smtp_security: str = _setting("auto", "auto (implicit TLS on port 465, else STARTTLS when the server offers it, required to send a password), starttls (required), tls (implicit), none (plain: a relay on this host)")
    smtp_ca_file: str = _setting("", "PEM file of the CA that signed the mail server's certificate; empty: the system's trusted CAs")
    smtp_user: str = _setting("", "user name to log in to the mail server; empty: no login")
    smtp_password: str = field(default="", repr=False, metadata={"help": "password for smtp_user (smtp_password_file keeps it out of the config file); never logged"})
    smtp_password_file: str = _setting("", "file whose first line is the password for smtp_user (read at start, as root); overrides smtp_password")
    smtp_from: str = _setting("", "From address of alert e-mails; empty: nettally@ and this host's name")
    smtp_to: tuple = _setting((), "addresses alert e-mails go to (comma-separated in the environment)")
    smtp_min_severity: str = _setting("warning", "least severity an alert needs to be e-mailed: info, warning or critical")
    token_file: str = _setting("", "access token file for a non-loopback --host (made at first start, mode 0600); default: next to the database, DB name with .token")
    web_user: str = _setting("", "user the web server runs as when started as root; empty: the invoking SUDO_USER, else nobody")
    web_max_connections: int = _setting(1000, "open dashboard connections at most; beyond it a new one replaces the oldest idle one without the token (docs/DEPLOY.md)")
    web_max_per_client: int = _setting(100, "open dashboard connections per client address (IPv6: per /64) at most; 0: no cap of its own (behind a reverse proxy)")
    web_request_timeout: float = _setting(10.0, "seconds a dashboard connection without the token may take to send a complete request")
    web_sse_slots: int = _setting(8, "live streams (/api/stream) open at once; more get 503 with Retry-After")
    read_only: bool = _setting(False, "the dashboard and API refuse every change (alert rules, acknowledgements) with 403")
    attribution: str = _setting("auto", "process attribution: auto (Linux: netlink socket table + kernel socket events; elsewhere psutil), proc (Linux socket table, polling only), psutil (portable polling), off")
    names: bool = _setting(True, "name flows and hosts: apps, server names, services, classes, host names (docs/NAMES.md); false: counts only")
    tcp_health: bool = _setting(True, "TCP health per flow: handshake RTT, running RTT, retransmissions, out-of-order segments, zero windows, resets (docs/HEALTH.md); false: not measured")
    reverse_dns: bool = _setting(False, "ask the host's resolver for names of addresses the wire did not name (at most 10 lookups a second; live capture only)")
    services_file: str = _setting("", "TOML file of service rules that extend or override names/services.toml (docs/NAMES.md)")
    classes_file: str = _setting("", "TOML file of traffic-class rules that come before names/classes.toml's (docs/NAMES.md)")
    max_names: int = _setting(100_000, "host names (address -> name learnt on the wire) held in memory")
    agent: str = _setting("", "the name this collector's counts and status are kept under when several write into one database (the agents page, /api/agents); empty: this host's name")
    config: str = _setting("", "TOML config file (keys are these setting names)")


NAMES = tuple(f.name for f in fields(Settings))
DEFAULTS = Settings()        # the declared defaults, for the layers that may read them (not storage)


def help_of(name):
    return Settings.__dataclass_fields__[name].metadata["help"]


def _coerce(name, value):
    default = Settings.__dataclass_fields__[name].default
    if isinstance(default, tuple):
        if isinstance(value, str):
            return tuple(v for v in value.replace(",", " ").split() if v)
        return tuple(value)
    if isinstance(default, bool):
        return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")
    return type(default)(value)


def build(cli: dict, environ=None) -> Settings:
    """Settings from command-line values (None = not given), the environment and the config file.
    Raises ValueError with a one-line message on a bad value or an unreadable config file."""
    environ = os.environ if environ is None else environ
    values = {}
    config_path = cli.get("config") or environ.get("NETTALLY_CONFIG", "")
    if config_path:
        try:
            with open(config_path, "rb") as f:
                loaded = tomllib.load(f)
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ValueError(f"config file {config_path}: {e}") from None
        unknown = set(loaded) - set(NAMES)
        if unknown:
            raise ValueError(f"config file {config_path}: unknown setting {sorted(unknown)[0]!r}")
        values.update(loaded)
    for name in NAMES:
        env = environ.get(f"NETTALLY_{name.upper()}")
        if env is not None:
            values[name] = env
    if "web_user" not in values and environ.get("SUDO_USER"):
        values["web_user"] = environ["SUDO_USER"]   # under sudo the dashboard runs as who asked
    values.update({k: v for k, v in cli.items() if v is not None and k in NAMES})
    try:
        built = Settings(**{k: _coerce(k, v) for k, v in values.items()})
    except (TypeError, ValueError) as e:
        raise ValueError(f"bad setting: {e}") from None
    for name, allowed in _CHOICES.items():
        if getattr(built, name) not in allowed:
            raise ValueError(f"bad setting: {name} must be one of {', '.join(allowed)}, not {getattr(built, name)!r}")
    if len(built.agent) > 64 or not built.agent.isprintable():
        raise ValueError("bad setting: agent must be at most 64 printable characters")
    if not built.agent:               # this host's name: what its counts are kept under
        built = replace(built, agent=(socket.gethostname() or "local")[:64])
    for name, (lo, hi) in _RANGES.items():
        value = getattr(built, name)
        if not lo <= value <= hi:
            raise ValueError(f"bad setting: {name} must be between {lo} and {hi}, not {value}")
    return built


# Bounds a value must lie in (inclusive). A port past 65535 would wrap; a huge ring would ask the
# kernel for more memory than the machine has.
_RANGES = {
    "port": (1, 65535), "count": (0, 2 ** 62), "duration": (0, 10 ** 9), "flush_interval": (0.05, 3600),
    "idle_timeout": (1, 10 ** 7), "active_timeout": (1, 10 ** 8), "max_flows": (1, 10 ** 8), "ring_mb": (1, 4096),
    "retention_seconds": (60, 10 ** 9), "retention_minutes": (1, 10 ** 6), "retention_hours": (1, 10 ** 6),
    "retention_days": (1, 10 ** 6), "retention_flows": (1, 10 ** 6), "retention_iface_minutes": (1, 10 ** 6), "maintenance_interval": (1, 86400),
    "writer_backlog_rows": (1000, 10 ** 9), "max_names": (1, 10 ** 8),
    "new_device_learning": (0, 10 ** 9),
    "smtp_port": (1, 65535),
    "web_max_connections": (16, 10 ** 6), "web_max_per_client": (0, 10 ** 6), "web_request_timeout": (1, 3600),
    "web_sse_slots": (1, 64),
}

# Settings that name one of a few ways of working.
_CHOICES = {"capture_backend": ("auto", "ring", "pcap")}
