"""Shared fixtures: a real local Ray cluster, a throwaway MLflow sqlite store, one real Prefect API server."""

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.ops import servers

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data" / "multi30k"

# Before Prefect/MLflow are imported anywhere: keep their state out of the user's home and quiet.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_HOME", str(Path(os.environ.get("TMPDIR", "/tmp")) / f"alignflow-prefect-{os.getpid()}"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")  # a busy 2-core machine
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # the Hub is unreachable here: fail fast, never wait on it
# Ray Train's controller polls its workers every 2 s by default, so each of the suite's ~30 trainings waits up to
# twice that to see its workers start and finish; polling faster changes nothing else.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
PREFECT_SERVER_LOG = Path(os.environ["PREFECT_HOME"]) / "server.log"
_PREFECT_SERVER = pytest.StashKey[servers.Server]()


def pytest_configure(config: pytest.Config) -> None:
    """One `prefect server start` for the whole session, set as PREFECT_API_URL before Prefect is imported: every
    flow the suite runs, in this process or in a CLI subprocess, reports to it, rather than each process starting
    Prefect's temporary server (~10 s apiece on 2 cores). Started here, so it comes up while collection goes on;
    `prefect_server` waits for it. A PREFECT_API_URL already set is used as it is."""
    if "PREFECT_API_URL" in os.environ:
        return
    port = servers.free_port()
    cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", servers.HOST, "--port", str(port),
           "--no-services", "--no-ui"]  # flows report runs and states; schedules are tests/ops' own server's
    config.stash[_PREFECT_SERVER] = servers.Server("prefect-session", cmd, PREFECT_SERVER_LOG).start()
    os.environ["PREFECT_API_URL"] = f"http://{servers.HOST}:{port}/api"


def pytest_unconfigure(config: pytest.Config) -> None:
    server = config.stash.get(_PREFECT_SERVER, None)
    if server is not None:
        server.stop()


@pytest.fixture(scope="session", autouse=True)
def prefect_server(pytestconfig: pytest.Config) -> None:
    """Waits until the session's Prefect server answers (see pytest_configure)."""
    server = pytestconfig.stash.get(_PREFECT_SERVER, None)
    if server is None:
        return
    health = f"{os.environ['PREFECT_API_URL']}/health"
    try:
        server.wait_until(lambda: servers.http_status(health, timeout=5) == 200, timeout=300)
    except RuntimeError as e:  # one message for the session, not an error for every test
        pytest.exit(f"the session's Prefect server did not start: {e}", returncode=3)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Prefect stops its ephemeral API server at interpreter exit and logs that to a console stream pytest has
    closed by then ('--- Logging error ---' with a traceback after the summary): those records are dropped."""
    import logging

    logging.raiseExceptions = False


@pytest.fixture(scope="session")
def ray_cluster():
    """One real local Ray cluster for the whole session (2 CPUs: two single-threaded workers)."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


@pytest.fixture
def tracking_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)  # artifacts (./mlartifacts) land in the temp dir too
    return uri


TINY = ["data.sizes.train=3000", "data.sizes.validation=200", "data.sizes.test=200",
        "model.emb_size=32", "model.enc_hidden=64", "model.dec_hidden=128", "model.att_hidden=64",
        "train.epochs=3", "train.heatmap_examples=1", "tracking.model_name=tiny-dates"]


@pytest.fixture
def tiny_overrides(tmp_path: Path) -> list[str]:
    """A config small enough to train in well under a minute on 2 cores."""
    return [*TINY, f"work_dir={tmp_path / 'work'}"]


@dataclass(frozen=True)
class TrainedModel:
    """The one pipeline run that tests of a trained, registered model share (see `trained_model`)."""

    root: Path  # the run's working directory: mlflow.db, mlartifacts/, work/
    tracking_uri: str
    overrides: list[str]  # its config, as --set overrides
    summary: dict[str, Any]  # what train_pipeline returned


@pytest.fixture(scope="session")
def trained_model(ray_cluster, tmp_path_factory: pytest.TempPathFactory) -> TrainedModel:
    """Trains, evaluates and registers `tiny-dates` version 1 once per session (the tiny config, decoded with beam
    3). Tests that register more versions use another model name, so version 1 stays the champion."""
    from flows.config import load_config
    from flows.pipeline import train_pipeline

    root = tmp_path_factory.mktemp("trained")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    overrides = [*TINY, f"work_dir={root / 'work'}", "train.beam_size=3", "train.average_checkpoints=2"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.chdir(root)
        summary = train_pipeline(load_config(None, overrides))
    return TrainedModel(root, uri, overrides, summary)


@pytest.fixture
def trained(trained_model: TrainedModel, monkeypatch: pytest.MonkeyPatch) -> TrainedModel:
    """The shared trained model, with this test inside its store (MLFLOW_TRACKING_URI and the working directory)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained_model.tracking_uri)
    monkeypatch.chdir(trained_model.root)
    return trained_model


def run_cli(*args: str, env: dict[str, str] | None = None, stdin: str | None = None, timeout: int = 300):
    """Runs `alignflow ...` in a fresh process, as a user would, on this checkout's code (PYTHONPATH: the cwd is
    a test's temp dir, and an editable install may point at another checkout)."""
    import subprocess

    return subprocess.run([sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True,
                          input=stdin, timeout=timeout, env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
                          cwd=os.getcwd())
