"""Access control, privilege drop and response hardening of the web side."""
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from settings import Settings
from common import ROOT, needs_root
from web_helpers import EVIL_PROCESS, NOW, free_port, get_json, listening_pid, make_db, uids_of, \
    wait_for
from web.app import CSP, create_app
from web.auth import TokenError, load_or_create_token

TOKEN = "t0ken-for-tests-0123456789"


@pytest.fixture
def db_path(tmp_path):
    return make_db(tmp_path / "sec.db")


def _app(path, **config):
    return create_app(test_config={"DB": path, "CLOCK": lambda: NOW, "POOL_SIZE": 2, **config})


# ---- the token file ---------------------------------------------------------------------------

def test_token_is_made_once_with_mode_0600(tmp_path):
    said = []
    path = tmp_path / "nettally.token"
    token = load_or_create_token(path, say=said.append)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(token) >= 40
    assert said == [f"access token (made now, kept in {path}, mode 0600): {token}"]
    assert load_or_create_token(path, say=said.append) == token and len(said) == 1


def test_a_token_file_others_can_read_is_refused(tmp_path):
    path = tmp_path / "loose.token"
    path.write_text(TOKEN)
    path.chmod(0o644)
    with pytest.raises(TokenError, match="readable by others"):
        load_or_create_token(path)
    link = tmp_path / "link.token"
    link.symlink_to(path)
    with pytest.raises(TokenError, match="cannot read"):
        load_or_create_token(link)


def test_non_loopback_host_makes_the_token_next_to_the_db(db_path, tmp_path):
    app = create_app(Settings(db=db_path, host="0.0.0.0"), test_config={"POOL_SIZE": 1})
    token_file = Path(db_path).with_name("sec.token")
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert app.config["TOKEN"] == token_file.read_text().strip()


# ---- requests with and without the token ----------------------------------------------------------

def test_without_the_token_everything_is_401(db_path):
    client = _app(db_path, TOKEN=TOKEN, BIND_HOST="0.0.0.0").test_client()
    for url in ("/api/current_usage", "/api/flows.csv", "/api/stream", "/", "/flows", "/static/js/common.js"):
        response = client.get(url)
        assert response.status_code == 401, url
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="nettally"'
    assert client.get("/api/hosts").get_json() == {
        "error": "access token required: Authorization: Bearer TOKEN, or open /?token=TOKEN once"}
    assert client.get("/api/hosts", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/api/hosts", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_token_in_the_url_sets_a_cookie_and_leaves_the_url(db_path):
    client = _app(db_path, TOKEN=TOKEN, BIND_HOST="0.0.0.0").test_client()
    assert client.get("/flows?token=wrong").status_code == 401
    response = client.get(f"/flows?port=53&token={TOKEN}")
    assert response.status_code == 303 and response.headers["Location"] == "/flows?port=53"
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith(f"nettally_token={TOKEN};") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert client.get("/flows").status_code == 200                 # the cookie does it now
    assert client.get("/api/flows?port=53").status_code == 200


def test_loopback_answers_only_to_its_own_names(db_path):
    client = _app(db_path, TOKEN=None).test_client()
    for host in ("127.0.0.1:8321", "localhost:8321", "[::1]:8321", "127.0.0.2"):
        assert client.get("/api/hosts", headers={"Host": host}).status_code == 200, host
    response = client.get("/api/hosts", headers={"Host": "rebound.example.com:8321"})
    assert response.status_code == 403 and "addressed to this host" in response.get_json()["error"]


# ---- hardening of every response ----------------------------------------------------------------

PAGES = ("/", "/hosts", "/hosts/10.0.0.1", "/processes", "/flows", "/history", "/alerts")


def test_pages_have_no_inline_script_and_a_strict_csp(db_path):
    client = _app(db_path, TOKEN=None).test_client()
    assert "'unsafe-inline'" not in CSP and "script-src 'self'" in CSP and "default-src 'none'" in CSP
    for url in PAGES + ("/api/hosts",):
        response = client.get(url)
        assert response.status_code == 200, url
        assert response.headers["Content-Security-Policy"] == CSP
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Frame-Options"] == "DENY"
        if url.startswith("/api"):
            continue
        html = response.get_data(as_text=True)
        scripts = re.findall(r"<script\b[^>]*>(.*?)</script>", html, re.S)
        assert scripts and all(body.strip() == "" for body in scripts), url
        assert all("src=" in tag for tag in re.findall(r"<script\b[^>]*>", html)), url
        assert not re.search(r"\son[a-z]+\s*=", html), url           # no inline event handlers
        assert "style=" not in html, url
        assert EVIL_PROCESS not in html                               # data reaches pages only via the API


def test_hostile_text_in_a_page_address_is_not_echoed(db_path):
    client = _app(db_path, TOKEN=None).test_client()
    response = client.get("/hosts/%3Cscript%3Ealert(1)%3C%2Fscript%3E")
    assert response.status_code == 404 and b"<script>alert" not in response.data


def test_vendored_chart_js_is_served_with_its_licence_recorded(db_path):
    client = _app(db_path, TOKEN=None).test_client()
    response = client.get("/static/vendor/chart.umd.min.js")
    assert response.status_code == 200 and response.data.startswith(b"/*!\n * Chart.js v4.")
    assert response.content_type == "text/javascript; charset=utf-8"
    assert client.get("/static/vendor/chart.umd.min.js", headers={"If-None-Match": response.headers["ETag"]}
                      ).status_code == 304
    readme = (ROOT / "web/static/vendor/README.md").read_text()
    assert "4.6.1" in readme and "MIT" in readme
    assert (ROOT / "web/static/vendor/chart.js-LICENSE.md").read_text().startswith("The MIT License")


# ---- the server process: privilege drop, real binds -----------------------------------------------

def _serve(argv, env=None):
    return subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})


