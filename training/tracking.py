"""MLflow calls outside the registry: the pipeline's run (started or resumed on the driver, ended there) and the
logging into it from rank 0 of training (per-epoch metrics, attention heatmaps) and from evaluation."""

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
from datasets import load_from_disk
from filelock import FileLock
from mlflow.entities import Metric, Run, ViewType
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode
from mlflow.tracking import MlflowClient

from data_prep.errors import ConfigError
from data_prep.prepare import Manifest
from training.metrics import signatures

SQLITE = "sqlite:///"
RUN_NAME_TAG = "alignflow.run_name"
# Set when the whole pipeline has finished. The run's MLflow status can't tell: every `with mlflow.start_run()`
# block ends by marking the run FINISHED.
COMPLETE_TAG = "alignflow.complete"
# Keys a resumed run must share with the interrupted one: the data, the checkpoint's shapes and where the
# checkpoints are.
_RESUME_FIXED = ("data.", "tokenizer.", "model.", "scaling.storage_path", "work_dir")
# MLflow's experiment kind (its UI's ExperimentKind values): these experiments hold model training runs, not GenAI
# traces. MLflow 3.17's UI picks its view from its sidebar switch instead (URL parameter `workflowType`; see
# flows/provenance.py mlflow_run_url); the tag is what MLflow's other clients and UIs read.
EXPERIMENT_KIND_TAG, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"


class RunLogger:
    """Logs into an existing MLflow run created on the driver; never opens a run of its own."""

    def __init__(self, tracking_uri: str, run_id: str) -> None:
        self.client, self.run_id = MlflowClient(tracking_uri), run_id

    def metrics(self, values: dict[str, float], step: int) -> None:
        ts = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), ts, step) for k, v in values.items()])

    def artifact(self, path: Path, artifact_path: str) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)


def resolve_tracking_uri(uri: str | None) -> str:
    """Config value, else MLFLOW_TRACKING_URI, else ./mlflow.db -- made absolute, since Ray workers run
    in other working directories."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"
    if uri.startswith(SQLITE) and not uri.startswith(SQLITE + "/"):
        uri = SQLITE + str(Path(uri[len(SQLITE):]).resolve())
    return uri


def open_store(uri: str) -> MlflowClient:
    """A client for `uri`, creating a local sqlite store under a lock file: MLflow creates and migrates the
    tables on first use with no lock of its own, so two runs starting at once on a new `mlflow.db` collide
    ("duplicate column name"). Servers need no lock; their own database handles concurrent clients."""
    if not uri.startswith(SQLITE):
        return MlflowClient(uri)
    with FileLock(uri[len(SQLITE):] + ".lock"):
        client = MlflowClient(uri)
        client.search_experiments(max_results=1)  # creates the tables while the lock is held
    return client


def is_local_store(uri: str) -> bool:
    return uri.startswith(("sqlite:", "file:", "/")) or "://" not in uri


@dataclass(frozen=True)
class RunSpec:
    """What the pipeline's run records when it starts (built from the config by flows/provenance.py)."""

    experiment: str
    name: str  # shown in the UI
    resume_name: str | None  # tracking.run_name: the last run by this name is continued if it never completed
    params: dict[str, Any]  # the whole config, flat, credentials masked
    tags: dict[str, str]
    config: dict[str, Any]  # config.json, credentials masked
    corpus: str  # data.source: names the logged datasets


@dataclass(frozen=True)
class TrackedRun:
    run_id: str
    experiment_id: str


def resumable_run(client: MlflowClient, exp_id: str, name: str | None, params: dict[str, Any]) -> Run | None:
    """The latest run named `name` (tracking.run_name) if its pipeline never completed (killed, failed,
    crashed); a ConfigError if `params` differ from it where its checkpoints would not fit."""
    if not name:
        return None
    runs = client.search_runs([exp_id], filter_string=f"tags.`{RUN_NAME_TAG}` = '{name}'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    if not runs or runs[0].data.tags.get(COMPLETE_TAG) == "true":
        return None
    run = runs[0]
    for key, value in params.items():
        logged = run.data.params.get(key)
        if key.startswith(_RESUME_FIXED) and logged is not None and logged != str(value):
            raise ConfigError(f"{key}: {value!r} differs from {logged!r} in the interrupted run "
                              f"tracking.run_name={name!r} that this run would resume; use another run_name")
    return run


def _experiment_id(client: MlflowClient, name: str, tracking_uri: str) -> str:
    """The experiment's id, creating it (of the model-training kind) if needed; a run that loses the race to create
    it uses the winner's. An experiment made before alignflow set the kind gets it on first use."""
    exp = client.get_experiment_by_name(name)
    if exp is None:
        # An explicit artifact location for local stores; otherwise workers would write under Ray's temp dirs.
        location = Path("mlartifacts").resolve().as_uri() if is_local_store(tracking_uri) else None
        try:
            return client.create_experiment(name, artifact_location=location,
                                            tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING})
        except MlflowException as e:
            if e.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
                raise
        exp = client.get_experiment_by_name(name)
    if EXPERIMENT_KIND_TAG not in exp.tags:  # a kind someone chose in the UI stays
        client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING)
    return exp.experiment_id


