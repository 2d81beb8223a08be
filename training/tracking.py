"""MLflow calls outside the registry: the pipeline's run (started or resumed on the driver, ended there) and the
logging into it from rank 0 of training (per-epoch metrics, attention heatmaps, through a `MetricBuffer` that
never makes training wait for the server) and from evaluation."""

import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import mlflow
import requests
from datasets import load_from_disk
from filelock import FileLock
from mlflow.entities import Metric, Param, Run, RunTag, ViewType
from mlflow.exceptions import MlflowException, RestException
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
# traces. MLflow 3.17.2's UI shows the view its sidebar switch picks (URL parameter `workflowType`, see
# flows/provenance.py MODEL_TRAINING_VIEW) whatever this tag says; the tag still records what the experiment is.
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


# For the buffer's calls: a server that is down costs one quick attempt, not MLflow's default of 7 retries with
# backoff and a 120 s timeout (minutes) per call; the buffer tries again at the next flush.
QUICK_HTTP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
              "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
STEP_KEY = "epoch"  # in every step's batch: the run has a step once it has this key at that step
PENDING = "tracking"  # in a checkpoint: what MLflow had not acknowledged when it was written
MAX_BUFFERED = 20_000  # metrics (~1,000 epochs); past it the oldest steps are dropped, with a warning


@contextlib.contextmanager
def quick_requests() -> Iterator[None]:
    """MLflow reads its HTTP settings from the environment at every request. urllib3's warning per failed
    attempt is held back: the buffer says once that the server is down, and once that it is back."""
    saved = {k: os.environ.get(k) for k in QUICK_HTTP}
    os.environ.update(QUICK_HTTP)
    pool = logging.getLogger("urllib3.connectionpool")
    level = pool.level
    pool.setLevel(logging.ERROR)
    try:
        yield
    finally:
        pool.setLevel(level)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def is_outage(error: BaseException, tracking_uri: str) -> bool:
    """Whether `error` came of the tracking server being unreachable (refused, timed out, 5xx after retries):
    not an answer of the server's, and the server does not answer a quick request now either. A local store
    is never out; a missing file or a bad request is not an outage, and is raised as it is."""
    if is_local_store(tracking_uri) or isinstance(error, RestException):
        return False
    if not isinstance(error, MlflowException | requests.RequestException | OSError):
        return False
    try:
        with quick_requests():
            MlflowClient(tracking_uri).search_experiments(max_results=1)
    except Exception as probe:
        return not isinstance(probe, RestException)
    return False


def redact_uri(uri: str | None) -> str | None:
    """`https://user:secret@host/x` -> `https://***@host/x`; anything without credentials is unchanged."""
    if not uri or "://" not in uri:
        return uri
    parts = urlsplit(uri)
    if parts.password is None and parts.username is None:
        return uri
    return urlunsplit(parts._replace(netloc=f"***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")))


