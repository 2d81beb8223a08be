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
    assert "auth_cache_ttl_seconds = 60" in entry  # one password hash per client a minute, not per request
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


def _secrets_check(env: dict[str, str]) -> subprocess.CompletedProcess:
    """Runs the compose secrets-check service's script as compose would: `$$` is compose's escape for `$`."""
    service = _compose()["services"]["secrets-check"]
    script = service["command"][2]
    assert "$" not in script.replace("$$", ""), "the script must escape every $ from compose's interpolation"
    return subprocess.run(["sh", "-c", script.replace("$$", "$")], env={"PATH": "/usr/bin:/bin", **env},
                          capture_output=True, text=True)


def test_compose_starts_nothing_while_a_secret_is_a_placeholder():
    services = _compose()["services"]
    checked = set(services["secrets-check"]["environment"])
    for name, svc in services.items():
        if name != "secrets-check":
            assert svc["depends_on"]["secrets-check"] == {"condition": "service_completed_successfully"}, name
    used = set(re.findall(r"\$\{([A-Z_]+)", (INFRA / "docker-compose.yml").read_text()))
    assert {v for v in used if any(w in v for w in SECRET_WORDS)} == checked  # every secret the stack reads
    example = dict(line.split("=", 1) for line in (INFRA / ".env.example").read_text().splitlines()
                   if line and not line.startswith("#"))
    shipped = _secrets_check({k: example.get(k, "") for k in checked})
    assert shipped.returncode == 1 and all(k in shipped.stderr for k in checked), shipped.stderr
    real = {k: f"{k.lower()}-0f3a9c" for k in checked}
    assert _secrets_check(real).returncode == 0
    one_left = _secrets_check({**real, "RAY_AUTH_TOKEN": "change-me"})
    assert one_left.returncode == 1 and "placeholder secrets: RAY_AUTH_TOKEN (" in one_left.stderr
    assert _secrets_check({k: v for k, v in real.items() if k != "MLFLOW_SECRET_KEY"}).returncode == 1  # unset


def _kuberay() -> list[tuple[str, dict]]:
    return [(f.name, doc) for f in sorted((INFRA / "ray").glob("ray*.yaml"))
            for doc in yaml.safe_load_all(f.read_text()) if doc]


def _ray_pod_specs(name: str, doc: dict) -> list[tuple[str, dict]]:
    spec = doc["spec"].get("rayClusterSpec", doc["spec"])
    pods = [("head", spec["headGroupSpec"]["template"])]
    pods += [(g["groupName"], g["template"]) for g in spec["workerGroupSpecs"]]
    if "submitterPodTemplate" in doc["spec"]:
        pods.append(("submitter", doc["spec"]["submitterPodTemplate"]))
    return [(f"{name} {role}", pod) for role, pod in pods]


def test_kuberay_dashboard_and_client_ports_stay_inside_the_cluster():
    docs = _kuberay()
    assert {d["kind"] for _, d in docs} >= {"RayCluster", "RayJob", "NetworkPolicy"}
    for name, doc in docs:
        assert doc["kind"] != "Ingress", name
        if doc["kind"] == "Service":
            assert doc["spec"].get("type", "ClusterIP") == "ClusterIP", name
        if doc["kind"] in ("RayCluster", "RayJob"):
            spec = doc["spec"].get("rayClusterSpec", doc["spec"])
            assert spec["headGroupSpec"]["serviceType"] == "ClusterIP", name  # KubeRay's head Service
            assert not spec["headGroupSpec"].get("enableIngress"), name
            for where, pod in _ray_pod_specs(name, doc):
                if "submitter" not in where:  # every Ray node is one the policy applies to
                    assert pod["metadata"]["labels"]["alignflow/ray-node"] == "true", where
    [policy] = [d for _, d in docs if d["kind"] == "NetworkPolicy"]
    assert policy["spec"]["podSelector"] == {"matchLabels": {"alignflow/ray-node": "true"}}
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    for rule in policy["spec"]["ingress"]:
        sources = rule["from"]
        assert sources and all("ipBlock" not in s for s in sources)  # no "from anywhere"
        if rule.get("ports") is None:  # all ports: only from the cluster's own Ray nodes
            assert sources == [{"podSelector": {"matchLabels": {"alignflow/ray-node": "true"}}}]
        else:
            assert {p["port"] for p in rule["ports"]} == {8265, 10001}
            assert all(s.get("podSelector", {}).get("matchLabels") for s in sources)
    [job] = [d for _, d in docs if d["kind"] == "RayJob"]
    assert job["spec"]["submitterPodTemplate"]["metadata"]["labels"] == {"alignflow/ray-client": "true"}


def test_kuberay_ray_token_and_mlflow_credentials_come_from_secrets():
    for name, doc in _kuberay():
        if doc["kind"] not in ("RayCluster", "RayJob"):
            continue
        for where, pod in _ray_pod_specs(name, doc):
            for container in pod["spec"]["containers"]:
                env = {e["name"]: e for e in container.get("env", [])}
                assert env["RAY_AUTH_MODE"]["value"] == "token", where
                secrets = {"RAY_AUTH_TOKEN"} | ({"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"}
                                                if "MLFLOW_TRACKING_URI" in env else set())
                if "submitter" not in where:
                    assert "MLFLOW_TRACKING_URI" in env, where
                for key in secrets:
                    assert "value" not in env[key] and env[key]["valueFrom"]["secretKeyRef"]["name"], (where, key)
                for key, e in env.items():  # no credential written into the manifest
                    if any(w in key for w in (*SECRET_WORDS, "USERNAME")):
                        assert "secretKeyRef" in e.get("valueFrom", {}), (where, key)
                    assert "@" not in str(e.get("value", "")), (where, key)
