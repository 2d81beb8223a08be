"""The training pipeline as a Prefect flow: prepare_data -> train -> evaluate -> register.

Tasks are thin: each calls one or two data_prep/training functions and hands on small typed values (the prepared
data's `Manifest`, training's `FitResult`, metrics). Every MLflow call lives in training/ (tracking, registry)."""

import contextlib
import dataclasses
import hashlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.client.schemas.objects import TaskRun
from prefect.context import TaskRunContext
from prefect.runtime import deployment
from prefect.states import State

from data_prep.errors import AlignflowError, UnavailableError
from data_prep.prepare import MANIFEST, Manifest, fingerprint, prepare
from flows import provenance
from flows.config import PipelineConfig
from training import averaging, registry, tracking, trainer
from training import evaluate as evaluation
from training.curves import log_learning_curves
from training.data import load_train_data
from training.loop import LoopConfig
from training.tracking import redact_uri, resolve_tracking_uri
from training.trainer import FitResult


def _prepare_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str | None:
    """Keyed on the corpus content + settings fingerprint and the work dir holding the prepared files; no key
    when the source is unreadable (the task then runs and raises the clear error)."""
    config = parameters["config"]
    try:
        fp = fingerprint(config.data, config.tokenizer)
    except AlignflowError:
        return None
    prepared = Path(config.work_dir).resolve() / "prepared"
    # "manifest-": results cached before the task returned a Manifest (a dict) are never looked up
    return f"manifest-{fp}-{hashlib.sha256(str(prepared).encode()).hexdigest()[:12]}"


# log_prints=False: datasets pickles the map function with dill for num_proc > 1, and dill reads a function's
# globals by capturing what dis.dis prints; with prints routed to the Prefect logger that capture comes back
# empty and the log fills with bytecode.
@task(cache_key_fn=_prepare_cache_key, persist_result=True, log_prints=False)
def prepare_data(config: PipelineConfig) -> Manifest:
    t0 = time.perf_counter()
    manifest = prepare(config.data, config.tokenizer, Path(config.work_dir) / "prepared")
    get_run_logger().info(
        f"prepared {manifest.source} ({'reused' if manifest.reused else 'built'}) in "
        f"{time.perf_counter() - t0:.1f}s: {manifest.splits}; dropped as longer than {config.data.max_len} "
        f"tokens {manifest.dropped_too_long}; skipped for a blank side {manifest.skipped_blank}; "
        f"build stage timings {manifest.timings}")
    return manifest


def prepared(config: PipelineConfig) -> Manifest:
    """prepare_data, skipped (Prefect cache) while corpus and settings are unchanged; rerun with the cache
    refreshed when the cached result's files were deleted. `cached` says whether the task was skipped."""
    # Scheduled runs retry the data step (a Hub download, a shared disk); a manual run fails fast.
    prep = (prepare_data.with_options(retries=2, retry_delay_seconds=[10, 60], retry_condition_fn=_transient)
            if deployment.id else prepare_data)
    state = prep(config, return_state=True)
    manifest = state.result()
    if not (Path(manifest.dir) / MANIFEST).exists():
        state = prep.with_options(refresh_cache=True)(config, return_state=True)
        manifest = state.result()
    if state.name == "Cached":
        print(f"prepared data reused from the cache: {manifest.dir}")
    return dataclasses.replace(manifest, cached=state.name == "Cached")


def loop_config(config: PipelineConfig, manifest: Manifest, tracking_uri: str, run_id: str) -> LoopConfig:
    """What every training worker is given: the run's settings, tokenizers and the MLflow run to log into."""
    return LoopConfig(
        model=config.model, train=config.train, select_metric=config.tracking.select_metric,
        src_tokenizer=Path(manifest.src_tokenizer).read_text(), tgt_tokenizer=Path(manifest.tgt_tokenizer).read_text(),
        threads=config.scaling.threads, grad_compression=config.scaling.grad_compression,
        tracking_uri=tracking_uri, run_id=run_id, max_source_tokens=config.data.max_len)