def _stop(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        out, err = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return proc.returncode, out, err


@needs_root
def test_run_py_serve_drops_root_and_still_reads_the_db(db_path, run_py):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("SUDO_USER", "NETTALLY_WEB_USER")}
    proc = subprocess.Popen(run_py + ["serve", "--db", db_path, "--port", str(port)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        pid = wait_for(lambda: listening_pid(port), 20, "the dashboard to listen")
        assert pid == proc.pid
        status, body = wait_for(lambda: _answer(port), 20, "an answer")
        assert status == 200 and body["total"]["bytes"] == 7010
        assert all(uid != 0 for uid in uids_of(pid)), uids_of(pid)
        assert uids_of(pid)[0] == __import__("pwd").getpwnam("nobody").pw_uid
    finally:
        code, out, err = _stop(proc)
    assert code == 0 and err == ""
    assert f"dashboard: http://127.0.0.1:{port}/ (as user nobody; loopback only, no token)" in out


def _answer(port):
    try:
        return get_json(f"http://127.0.0.1:{port}/api/current_usage")
    except OSError:
        return None


@needs_root
def test_spawned_web_process_runs_unprivileged(db_path):
    from collector.web_process import spawn
    port = free_port()
    proc = spawn(Settings(db=db_path, port=port))
    try:
        pid = wait_for(lambda: listening_pid(port), 30, "the spawned dashboard to listen")
        assert pid == proc.pid
        wait_for(lambda: _answer(port), 20, "an answer")
        assert all(uid != 0 for uid in uids_of(pid)), uids_of(pid)
    finally:
        proc.terminate()
        proc.join(10)
    assert proc.exitcode == 0


@needs_root
@pytest.mark.skipif(shutil.which("ip") is None, reason="ip (iproute2) is not installed")
def test_non_loopback_bind_needs_the_token(db_path, tmp_path, run_py):
    """Bound to 0.0.0.0 inside a network namespace of this test (only its own lo): no token, 401."""
    ns = f"nt-web-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"], check=True)
        port, token_file = free_port(), tmp_path / "web.token"
        proc = _serve(["ip", "netns", "exec", ns] + run_py + ["serve", "--db", db_path, "--host", "0.0.0.0",
                                                              "--port", str(port)],
                      env={"NETTALLY_TOKEN_FILE": str(token_file)})
        try:
            wait_for(lambda: token_file.exists() and token_file.read_text().strip(), 20, "the token file")
            token = token_file.read_text().strip()
            probe = ("import sys, urllib.request, urllib.error\n"
                     "req = urllib.request.Request(sys.argv[1], headers=dict([sys.argv[2].split(': ', 1)]) "
                     "if len(sys.argv) > 2 else {})\n"
                     "try:\n    print(urllib.request.urlopen(req, timeout=5).status)\n"
                     "except urllib.error.HTTPError as e:\n    print(e.code)\n"
                     "except OSError:\n    print('down')\n")

            def status(*header):
                url = f"http://127.0.0.1:{port}/api/current_usage"
                return subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", probe, url, *header],
                                      capture_output=True, text=True, timeout=20).stdout.strip()
            wait_for(lambda: status() != "down", 20, "the dashboard in the namespace", interval=0.2)
            assert status() == "401"
            assert status("Authorization: Bearer not-the-token") == "401"
            assert status(f"Authorization: Bearer {token}") == "200"
            assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        finally:
            code, out, err = _stop(proc)
        assert code == 0, err
        assert f"access token (made now, kept in {token_file}, mode 0600): {token}" in out
    finally:
        subprocess.run(["ip", "netns", "delete", ns], check=False)


@pytest.mark.system
def test_spawn_returns_an_ended_process_when_the_port_is_taken(db_path, capfd):
    import socket
    from collector.web_process import spawn
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = spawn(Settings(db=db_path, port=port))
        assert not proc.is_alive() and proc.exitcode == 2
    assert f"run.py serve: cannot listen on 127.0.0.1:{port}: Address already in use" in capfd.readouterr().err
