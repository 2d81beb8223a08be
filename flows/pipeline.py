"""The training pipeline as a Prefect flow: prepare_data -> train -> evaluate -> register.

Tasks are thin: each calls one data_prep/training function and passes paths, ids and small dicts."""

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import mlflow
from datasets import load_from_disk
from mlflow import MlflowClient
from mlflow.entities import Run
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.client.schemas.objects import TaskRun
from prefect.context import TaskRunContext
from prefect.runtime import deployment
from prefect.states import State

from data_prep.errors import AlignflowError, ConfigError
from data_prep.prepare import MANIFEST, fingerprint, prepare
from flows import provenance
from flows.config import PipelineConfig, flatten
from training import registry, trainer
from training.curves import log_learning_curves
from training.data import load_encoded
from training.loop import LoopConfig
from training.metrics import score, signatures
from training.tracking import is_local_store, resolve_tracking_uri
from training.translator import MODEL_CONFIG, WEIGHTS, Translator


def _prepare_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str | None:
    """Keyed on the corpus content + settings fingerprint and the work dir holding the prepared files; no key
    when the source is unreadable (the task then runs and raises the clear error)."""
    config = parameters["config"]
    try:
        fp = fingerprint(config.data, config.tokenizer)
    except AlignflowError:
        return None
    prepared = Path(config.work_dir).resolve() / "prepared"
    return f"prepare-{fp}-{hashlib.sha256(str(prepared).encode()).hexdigest()[:12]}"


# log_prints=False: datasets pickles the map function with dill for num_proc > 1, and dill reads a function's
# globals by capturing what dis.dis prints; with prints routed to the Prefect logger that capture comes back
# empty and the log fills with bytecode.
@task(cache_key_fn=_prepare_cache_key, persist_result=True, log_prints=False)
def prepare_data(config: PipelineConfig) -> dict[str, Any]:
    t0 = time.perf_counter()
    manifest = prepare(config.data, config.tokenizer, Path(config.work_dir) / "prepared")
    get_run_logger().info(
        f"prepared {manifest['source']} ({'reused' if manifest['reused'] else 'built'}) in "
        f"{time.perf_counter() - t0:.1f}s: {manifest['splits']}; dropped as longer than {config.data.max_len} "
        f"tokens {manifest['dropped_too_long']}; skipped for a blank side {manifest.get('skipped_blank')}; "
        f"build stage timings {manifest.get('timings')}")
    return manifest


def prepared(config: PipelineConfig) -> dict[str, Any]:
    """prepare_data, skipped (Prefect cache) while corpus and settings are unchanged; rerun with the cache
    refreshed when the cached result's files were deleted. `cached` says whether the task was skipped."""
    # Scheduled runs retry the data step (a Hub download, a shared disk); a manual run fails fast.
    prep = (prepare_data.with_options(retries=2, retry_delay_seconds=[10, 60], retry_condition_fn=_transient)
            if deployment.id else prepare_data)
    state = prep(config, return_state=True)
    manifest = state.result()
    if not (Path(manifest["dir"]) / MANIFEST).exists():
        state = prep.with_options(refresh_cache=True)(config, return_state=True)
        manifest = state.result()
    if state.name == "Cached":
        print(f"prepared data reused from the cache: {manifest['dir']}")
    return {**manifest, "cached": state.name == "Cached"}


RUN_NAME_TAG = "alignflow.run_name"
# Set when the whole pipeline has finished. The run's MLflow status can't tell: every `with mlflow.start_run()`
# block ends by marking the run FINISHED.
COMPLETE_TAG = "alignflow.complete"
# Keys a resumed run must share with the interrupted one: the data, the checkpoint's shapes and where the
# checkpoints are.
_RESUME_FIXED = ("data.", "tokenizer.", "model.", "scaling.storage_path", "work_dir")


