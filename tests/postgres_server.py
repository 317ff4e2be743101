"""A real PostgreSQL server for the tests: Debian's binaries, a cluster in a temporary directory
made by `initdb` as the `postgres` user, listening on 127.0.0.1 on a free port, password
authentication over TCP. Started once per test session (tests/test_postgres.py), stopped and
removed at its end. Every test makes a database of its own on it."""
import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid

SUPERUSER, PASSWORD = "postgres", "nettally-test"


def why_not():
    """Why no server can be started here ('' if one can)."""
    if os.geteuid() != 0:
        return "PostgreSQL tests run the server as the postgres user: run them as root (make test)"
    if not _bin("initdb"):
        return "no PostgreSQL server binaries (tools/system-deps.sh installs Debian's postgresql as root)"
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return "no postgres user (Debian's postgresql package makes it)"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (requirements.txt)"
    return ""


def _bin(name):
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else None


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="nettally-pg-")
        shutil.chown(self.dir, "postgres")
        self.data, self.port = os.path.join(self.dir, "data"), _free_port()
        pwfile = os.path.join(self.dir, "pw")
        with open(pwfile, "w") as f:
            f.write(PASSWORD + "\n")
        shutil.chown(pwfile, "postgres")
        self._as_postgres(_bin("initdb"), "-D", self.data, "-U", SUPERUSER, "--pwfile", pwfile,
                          "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync")
        self.start()

    def _as_postgres(self, *argv, timeout=120):
        subprocess.run(["runuser", "-u", "postgres", "--", *argv], check=True, timeout=timeout,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=self.dir)

    def start(self):
        # fsync off: the tests' crash is a stopped server, not a lost machine
        self._as_postgres(_bin("pg_ctl"), "-D", self.data, "-w", "-t", "60", "-l", os.path.join(self.dir, "log"),
                          "-o", f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} -c fsync=off",
                          "start")

    def stop(self):
        self._as_postgres(_bin("pg_ctl"), "-D", self.data, "-w", "-t", "60", "-m", "fast", "stop")

    def url(self, db="postgres", user=SUPERUSER, password=PASSWORD):
        return f"postgresql://{user}:{password}@127.0.0.1:{self.port}/{db}"

    def new_database(self):
        """A fresh, empty database's URL."""
        import psycopg
        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.url(), autocommit=True) as con:
            con.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def close(self):
        try:
            self.stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def throwaway_database(prog):
    """For the benchmarks (bench/fleet*.py): a new database on a server of its own, gone after;
    without what a server needs, the program ends with one line saying why."""
    problem = why_not()
    if problem:
        raise SystemExit(f"{prog}: {problem}")
    server = Server()
    try:
        yield server.new_database()
    finally:
        server.close()
