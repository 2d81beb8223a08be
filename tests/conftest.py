"""Shared fixtures: a real local Ray cluster, a throwaway MLflow sqlite store, Prefect's ephemeral API."""

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data" / "multi30k"

# Before Prefect/MLflow are imported anywhere: keep their state out of the user's home and quiet.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_HOME", str(Path(os.environ.get("TMPDIR", "/tmp")) / f"alignflow-prefect-{os.getpid()}"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")  # a busy 2-core machine
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # the Hub is unreachable here: fail fast, never wait on it


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


@pytest.fixture
def tiny_overrides(tmp_path: Path) -> list[str]:
    """A config small enough to train in well under a minute on 2 cores."""
    return [
        "data.sizes.train=3000", "data.sizes.validation=200", "data.sizes.test=200",
        "model.emb_size=32", "model.enc_hidden=64", "model.dec_hidden=128", "model.att_hidden=64",
        "train.epochs=3", "train.heatmap_examples=1", f"work_dir={tmp_path / 'work'}",
        "tracking.model_name=tiny-dates",
    ]


def run_cli(*args: str, env: dict[str, str] | None = None, stdin: str | None = None, timeout: int = 300):
    """Runs `alignflow ...` in a fresh process, as a user would, on this checkout's code (PYTHONPATH: the cwd is
    a test's temp dir, and an editable install may point at another checkout)."""
    import subprocess

    return subprocess.run([sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True,
                          input=stdin, timeout=timeout, env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
                          cwd=os.getcwd())
