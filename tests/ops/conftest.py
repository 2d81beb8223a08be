"""One real server stack for the whole ops session, as infra/docker-compose.yml runs it: PostgreSQL, an MLflow
tracking server on it with the basic-auth app, and a Prefect server on it with an API auth string. All on
127.0.0.1, free ports, temp dirs; started once (in parallel: each takes tens of seconds to migrate its schema)
and stopped at the end of the session."""

import secrets
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.ops import servers

ARTIFACTS = REPO / "test-artifacts"  # kept after the run (gitignored): screenshots, server logs on failure


@dataclass
class Stack:
    root: Path
    postgres: servers.Postgres
    auth_mlflow_url: str  # --app-name basic-auth
    auth_user: str
    auth_password: str
    prefect_api: str
    prefect_auth: str  # PREFECT_API_AUTH_STRING the clients send

    def prefect_env(self) -> dict[str, str]:
        return {"PREFECT_API_URL": self.prefect_api, "PREFECT_API_AUTH_STRING": self.prefect_auth}


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    if servers.postgres_bin() is None:
        pytest.skip("PostgreSQL server binaries not installed (Debian: apt-get install -y postgresql)")
    root = Path(tempfile.mkdtemp(prefix="alignflow-ops-"))
    logs = root / "logs"
    pg = servers.start_postgres(logs)
    started: list[servers.Server] = []
    try:
        for db in ("mlflow", "mlflow_users", "prefect"):
            pg.create_database(db)
        user, password = "admin", secrets.token_urlsafe(12)
        auth_ini = root / "basic_auth.ini"
        auth_ini.write_text(f"[mlflow]\ndefault_permission = NO_PERMISSIONS\ndatabase_uri = {pg.url('mlflow_users')}\n"
                            f"admin_username = {user}\nauth_cache_ttl_seconds = 60\n")  # as infra/mlflow does
        auth, auth_url = servers.mlflow_server(
            pg.url("mlflow"), root / "mlflow", ["--app-name", "basic-auth"],
            env={"MLFLOW_AUTH_CONFIG_PATH": str(auth_ini), "MLFLOW_AUTH_ADMIN_PASSWORD": password,
                 "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_urlsafe(24)})
        started.append(auth)
        prefect_auth = f"alignflow:{secrets.token_urlsafe(12)}"
        pf, pf_api = servers.prefect_server(pg.url("prefect", "asyncpg"), root / "prefect", prefect_auth)
        started.append(pf)
        auth.wait_until(lambda: servers.http_status(f"{auth_url}/health") == 200)
        pf.wait_until(lambda: servers.http_status(f"{pf_api}/health") == 200)
        yield Stack(root, pg, auth_url, user, password, pf_api, prefect_auth)
    finally:
        for server in reversed(started):
            server.stop()
        pg.stop()
        if ARTIFACTS.exists() or logs.exists():  # server logs help when a test failed
            dest = ARTIFACTS / "ops-logs"
            shutil.rmtree(dest, ignore_errors=True)
            dest.mkdir(parents=True, exist_ok=True)
            for log in root.rglob("*.log"):
                shutil.copy(log, dest / log.name)
        shutil.rmtree(root, ignore_errors=True)