class MetricBuffer:
    """Rank 0's per-epoch metrics, heatmaps and tags on their way into the driver's run. Nothing waits for the
    server: `flush` makes one quick attempt and keeps what was not acknowledged for the next one, and `save` puts
    it into each checkpoint, so a worker restart or a resumed run sends it later. A step the run already has
    (STEP_KEY at it: an epoch repeated after a restart) is never sent again, and a batch is re-sent with its
    original timestamps, which MLflow's store takes once: a failed attempt that did reach the server duplicates
    nothing. Bounded: past MAX_BUFFERED metrics the oldest steps are dropped, with a warning."""

    def __init__(self, tracking_uri: str, run_id: str, say: Callable[[str], None] = print,
                 while_down: str = "training goes on, its metrics are kept (in every checkpoint too) until the "
                                   "server takes them") -> None:
        self.client, self.run_id, self.uri, self.say = MlflowClient(tracking_uri), run_id, tracking_uri, say
        self.while_down = while_down  # what the line saying the server is down adds
        self.metrics: dict[int, list[Metric]] = {}  # step -> its batch
        self.tags: dict[str, str] = {}
        self.dir = Path(tempfile.mkdtemp(prefix="alignflow-pending-"))  # artifacts not yet sent, by artifact path
        self.artifacts: set[str] = set()
        self.known: set[int] | None = None  # steps the run has; None: ask the server first
        self.down_since: float | None = None

    def has(self, step: int) -> bool:
        return self.known is not None and step in self.known

    def add(self, values: dict[str, float], step: int) -> None:
        ts = int(time.time() * 1000)
        self.metrics[step] = [Metric(k, float(v), ts, step) for k, v in values.items()]
        while sum(map(len, self.metrics.values())) > MAX_BUFFERED and len(self.metrics) > 1:
            oldest = min(self.metrics)
            del self.metrics[oldest]
            self.say(f"MLflow tracking server {redact_uri(self.uri)} unreachable: buffer full, the metrics of "
                     f"step {oldest} are dropped")

    def add_artifacts(self, paths: list[Path]) -> None:
        """Files written under `self.dir`, logged at their path relative to it."""
        self.artifacts |= {p.relative_to(self.dir).as_posix() for p in paths}

    def flush(self) -> bool:
        """One quick attempt to send everything buffered; True when nothing is left."""
        try:
            with quick_requests():
                self._send()
        except Exception as e:
            if not is_outage(e, self.uri):
                raise
            self.known = None  # the failed request may have reached the server: ask again before resending
            if self.down_since is None:
                self.down_since = time.monotonic()
                self.say(f"MLflow tracking server {redact_uri(self.uri)} unreachable; {self.while_down}")
            return False
        if self.down_since is not None:
            self.say(f"MLflow tracking server {redact_uri(self.uri)} reachable again after "
                     f"{time.monotonic() - self.down_since:.0f}s; the buffered metrics are recorded")
            self.down_since = None
        return True

    def _send(self) -> None:
        if self.known is None:
            self.known = {m.step for m in self.client.get_metric_history(self.run_id, STEP_KEY)}
        for key, value in list(self.tags.items()):
            self.client.set_tag(self.run_id, key, value)
            del self.tags[key]
        for step in sorted(self.metrics):
            if step not in self.known:
                self.client.log_batch(self.run_id, metrics=self.metrics[step])
                self.known.add(step)
            del self.metrics[step]
        for name in sorted(self.artifacts):
            path = self.dir / name
            self.client.log_artifact(self.run_id, str(path), str(Path(name).parent))
            self.artifacts.discard(name)
            path.unlink()

    def save(self, checkpoint: Path) -> None:
        """What is still unsent, into a checkpoint directory."""
        out = checkpoint / PENDING
        out.mkdir()
        for name in self.artifacts:
            (out / "files" / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(self.dir / name, out / "files" / name)
        metrics = [[m.key, m.value, m.timestamp, m.step] for batch in self.metrics.values() for m in batch]
        (out / "pending.json").write_text(json.dumps({"metrics": metrics, "tags": self.tags,
                                                      "artifacts": sorted(self.artifacts)}))

    def load(self, checkpoint: Path) -> None:
        """What a checkpoint holds unsent (checkpoints written before the buffer existed hold nothing)."""
        pending = checkpoint / PENDING / "pending.json"
        if not pending.exists():
            return
        saved = json.loads(pending.read_text())
        for key, value, ts, step in saved["metrics"]:
            self.metrics.setdefault(step, []).append(Metric(key, value, ts, step))
        self.tags |= saved["tags"]
        for name in saved["artifacts"]:
            (self.dir / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(checkpoint / PENDING / "files" / name, self.dir / name)
            self.artifacts.add(name)

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def deliver(tracking_uri: str, run_id: str, checkpoint: str, wait_s: float,
            say: Callable[[str], None] = print) -> bool:
    """Sends what the latest checkpoint holds unsent (rank 0 could not, or was cut short), waiting up to `wait_s`
    for a server that is down; also the check that the server answers before the driver's own MLflow calls.
    False when it never answered."""
    buffer = MetricBuffer(tracking_uri, run_id, say, f"waiting up to {wait_s / 60:g} minutes for it")
    try:
        buffer.load(Path(checkpoint))
        deadline = time.monotonic() + wait_s
        while not buffer.flush():
            if time.monotonic() >= deadline:
                return False
            time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
        return True
    finally:
        buffer.close()


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
    resumed: bool = False  # an interrupted run (or sweep) of the same tracking.run_name, continued


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
        return
    # Marking a failure must not hide it: a server that is down leaves the run RUNNING, as resumable as FAILED.
    with quick_requests(), contextlib.suppress(Exception):
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


# Sweeps: one parent run, one child run per trial (a normal training run, tagged with its parent and trial).
PARENT_TAG, TRIAL_TAG, TRIAL_STATUS_TAG = "mlflow.parentRunId", "alignflow.trial_id", "alignflow.trial_status"
SWEEP_TAG = "alignflow.sweep"


def start_sweep(tracking_uri: str, experiment: str, name: str, resume_name: str | None, params: dict[str, Any],
                tags: dict[str, str], config: dict[str, Any]) -> TrackedRun:
    """The sweep's parent run: the search (space, scheduler) as params, the whole config as config.json. With a
    `resume_name` (tracking.run_name) whose last sweep never completed, that parent is continued instead."""
    client = open_store(tracking_uri)
    exp_id = _experiment_id(client, experiment, tracking_uri)
    previous = resumable_run(client, exp_id, resume_name, params)
    if previous is not None and previous.data.tags.get(SWEEP_TAG) == "parent":
        client.update_run(previous.info.run_id, status="RUNNING")
        print(f"resuming sweep {resume_name!r}: MLflow run {previous.info.run_id} (was {previous.info.status})")
        return TrackedRun(previous.info.run_id, exp_id, resumed=True)
    run = client.create_run(exp_id, run_name=name, tags={**tags, SWEEP_TAG: "parent",
                                                         **({RUN_NAME_TAG: resume_name} if resume_name else {})})
    client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in params.items()])
    client.log_dict(run.info.run_id, config, "config.json")
    return TrackedRun(run.info.run_id, exp_id)


