"""What identifies a run for people comparing them: a name that says what differs from the defaults, a hash
of the settings that change the result, and the code's git commit. Credentials never reach a param or tag."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from mlflow.entities import SourceType
from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT, MLFLOW_SOURCE_NAME, MLFLOW_SOURCE_TYPE

from flows.config import PipelineConfig, flatten
from training.tracking import RunSpec, redact_uri

# Where things run or are recorded: they change neither the model nor its scores.
_NOT_RESULT = ("work_dir", "tracking.uri", "tracking.experiment", "tracking.run_name", "tracking.model_name",
               "scaling.address", "tokenizer.num_proc", "train.heatmap_examples", "tracking.keep_checkpoints")
# Shorter keys in run names, in the order they appear: what people vary most often comes first.
# The query that opens MLflow 3.17's UI in its model-training view (Runs, Models) rather than the GenAI view it
# opens by default; its view follows the sidebar's switch, not the experiment's kind tag.
MODEL_TRAINING_VIEW = "?workflowType=machine_learning"
_SHORT = {"train.": "", "model.": "", "tokenizer.": "tok.", "data.sizes.": "", "data.": "", "scaling.": ""}


def params(config: PipelineConfig) -> dict[str, Any]:
    """The whole config as flat MLflow params, with any credential in a URI masked."""
    flat = flatten(config)
    for key in ("tracking.uri", "scaling.address"):
        flat[key] = redact_uri(flat.get(key))
    return flat


def _result_settings(config: PipelineConfig) -> dict[str, Any]:
    return {k: v for k, v in flatten(config).items() if not k.startswith(_NOT_RESULT)}


def config_hash(config: PipelineConfig) -> str:
    """Equal for two runs that should produce the same model, whatever machine or server they ran on."""
    return hashlib.sha256(json.dumps(_result_settings(config), sort_keys=True).encode()).hexdigest()[:12]


def changes(config: PipelineConfig) -> dict[str, Any]:
    """The settings that differ from the defaults."""
    defaults = _result_settings(PipelineConfig())
    return {k: v for k, v in _result_settings(config).items() if defaults.get(k) != v}


def run_name(config: PipelineConfig, max_len: int = 90) -> str:
    """e.g. `dates epochs=1 lr=0.001 #3fa2c1` -- the corpus, what changed, and the config hash to tell apart
    runs whose changes do not fit."""
    if config.tracking.run_name:
        return config.tracking.run_name
    diff = " ".join(f"{_shorten(k)}={v}" for k, v in sorted(changes(config).items(), key=_order))
    name = f"{Path(config.data.source).name or config.data.source} {diff or 'defaults'}"
    suffix = f" #{config_hash(config)[:6]}"
    if len(name) + len(suffix) > max_len:
        name = name[: max_len - len(suffix) - 1] + "…"
    return name + suffix


def _order(item: tuple[str, Any]) -> tuple[int, str]:
    return next((i for i, p in enumerate(_SHORT) if item[0].startswith(p)), len(_SHORT)), item[0]


def _shorten(key: str) -> str:
    for prefix, short in _SHORT.items():
        if key.startswith(prefix):
            return short + key[len(prefix):]
    return key


def git_commit(repo: Path | None = None) -> str:
    """HEAD of the checkout the code runs from, `+dirty` when it has local changes; 'unknown' outside git."""
    where = repo or Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def run_tags(config: PipelineConfig, data_fingerprint: str) -> dict[str, str]:
    commit = git_commit()
    tags = {"corpus": config.data.source, "config_hash": config_hash(config), "git_commit": commit,
            "data_fingerprint": data_fingerprint,
            "changes": ", ".join(f"{k}={v}" for k, v in sorted(changes(config).items())) or "defaults"}
    from prefect.runtime import deployment, flow_run

    if flow_run.id:  # links the MLflow run back to the Prefect flow run (and deployment) that made it
        tags["prefect_flow_run_id"] = str(flow_run.id)
    if deployment.id:
        tags["prefect_deployment"] = f"{flow_run.flow_name}/{deployment.name}"
    # MLflow's standard source tags, which `mlflow.start_run` would set: the runs table's Source column and the
    # run page's git commit
    tags[MLFLOW_SOURCE_NAME] = entry_point(deployment.name if deployment.id else None)
    tags[MLFLOW_SOURCE_TYPE] = SourceType.to_string(SourceType.LOCAL)
    if commit != "unknown":
        tags[MLFLOW_GIT_COMMIT] = commit.removesuffix("+dirty")
    return tags


def entry_point(deployment: str | None = None, argv: list[str] | None = None) -> str:
    """What started the run, as the Source column shows it (the last /-separated part of the name): `alignflow
    run`, `prefect deployment nightly`, or the program (`pytest`). MLflow's default, the path of sys.argv[0], would
    name Prefect's engine for every scheduled run and `cli.py` for `python -m flows.cli`."""
    if deployment:
        return f"prefect deployment {deployment.replace('/', ' ')}"
    argv = sys.argv if argv is None else argv
    main = Path(argv[0])
    program = ("alignflow" if argv[0].endswith(("flows/cli.py", "/alignflow"))
               else main.parent.name if main.name == "__main__.py" else main.name or "python")  # python -m pytest
    command = argv[1] if len(argv) > 1 and argv[1].isidentifier() else ""  # a subcommand, not a path or option
    return f"{program} {command}".strip()


def run_spec(config: PipelineConfig, data_fingerprint: str) -> RunSpec:
    """What the pipeline's MLflow run records when it starts: names, tags, params and config.json."""
    logged = {**config.model_dump(mode="json", exclude={"sweep"}),
              "tracking": {**config.tracking.model_dump(mode="json"), "uri": redact_uri(config.tracking.uri)}}
    return RunSpec(experiment=config.tracking.experiment, name=run_name(config),
                   resume_name=config.tracking.run_name, params=params(config),
                   tags=run_tags(config, data_fingerprint), config=logged, corpus=config.data.source)


def mlflow_run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str | None:
    """The run's page in the MLflow UI, for servers that have one (never with credentials in it)."""
    if not tracking_uri.startswith(("http://", "https://")):
        return None
    base = (redact_uri(tracking_uri) or "").replace("***@", "").rstrip("/")
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}{MODEL_TRAINING_VIEW}"