@task
def train(config: PipelineConfig, manifest: Manifest, tracking_uri: str, run_id: str) -> FitResult:
    # The Ray run is named after the MLflow run: continuing that run (same run_name) resumes this one.
    trained = trainer.fit(loop_config(config, manifest, tracking_uri, run_id), load_train_data(manifest.encoded),
                          config.scaling, name=ray_run_name(run_id), storage_path=storage_path(config),
                          keep=config.tracking.keep_checkpoints, say=get_run_logger().info)
    # Training never waited for MLflow; what follows needs it. What rank 0 could not send is in the latest
    # checkpoint: deliver it, waiting a bounded time for a server that is down.
    wait = config.tracking.outage_wait_minutes
    if not tracking.deliver(tracking_uri, run_id, trained.latest, wait * 60, get_run_logger().warning):
        raise UnavailableError(_outage(config, tracking_uri, run_id, trained.latest,
                                       f"for {wait:g} minutes after training (tracking.outage_wait_minutes)"))
    return trained


def _outage(config: PipelineConfig, tracking_uri: str, run_id: str, checkpoint: str, when: str) -> str:
    """One line: which server, and how to finish the run from its latest checkpoint once it is back."""
    name = config.tracking.run_name
    again = (f"run again with tracking.run_name={name} once it is back: it resumes from there, records them in "
             f"MLflow run {run_id} and finishes" if name else
             f"MLflow run {run_id} had no tracking.run_name, so it cannot be resumed; name runs to make them so")
    return (f"MLflow tracking server {redact_uri(tracking_uri)} unreachable {when}; nothing trained is "
            f"lost: the latest checkpoint {checkpoint} holds every epoch and the metrics not yet recorded; {again}")


@contextlib.contextmanager
def _outage_is_one_line(config: PipelineConfig, tracking_uri: str, run_id: str, checkpoint: str) -> Iterator[None]:
    """A tracking server lost after training (evaluation, registration): one line, not a traceback."""
    try:
        yield
    except Exception as e:
        if not tracking.is_outage(e, tracking_uri):
            raise
        raise UnavailableError(_outage(config, tracking_uri, run_id, checkpoint, "after training")) from None


def storage_path(config: PipelineConfig) -> Path | str:
    return config.scaling.storage_path or Path(config.work_dir) / "ray"


def ray_run_name(run_id: str) -> str:
    return f"train-{run_id[:12]}"


@task
def average(config: PipelineConfig, trained: FitResult, tracking_uri: str, run_id: str) -> str:
    """The average of the last train.average_checkpoints epochs' weights: the model tested and registered."""
    with _outage_is_one_line(config, tracking_uri, run_id, trained.latest):
        return averaging.average_run(trained.latest, int(trained.last_metrics["epoch"]),
                                     config.train.average_checkpoints, Path(config.work_dir) / "averaged" / run_id,
                                     tracking_uri, run_id)


@task
def evaluate(config: PipelineConfig, manifest: Manifest, checkpoint: str, tracking_uri: str, run_id: str,
             prefix: str = "test_") -> dict[str, float]:
    """Scores a checkpoint on the test split, from raw text to detokenized output."""
    with _outage_is_one_line(config, tracking_uri, run_id, checkpoint):
        return evaluation.evaluate_checkpoint(checkpoint, manifest, config.decoding, tracking_uri, run_id, prefix)


def _transient(task: Any, task_run: TaskRun, state: State) -> bool:
    """Retry IO failures, not user errors: a bad file or setting fails the same way every time."""
    return not isinstance(state.result(raise_on_failure=False), AlignflowError)