def name_sweep(tracking_uri: str, run_id: str, name: str) -> None:
    """Names an unnamed sweep's parent, so that `tracking.run_name=<name>` finds it to resume."""
    MlflowClient(tracking_uri).set_tag(run_id, RUN_NAME_TAG, name)


def start_trial(tracking_uri: str, spec: RunSpec, manifest: Manifest, parent_id: str, trial_id: str) -> TrackedRun:
    """A trial's child run; a trial resumed with its sweep continues the run it had (its training then resumes
    from the checkpoint of that run), so a resumed sweep has no duplicate children."""
    previous = trial_runs(tracking_uri, parent_id).get(trial_id)
    if previous is not None:
        MlflowClient(tracking_uri).update_run(previous.info.run_id, status="RUNNING")
        return TrackedRun(previous.info.run_id, previous.info.experiment_id)
    return start_run(tracking_uri, spec, manifest)


def trial_runs(tracking_uri: str, parent_id: str) -> dict[str, Run]:
    """The sweep's child runs by Tune trial id."""
    client = MlflowClient(tracking_uri)
    parent = client.get_run(parent_id)
    runs = client.search_runs([parent.info.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent_id}'",
                              max_results=1000)
    return {r.data.tags[TRIAL_TAG]: r for r in runs if TRIAL_TAG in r.data.tags}


def end_trial(tracking_uri: str, run_id: str, status: str, error: BaseException | None = None) -> None:
    """A trial's child run: its status tag (`completed`, `stopped early by ASHA at epoch k`, `failed: <error>`),
    then ended like a pipeline run (FINISHED and complete, or FAILED / KILLED)."""
    MlflowClient(tracking_uri).set_tag(run_id, TRIAL_STATUS_TAG, status)
    end_run(tracking_uri, run_id, error)


def end_sweep(tracking_uri: str, run_id: str, metrics: dict[str, float], tags: dict[str, str],
              table: dict[str, list[Any]], error: BaseException | None = None) -> None:
    """The parent run: the best trial's metrics, the trials' ranking as a table artifact, then its end."""
    client = MlflowClient(tracking_uri)
    client.log_batch(run_id, metrics=[Metric(k, float(v), int(time.time() * 1000), 0) for k, v in metrics.items()],
                     tags=[RunTag(k, v) for k, v in tags.items()])
    if table:
        client.log_table(run_id, table, "sweep/trials.json")
    end_run(tracking_uri, run_id, error)
