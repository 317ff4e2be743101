"""Access control.

Bound to loopback, the dashboard is open to this host's users (as any local tool is), but only
to requests that name this host in the Host header: a web page elsewhere cannot reach it through
DNS rebinding. Bound to anything else, every request needs the access token, sent as
`Authorization: Bearer TOKEN` or in the cookie that `?token=TOKEN` sets once (the redirect drops
the token from the address bar and history).

The token is made at the first non-loopback start, printed once, and kept in a file only its
owner can read (0600), next to the database unless settings.token_file says otherwise.

Changes (POST, PUT, PATCH, DELETE: acknowledging alerts, alert rules) must come from the
dashboard's own scripts, never from another site the browser visits: they need the header
`X-NetTally-Request: 1` (a page elsewhere can only send it after a CORS preflight, which this
server never grants), a same-origin `Origin` / `Sec-Fetch-Site` where the browser sends them,
and a JSON body. Otherwise 403 (415 for a body that is not JSON). The loopback Host check and
the token apply to them as to every request. With the setting read_only, every change is refused
(403) after those checks.

The server (web/server.py) also looks for the token in a request's raw headers
(`carries_token`), before the app sees it, only to serve requests that show it first.
"""
import hmac
import ipaddress
import os
import secrets
import stat
from pathlib import Path
from urllib.parse import urlencode

from flask import jsonify, make_response, redirect, request
from werkzeug.http import parse_cookie

from storage import postgres

COOKIE = "nettally_token"
WRITE_HEADER = "X-NetTally-Request"
CHANGE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


class TokenError(Exception):
    """The token file cannot be made or is not safe to trust."""


def is_loopback(host):
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def token_path(settings):
    if settings.token_file:
        return Path(settings.token_file)
    if postgres.is_url(settings.db):
        return Path("nettally.token")     # a server's database: the current folder, as the default database
    db = Path(settings.db)
    return db.with_name(db.stem + ".token")


def load_or_create_token(path, say=print):
    """The token in `path`, made (and announced through `say`) when the file does not exist."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        return _read_token(path)
    except OSError as e:
        raise TokenError(f"cannot create the access token file {path}: {e.strerror}") from None
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    say(f"access token (made now, kept in {path}, mode 0600): {token}")
    return token


def _read_token(path):
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as e:
        raise TokenError(f"cannot read the access token file {path}: {e.strerror}") from None
    with os.fdopen(fd) as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise TokenError(f"access token file {path} is not a regular file")
        if info.st_mode & 0o077:
            raise TokenError(f"access token file {path} is readable by others "
                             f"(mode {stat.S_IMODE(info.st_mode):04o}): chmod 600 it, or delete it for a new token")
        token = f.read().strip()
    if len(token) < 16:
        raise TokenError(f"access token file {path} holds no usable token (delete it for a new one)")
    return token


def carries_token(authorization, cookie, token):
    """Whether an Authorization header value or a Cookie header value (None: absent) carries `token`."""
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and _matches(value.strip(), token):
            return True
    return bool(cookie) and _matches(parse_cookie(cookie).get(COOKIE), token)


READ_ONLY_REFUSAL = "the dashboard is read-only (setting read_only): no changes"


def install(app, token, bind_host, read_only=False):
    """Adds the checks to `app`. token None: loopback mode (Host header check only). read_only:
    every change is refused with 403."""
    allowed_hosts = LOOPBACK_NAMES | {bind_host.lower().strip("[]")}

    @app.before_request
    def check_access():
        given = request.args.get("token")
        if given is not None:
            return _token_in_url(given, token)
        if token is None:
            host = _host_name(request.host or "")
            if host in allowed_hosts or is_loopback(host):
                return None
            return _refuse(403, "the dashboard answers only to requests addressed to this host")
        if _matches(_bearer() or request.cookies.get(COOKIE), token):
            return None
        return _refuse(401, "access token required: Authorization: Bearer TOKEN, or open /?token=TOKEN once")

    @app.before_request
    def check_change():        # after check_access: a request without the token is 401 first
        if request.method not in CHANGE_METHODS:
            return None
        if read_only:
            return _refuse(403, READ_ONLY_REFUSAL)
        return _cross_site_refusal()


def _cross_site_refusal():
    """None for a change the dashboard's own script may have sent, else the refusal."""
    if request.headers.get(WRITE_HEADER) != "1":
        return _refuse(403, f"changes need the header {WRITE_HEADER}: 1 (the dashboard sends it); "
                            "requests from other sites are refused")
    origin = request.headers.get("Origin")
    if origin is not None and origin.split("://", 1)[-1].lower() != (request.host or "").lower():
        return _refuse(403, "changes are accepted only from this dashboard's own pages (Origin differs)")
    if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
        return _refuse(403, "changes are accepted only from this dashboard's own pages (cross-site request)")
    if request.content_length or request.headers.get("Transfer-Encoding"):
        if request.mimetype != "application/json":
            return _refuse(415, "a change's body is JSON (Content-Type: application/json)")
    return None


def _token_in_url(given, token):
    if token is not None and not _matches(given, token):
        return _refuse(401, "wrong access token")
    rest = [(k, v) for k, v in request.args.items(multi=True) if k != "token"]
    response = redirect(request.path + ("?" + urlencode(rest) if rest else ""), code=303)
    if token is not None:
        response.set_cookie(COOKIE, token, httponly=True, samesite="Strict", path="/")
    return response


def _host_name(host_header):
    """'example:8321' -> 'example', '[::1]:8321' -> '::1' (lower case)."""
    if host_header.startswith("["):
        return host_header[1:].split("]", 1)[0].lower()
    return host_header.rsplit(":", 1)[0].lower()


def _bearer():
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def _matches(given, token):
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


def _refuse(status, message):
    if request.path.startswith("/api/"):
        response = jsonify(error=message)
    else:
        response = make_response(f"{status}: {message}\n")
        response.mimetype = "text/plain"
    response.status_code = status
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="nettally"'
    return response
