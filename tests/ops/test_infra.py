"""The shipped server setup, read as data: every published port on loopback, every secret from the
environment (and named in .env.example), .env never committed; prefect.yaml deploys the real flow with
parameters that validate."""

import importlib
import re
import subprocess
from pathlib import Path

import yaml

from flows.config import PipelineConfig
from tests.conftest import REPO

INFRA = REPO / "infra"
SECRET_WORDS = ("PASSWORD", "SECRET", "TOKEN", "AUTH_STRING")


def _compose() -> dict:
    return yaml.safe_load((INFRA / "docker-compose.yml").read_text())


def test_every_published_port_binds_to_loopback():
    services = _compose()["services"]
    assert {"postgres", "mlflow", "prefect", "ray-head", "ray-worker"} <= set(services)
    published = [(name, port) for name, svc in services.items() for port in svc.get("ports", [])]
    assert published, "nothing published"
    for name, port in published:
        assert str(port).startswith("127.0.0.1:"), f"{name}: {port}"


def test_secrets_come_from_the_env_file_and_are_all_documented():
    text = "\n".join(line for line in (INFRA / "docker-compose.yml").read_text().splitlines()
                     if not line.lstrip().startswith("#"))
    example = dict(line.split("=", 1) for line in (INFRA / ".env.example").read_text().splitlines()
                   if line and not line.startswith("#"))
    for name, svc in _compose()["services"].items():
        env = svc.get("environment", {})
        for key, value in env.items():
            if any(w in key for w in SECRET_WORDS) and "URI" not in key:
                assert re.fullmatch(r"\$\{[A-Z_]+(:[-?][^}]*)?\}", str(value)), f"{name}.{key} is a literal"
    for var in set(re.findall(r"\$\{([A-Z_]+)", text)):
        assert var in example, f"{var} is used by docker-compose.yml but missing from .env.example"
    for key, value in example.items():
        if any(w in key for w in SECRET_WORDS):
            assert "change-me" in value, f".env.example ships a real-looking {key}"


def test_mlflow_runs_with_basic_auth_and_prefect_with_an_api_auth_string():
    services = _compose()["services"]
    entry = (INFRA / "mlflow" / "entrypoint.sh").read_text()
    assert "--app-name basic-auth" in entry and "default_permission = NO_PERMISSIONS" in entry
    assert "postgresql://" in services["mlflow"]["environment"]["MLFLOW_BACKEND_STORE_URI"]
    prefect_env = services["prefect"]["environment"]
    assert prefect_env["PREFECT_API_DATABASE_CONNECTION_URL"].startswith("postgresql+asyncpg://")
    assert "PREFECT_SERVER_API_AUTH_STRING" in prefect_env


def test_the_env_file_is_ignored_by_git():
    ignored = subprocess.run(["git", "check-ignore", "-q", str(INFRA / ".env")], cwd=REPO)
    assert ignored.returncode == 0
    example = subprocess.run(["git", "check-ignore", "-q", str(INFRA / ".env.example")], cwd=REPO)
    assert example.returncode == 1


def test_prefect_yaml_deploys_train_pipeline_with_valid_parameters():
    from prefect.client.schemas.schedules import CronSchedule

    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    assert spec["deployments"]
    for dep in spec["deployments"]:
        path, _, attr = dep["entrypoint"].partition(":")
        module = importlib.import_module(Path(path).with_suffix("").as_posix().replace("/", "."))
        assert getattr(module, attr).name == "train-pipeline"
        PipelineConfig.model_validate(dep["parameters"]["config"])
        for schedule in dep["schedules"]:
            CronSchedule(cron=schedule["cron"], timezone=schedule["timezone"])
        assert dep["work_pool"]["name"] == "alignflow"
