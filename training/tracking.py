"""MLflow calls made from inside training (rank 0 only): per-epoch metrics and attention heatmaps."""

import time
from pathlib import Path

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient


class RunLogger:
    """Logs into an existing MLflow run created on the driver; never opens a run of its own."""

    def __init__(self, tracking_uri: str, run_id: str) -> None:
        self.client, self.run_id = MlflowClient(tracking_uri), run_id

    def metrics(self, values: dict[str, float], step: int) -> None:
        ts = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), ts, step) for k, v in values.items()])

    def artifact(self, path: Path, artifact_path: str) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)


def resolve_tracking_uri(uri: str | None) -> str:
    """Config value, else MLFLOW_TRACKING_URI, else ./mlflow.db -- made absolute, since Ray workers run
    in other working directories."""
    import os

    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        uri = prefix + str(Path(uri[len(prefix):]).resolve())
    return uri


def is_local_store(uri: str) -> bool:
    return uri.startswith(("sqlite:", "file:", "/")) or "://" not in uri