def _resumable_run(client: MlflowClient, exp_id: str, config: PipelineConfig) -> Run | None:
    """The latest run named `tracking.run_name` if its pipeline never completed (killed, failed, crashed)."""
    name = config.tracking.run_name
    if not name:
        return None
    runs = client.search_runs([exp_id], filter_string=f"tags.`{RUN_NAME_TAG}` = '{name}'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    if not runs or runs[0].data.tags.get(COMPLETE_TAG) == "true":
        return None
    run = runs[0]
    for key, value in flatten(config).items():
        logged = run.data.params.get(key)
        if key.startswith(_RESUME_FIXED) and logged is not None and logged != str(value):
            raise ConfigError(f"{key}: {value!r} differs from {logged!r} in the interrupted run "
                              f"tracking.run_name={name!r} that this run would resume; use another run_name")
    return run


def start_run(config: PipelineConfig, manifest: dict[str, Any], tracking_uri: str) -> str:
    """One MLflow run per pipeline run, created on the driver; workers only log into it. With a
    `tracking.run_name` whose last run did not finish, that run is continued instead: the Ray run name derives
    from the MLflow run id, so training resumes from its latest checkpoint and logs into the same run."""
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(config.tracking.experiment)
    if exp is None:
        # An explicit artifact location for local stores; otherwise workers would write under Ray's temp dirs.
        location = (Path("mlartifacts").resolve().as_uri() if is_local_store(tracking_uri) else None)
        exp_id = client.create_experiment(config.tracking.experiment, artifact_location=location)
    else:
        exp_id = exp.experiment_id
    previous = _resumable_run(client, exp_id, config)
    if previous is not None:
        client.update_run(previous.info.run_id, status="RUNNING")
        print(f"resuming MLflow run {previous.info.run_id} ({config.tracking.run_name!r}, was "
              f"{previous.info.status})")
        return previous.info.run_id
    tags = provenance.run_tags(config, manifest["fingerprint"])
    if config.tracking.run_name:  # a named run can be resumed by re-running with the same name
        tags[RUN_NAME_TAG] = config.tracking.run_name
    run = client.create_run(exp_id, run_name=provenance.run_name(config), tags=tags)
    mlflow.set_tracking_uri(tracking_uri)
    lineage = manifest.get("lineage", {})
    with mlflow.start_run(run_id=run.info.run_id):
        mlflow.log_params(provenance.params(config))
        mlflow.log_params({f"data.size.{k}": v for k, v in manifest["splits"].items()})
        mlflow.log_metrics({f"data.dropped_too_long.{k}": v for k, v in manifest["dropped_too_long"].items()})
        mlflow.log_metrics({f"data.skipped_blank.{k}": v for k, v in manifest.get("skipped_blank", {}).items()})
        mlflow.set_tags({f"data.{k}": str(lineage[k]) for k in ("format", "location", "revision", "digest")
                         if lineage.get(k) is not None})
        mlflow.log_dict(manifest, "data/manifest.json")
        encoded = load_from_disk(manifest["encoded"])
        short = Path(config.data.source).name or config.data.source
        for split in ("train", "validation", "test"):
            ds = mlflow.data.from_huggingface(encoded[split].select_columns(["src", "tgt"]),
                                              path=lineage.get("location", config.data.source),
                                              revision=lineage.get("revision"),
                                              name=f"{short}-{split}", digest=lineage.get("digest", "")[:16] or None)
            mlflow.log_input(ds, context=split)
        mlflow.log_artifact(manifest["src_tokenizer"], "tokenizers")
        mlflow.log_artifact(manifest["tgt_tokenizer"], "tokenizers")
        mlflow.log_dict({**config.model_dump(mode="json"), "tracking": {
            **config.tracking.model_dump(mode="json"), "uri": provenance.redact(config.tracking.uri)}}, "config.json")
        mlflow.set_tags(signatures())
    client.update_run(run.info.run_id, status="RUNNING")  # leaving the block above marked it FINISHED
    return run.info.run_id


@task
def train(config: PipelineConfig, manifest: dict[str, Any], tracking_uri: str, run_id: str) -> dict[str, Any]:
    job = LoopConfig(
        model=config.model, train=config.train, select_metric=config.tracking.select_metric,
        src_tokenizer=Path(manifest["src_tokenizer"]).read_text(),
        tgt_tokenizer=Path(manifest["tgt_tokenizer"]).read_text(),
        threads=config.scaling.threads, grad_compression=config.scaling.grad_compression,
        tracking_uri=tracking_uri, run_id=run_id)
    splits = load_encoded(manifest["encoded"])
    refs = load_from_disk(manifest["encoded"])["validation"]["tgt"]
    data = {"train": splits["train"], "validation": splits["validation"], "val_refs": refs}
    # The Ray run is named after the MLflow run: continuing that run (same run_name) resumes this one.
    return trainer.fit(job, data, config.scaling, name=ray_run_name(run_id),
                       storage_path=config.scaling.storage_path or Path(config.work_dir) / "ray",
                       keep=config.tracking.keep_checkpoints)


def ray_run_name(run_id: str) -> str:
    return f"train-{run_id[:12]}"


@task
def evaluate(config: PipelineConfig, manifest: dict[str, Any], checkpoint: str, tracking_uri: str,
             run_id: str) -> dict[str, float]:
    """Scores the best checkpoint on the test split, from raw text to detokenized output."""
    translator = Translator.from_files(Path(checkpoint) / WEIGHTS, Path(checkpoint) / MODEL_CONFIG,
                                       manifest["src_tokenizer"], manifest["tgt_tokenizer"],
                                       max_output_ratio=config.train.max_output_ratio,
                                       beam_size=config.train.beam_size, length_penalty=config.train.length_penalty)
    test = load_from_disk(manifest["encoded"])["test"]
    hyps = translator.translate(test["src"])
    metrics = {f"test_{k}": v for k, v in score(hyps, test["tgt"]).items()}
    if config.train.beam_size > 1:  # greedy too: what beam search adds, and the figure peers usually quote
        greedy = translator.translate(test["src"], beam_size=1)
        metrics |= {f"test_greedy_{k}": v for k, v in score(greedy, test["tgt"]).items()}
    MlflowClient(tracking_uri).log_batch(run_id, metrics=[
        mlflow.entities.Metric(k, v, int(time.time() * 1000), 0) for k, v in metrics.items()])
    mlflow.set_tracking_uri(tracking_uri)
    with mlflow.start_run(run_id=run_id):
        mlflow.log_text("\n".join(f"{s}\t{h}\t{r}" for s, h, r in zip(test["src"], hyps, test["tgt"], strict=True)),
                        "test_translations.tsv")
    return metrics


def _transient(task: Any, task_run: TaskRun, state: State) -> bool:
    """Retry IO failures, not user errors: a bad file or setting fails the same way every time."""
    return not isinstance(state.result(raise_on_failure=False), AlignflowError)


@task(retries=2, retry_delay_seconds=[2, 10], retry_condition_fn=_transient)  # IO against the tracking server
def register(config: PipelineConfig, manifest: dict[str, Any], checkpoint: str, tracking_uri: str, run_id: str,
             test_metrics: dict[str, float]) -> dict[str, Any]:
    test = load_from_disk(manifest["encoded"])["test"]
    return registry.log_and_register(tracking_uri, run_id, checkpoint, manifest["src_tokenizer"],
                                     manifest["tgt_tokenizer"], config.tracking.model_name,
                                     test_metrics["test_bleu"], registry.EvalSet(list(test["src"]), list(test["tgt"])))


@flow(name="train-pipeline", log_prints=True)
def train_pipeline(config: PipelineConfig) -> dict[str, Any]:
    tracking_uri = resolve_tracking_uri(config.tracking.uri)
    manifest = prepared(config)
    run_id = start_run(config, manifest, tracking_uri)
    client = MlflowClient(tracking_uri)
    try:
        trained = train(config, manifest, tracking_uri, run_id)
        log_learning_curves(tracking_uri, run_id)
        test_metrics = evaluate(config, manifest, trained["checkpoint"], tracking_uri, run_id)
        registered = register(config, manifest, trained["checkpoint"], tracking_uri, run_id, test_metrics)
    except BaseException as e:  # Ctrl-C and Prefect's cancellation are BaseExceptions: the run was killed
        client.set_terminated(run_id, "FAILED" if isinstance(e, Exception) else "KILLED")
        raise
    client.set_tag(run_id, COMPLETE_TAG, "true")
    client.set_terminated(run_id)
    url = provenance.mlflow_run_url(tracking_uri, client.get_run(run_id).info.experiment_id, run_id)
    summary = {"run_id": run_id, "tracking_uri": provenance.redact(tracking_uri), "mlflow_url": url,
               **test_metrics, **registered,
               "best_val": {k: v for k, v in trained["metrics"].items() if k.startswith("val_")}}
    create_markdown_artifact(key="alignflow-run-summary", markdown=_summary_markdown(config, summary),
                             description="alignflow training run")
    if url:
        create_link_artifact(key="mlflow-run", link=url, link_text=f"MLflow run {run_id}",
                             description="this run in the MLflow UI")
    print(json.dumps({k: summary[k] for k in ("run_id", "test_bleu", "test_exact_match", "version",
                                               "champion")}))
    return summary


def _summary_markdown(config: PipelineConfig, s: dict[str, Any]) -> str:
    rows = "\n".join(f"| {k} | {v:.2f} |" for k, v in s.items() if k.startswith("test_"))
    run = f"[`{s['run_id']}`]({s['mlflow_url']})" if s["mlflow_url"] else f"`{s['run_id']}`"
    return (f"# alignflow run {run}\n\ncorpus: `{config.data.source}` · tracking: `{s['tracking_uri']}`"
            f"\n\n| metric | value |\n|---|---|\n{rows}\n\nregistered `{config.tracking.model_name}` version "
            f"{s['version']} ({'champion' if s['champion'] else 'challenger'}; champion test BLEU "
            f"{s['champion_test_bleu']:.2f}, version {s['champion_version']}); "
            f"`{s['probe']}` → `{s['probe_translation']}`\n")
