"""Dashboard pages. Each is a template shell; its script in web/static/js fills it from the API,
writing text with textContent only, so nothing from the wire or a process table is ever parsed
as HTML. The templates themselves hold no data but validated addresses (Jinja autoescapes them
anyway)."""
import hashlib
import ipaddress
import mimetypes
from pathlib import Path

from flask import Blueprint, Response, abort, current_app, render_template, request

from names.classes import CLASSES

bp = Blueprint("pages", __name__)
STATIC_DIR = Path(__file__).parent / "static"


class StaticFiles:
    """web/static read into memory when the app is built: the server keeps serving them after it
    gave up root, even from a checkout the unprivileged user cannot read (under /root, say)."""

    def __init__(self, root=STATIC_DIR):
        self.files = {}
        for path in sorted(root.rglob("*")):
            if path.is_file() and path.suffix in (".js", ".css", ".png", ".svg", ".md"):
                data = path.read_bytes()
                kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
                if kind.startswith("text/") or kind == "application/javascript":
                    kind += "; charset=utf-8"
                self.files[path.relative_to(root).as_posix()] = (data, kind, hashlib.sha256(data).hexdigest()[:16])

    def response(self, name):
        found = self.files.get(name)
        if found is None:
            abort(404)
        data, kind, etag = found
        if request.if_none_match.contains(etag):
            return Response(status=304, headers={"ETag": f'"{etag}"'})
        return Response(data, content_type=kind, headers={"ETag": f'"{etag}"', "Cache-Control": "no-cache"})


@bp.get("/static/<path:name>")
def static(name):
    return current_app.extensions["nettally.static"].response(name)

# (endpoint, label, whether the page shows a time range: its link then carries the range)
NAV = (("pages.overview", "Overview", True), ("pages.hosts", "Hosts", True), ("pages.processes", "Processes", True),
       ("pages.flows", "Flows", True), ("pages.history", "History", True), ("pages.volumes", "Volumes", False),
       ("pages.alerts", "Alerts", True), ("pages.agents", "Agents", False))


def _page(name, charts=False, **context):
    return render_template(f"{name}.html", page=name, nav=NAV, script=name, charts=charts, **context)


def not_found_page(message="There is no page at this address."):
    """The styled 404 page (web/app.py answers every unknown page path with it)."""
    return render_template("error.html", page="", nav=NAV, script=None, status=404, title="Page not found",
                           message=message, path=request.path), 404


@bp.get("/favicon.ico")
def favicon():
    return current_app.extensions["nettally.static"].response("favicon.svg")


@bp.get("/")
def overview():
    return _page("overview", charts=True)


@bp.get("/hosts")
def hosts():
    return _page("hosts")


@bp.get("/hosts/<ip>")
def host(ip):
    try:
        ip = str(ipaddress.ip_address(ip))
    except ValueError:
        return not_found_page(f"“{ip}” is not an IP address, so there is no host page for it.")
    return render_template("host.html", page="hosts", nav=NAV, script="host", charts=True, ip=ip)


@bp.get("/processes")
def processes():
    return _page("processes")


@bp.get("/flows")
def flows():
    return _page("flows", classes=CLASSES)


@bp.get("/history")
def history():
    return _page("history", charts=True)


@bp.get("/volumes")
def volumes():
    return _page("volumes")


@bp.get("/alerts")
def alerts():
    return _page("alerts")


@bp.get("/agents")
def agents():
    return _page("agents")