@task(retries=2, retry_delay_seconds=[2, 10], retry_condition_fn=_transient)  # IO against the tracking server
def register(config: PipelineConfig, manifest: Manifest, checkpoint: str, tracking_uri: str, run_id: str,
             test_metrics: dict[str, float]) -> dict[str, Any]:
    with _outage_is_one_line(config, tracking_uri, run_id, checkpoint):
        return registry.log_and_register(tracking_uri, run_id, checkpoint, manifest.src_tokenizer,
                                         manifest.tgt_tokenizer, config.decoding, config.tracking.model_name,
                                         test_metrics["test_bleu"], evaluation.eval_set(manifest, "test"))


@flow(name="train-pipeline", log_prints=True)
def train_pipeline(config: PipelineConfig) -> dict[str, Any]:
    tracking_uri = resolve_tracking_uri(config.tracking.uri)
    manifest = prepared(config)
    run = tracking.start_run(tracking_uri, provenance.run_spec(config, manifest.fingerprint), manifest)
    run_id = run.run_id
    try:
        trained = train(config, manifest, tracking_uri, run_id)
        with _outage_is_one_line(config, tracking_uri, run_id, trained.latest):
            log_learning_curves(tracking_uri, run_id)
        model = trained.checkpoint
        if config.train.average_checkpoints > 1:
            model = average(config, trained, tracking_uri, run_id)
        test_metrics = evaluate(config, manifest, model, tracking_uri, run_id)
        if model != trained.checkpoint:  # what averaging adds: the best single checkpoint, scored alike
            test_metrics |= evaluate(config, manifest, trained.checkpoint, tracking_uri, run_id, "test_single_")
        registered = register(config, manifest, model, tracking_uri, run_id, test_metrics)
    except BaseException as e:  # Ctrl-C and Prefect's cancellation are BaseExceptions: the run was killed
        tracking.end_run(tracking_uri, run_id, e)
        raise
    tracking.end_run(tracking_uri, run_id)
    url = provenance.mlflow_run_url(tracking_uri, run.experiment_id, run_id)
    summary = {"run_id": run_id, "tracking_uri": redact_uri(tracking_uri), "mlflow_url": url,
               **test_metrics, **registered,
               "best_val": {k: v for k, v in trained.metrics.items() if k.startswith("val_")}}
    create_markdown_artifact(key="alignflow-run-summary", markdown=_summary_markdown(config, summary),
                             description="alignflow training run")
    if url:
        create_link_artifact(key="mlflow-run", link=url, link_text=f"MLflow run {run_id}",
                             description="this run in the MLflow UI")
    print(_final_line(config, summary))
    return summary


def _final_line(config: PipelineConfig, s: dict[str, Any]) -> str:
    """Where the run is, what it scored, the version it registered and whether that version is the champion."""
    champion = (f"champion now (test BLEU {s['test_bleu']:.2f})" if s["champion"] else
                f"challenger; champion stays version {s['champion_version']} (test BLEU "
                f"{s['champion_test_bleu']:.2f} >= {s['test_bleu']:.2f})")
    return (f"done: MLflow run {s['run_id']} in experiment {config.tracking.experiment!r} "
            f"({s['mlflow_url'] or s['tracking_uri']}) | test BLEU "
            f"{s['test_bleu']:.2f}, exact match {s['test_exact_match']:.1f}% | registered "
            f"{config.tracking.model_name} version {s['version']}, {champion}")


def _summary_markdown(config: PipelineConfig, s: dict[str, Any]) -> str:
    rows = "\n".join(f"| {k} | {v:.2f} |" for k, v in s.items() if k.startswith("test_"))
    run = f"[`{s['run_id']}`]({s['mlflow_url']})" if s["mlflow_url"] else f"`{s['run_id']}`"
    return (f"# alignflow run {run}\n\ncorpus: `{config.data.source}` · tracking: `{s['tracking_uri']}`"
            f"\n\n| metric | value |\n|---|---|\n{rows}\n\nregistered `{config.tracking.model_name}` version "
            f"{s['version']} ({'champion' if s['champion'] else 'challenger'}; champion test BLEU "
            f"{s['champion_test_bleu']:.2f}, version {s['champion_version']}); "
            f"`{s['probe']}` → `{s['probe_translation']}`\n")