def start_run(tracking_uri: str, spec: RunSpec, manifest: Manifest) -> TrackedRun:
    """One MLflow run per pipeline run, created on the driver; workers only log into it. With a
    `resume_name` whose last run did not finish, that run is continued instead: the Ray run name derives
    from the MLflow run id, so training resumes from its latest checkpoint and logs into the same run."""
    client = open_store(tracking_uri)
    exp_id = _experiment_id(client, spec.experiment, tracking_uri)
    previous = resumable_run(client, exp_id, spec.resume_name, spec.params)
    if previous is not None:
        client.update_run(previous.info.run_id, status="RUNNING")
        print(f"resuming MLflow run {previous.info.run_id} ({spec.resume_name!r}, was {previous.info.status})")
        return TrackedRun(previous.info.run_id, exp_id)
    tags = {**spec.tags, **({RUN_NAME_TAG: spec.resume_name} if spec.resume_name else {})}
    run = client.create_run(exp_id, run_name=spec.name, tags=tags)
    mlflow.set_tracking_uri(tracking_uri)
    with mlflow.start_run(run_id=run.info.run_id):
        mlflow.log_params(spec.params)
        _log_data(manifest, spec.corpus)
        mlflow.log_dict(spec.config, "config.json")
        mlflow.set_tags(signatures())
    client.update_run(run.info.run_id, status="RUNNING")  # leaving the block above marked it FINISHED
    return TrackedRun(run.info.run_id, exp_id)


def _log_data(manifest: Manifest, corpus: str) -> None:
    """Into the active run: split sizes, what preparation dropped, the corpus lineage, datasets, tokenizers."""
    lineage = manifest.lineage
    mlflow.log_params({f"data.size.{k}": v for k, v in manifest.splits.items()})
    mlflow.log_metrics({f"data.dropped_too_long.{k}": v for k, v in manifest.dropped_too_long.items()})
    mlflow.log_metrics({f"data.skipped_blank.{k}": v for k, v in manifest.skipped_blank.items()})
    mlflow.set_tags({f"data.{k}": str(lineage[k]) for k in ("format", "location", "revision", "digest")
                     if lineage.get(k) is not None})
    mlflow.log_dict(manifest.to_json(), "data/manifest.json")
    encoded = load_from_disk(manifest.encoded)
    short = Path(corpus).name or corpus
    for split in ("train", "validation", "test"):
        ds = mlflow.data.from_huggingface(encoded[split].select_columns(["src", "tgt"]),
                                          path=lineage.get("location", corpus), revision=lineage.get("revision"),
                                          name=f"{short}-{split}", digest=lineage.get("digest", "")[:16] or None)
        mlflow.log_input(ds, context=split)
    mlflow.log_artifact(manifest.src_tokenizer, "tokenizers")
    mlflow.log_artifact(manifest.tgt_tokenizer, "tokenizers")


def end_run(tracking_uri: str, run_id: str, error: BaseException | None = None) -> None:
    """Marks the pipeline's run complete, or FAILED (an exception) / KILLED (Ctrl-C, cancellation): a run
    that did not complete can be resumed by its run_name."""
    client = MlflowClient(tracking_uri)
    if error is None:
        client.set_tag(run_id, COMPLETE_TAG, "true")
        client.set_terminated(run_id)
    else:
        client.set_terminated(run_id, "FAILED" if isinstance(error, Exception) else "KILLED")


@dataclass(frozen=True)
class RunState:
    """What `alignflow gc` needs to know of a pipeline run: may it still be resumed, and which corpus it used."""

    run_id: str
    resumable: bool  # never completed and not deleted: its checkpoints and corpus are still needed
    data_fingerprint: str | None
    started_s: float  # seconds since the epoch


def run_states(tracking_uri: str) -> list[RunState]:
    """Every run of every experiment in the store, deleted ones included (they are never resumed)."""
    client = MlflowClient(tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    states, token = [], None
    while experiments:
        page = client.search_runs(experiments, run_view_type=ViewType.ALL, max_results=1000, page_token=token)
        states += [RunState(r.info.run_id,
                            r.info.lifecycle_stage != "deleted" and r.data.tags.get(COMPLETE_TAG) != "true",
                            r.data.tags.get("data_fingerprint"),  # flows/provenance.py run_tags
                            r.info.start_time / 1000) for r in page]
        token = page.token
        if not token:
            break
    return states
