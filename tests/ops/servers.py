"""Real servers for the operations tests: PostgreSQL, `mlflow server` and `prefect server start`, each a child
process on 127.0.0.1 and a free port, living in a temp dir and stopped by the test that started it."""

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from glob import glob
from pathlib import Path

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """A child process in its own session, so stopping it also stops what it spawned (workers, postgres)."""

    name: str
    cmd: list[str]
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    stop_signal: int = signal.SIGTERM
    proc: subprocess.Popen | None = None

    def start(self) -> "Server":
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(self.cmd, stdout=self.log.open("wb"), stderr=subprocess.STDOUT,
                                     env={**os.environ, **self.env}, cwd=self.cwd, start_new_session=True)
        return self

    def tail(self, n: int = 40) -> str:
        lines = self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
        return "\n".join(lines[-n:])

    def wait_until(self, ready: Callable[[], bool], timeout: float = 180.0) -> "Server":
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")
            if ready():
                return self
            time.sleep(0.5)
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f}s:\n{self.tail()}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:  # the whole session this process leads: only processes these tests started
            os.killpg(self.proc.pid, self.stop_signal)
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        except ProcessLookupError:
            pass


def http_status(url: str, headers: dict[str, str] | None = None, data: bytes | None = None,
                timeout: float = 30) -> int:
    req = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return -1


def postgres_bin() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    candidates = sorted(glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(candidates[-1]).parent if candidates else None


@dataclass
class Postgres:
    server: Server
    port: int
    user: str
    password: str
    root: Path

    def url(self, db: str, driver: str = "") -> str:
        scheme = f"postgresql+{driver}" if driver else "postgresql"
        return f"{scheme}://{self.user}:{self.password}@{HOST}:{self.port}/{db}"

    def create_database(self, name: str) -> None:
        import psycopg

        # autocommit: CREATE DATABASE cannot run inside a transaction
        with psycopg.connect(host=HOST, port=self.port, user=self.user, password=self.password,
                             dbname="postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')

    def stop(self) -> None:
        self.server.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def start_postgres(log_dir: Path) -> Postgres:
    """initdb + postgres in a fresh temp dir, password auth, TCP on 127.0.0.1 only. postgres refuses to run as
    root, so as root it runs as the 'postgres' system user (or 'nobody')."""
    bindir = postgres_bin()
    if bindir is None:
        raise FileNotFoundError("PostgreSQL server binaries (initdb, postgres) not found")
    # Not under pytest's tmp dirs: those are 0700 and owned by the test user, so another user cannot enter them.
    root = Path(tempfile.mkdtemp(prefix="alignflow-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        import pwd

        name = "postgres"
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            name, pw = "nobody", pwd.getpwnam("nobody")
        os.chown(root, pw.pw_uid, pw.pw_gid)
        as_user = ["runuser", "-u", name, "--"]
    password = secrets.token_urlsafe(16)
    pwfile = root / "pw"
    pwfile.write_text(password + "\n")
    if as_user:
        shutil.chown(pwfile, user=as_user[2])
    subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(root / "data"), "-U", "alignflow",
                    f"--pwfile={pwfile}", "--auth=scram-sha-256", "-E", "UTF8", "--no-sync"],
                   check=True, capture_output=True)
    pwfile.unlink()
    port = free_port()
    # SIGINT is postgres' "fast" shutdown: it does not wait for clients to disconnect.
    server = Server("postgres", [*as_user, str(bindir / "postgres"), "-D", str(root / "data"), "-h", HOST,
                                 "-p", str(port), "-k", str(root), "-c", "fsync=off"],
                    log_dir / "postgres.log", stop_signal=signal.SIGINT).start()
    pg = Postgres(server, port, "alignflow", password, root)

    def accepting() -> bool:
        import psycopg

        try:
            psycopg.connect(host=HOST, port=port, user=pg.user, password=password, dbname="postgres",
                            connect_timeout=2).close()
            return True
        except psycopg.OperationalError:
            return False

    server.wait_until(accepting, timeout=60)
    return pg


def mlflow_server(backend_uri: str, root: Path, extra: list[str] | None = None,
                  env: dict[str, str] | None = None, port: int | None = None) -> tuple[Server, str]:
    """`port`: a given one, e.g. to start a stopped server again where its clients look for it."""
    port = port or free_port()
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_uri,
           "--artifacts-destination", str(root / "artifacts"), "--host", HOST, "--port", str(port),
           "--workers", "1", *(extra or [])]
    server = Server(f"mlflow-{port}", cmd, root / f"mlflow-{port}.log", env=env or {}, cwd=root).start()
    return server, f"http://{HOST}:{port}"


def prefect_server(db_url: str, root: Path, auth_string: str) -> tuple[Server, str]:
    port = free_port()
    env = {
        "PREFECT_HOME": str(root / "prefect-server"),
        "PREFECT_API_DATABASE_CONNECTION_URL": db_url,
        "PREFECT_SERVER_API_AUTH_STRING": auth_string,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_ENABLED": "false",
        # Schedule new runs within seconds of a deployment appearing, not the default minute.
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
    }
    cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", HOST, "--port", str(port)]
    server = Server(f"prefect-{port}", cmd, root / f"prefect-{port}.log", env=env, cwd=root).start()
    return server, f"http://{HOST}:{port}/api"
