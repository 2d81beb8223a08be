"""`alignflow sweep`: a Ray Tune search whose trials are the pipeline's own training, as a Prefect flow.

prepare each corpus the space asks for (the cached task `run` uses) -> one MLflow parent run -> Ray Tune runs the
trials, each building the same TorchTrainer as `run` (Ray Train V2 inside Tune: the trial function calls
`trainer.fit`, which reports every epoch to Tune through `TuneReportCallback`) and logging into a child run of its
own -> the best trial's best checkpoint is scored on the test split and goes through the champion gate.

Each trial runs as a Tune function trainable reserving no resources: the Ray Train workers it starts reserve
`scaling`'s, and the trials Tune runs at once are as many as the cluster holds workers for (`trials_at_once`), so
no trial's workers wait on another trial's."""

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from data_prep.prepare import Manifest
from flows import provenance
from flows.config import PipelineConfig, trial_config
from flows.pipeline import evaluate, loop_config, prepared, ray_run_name, register, storage_path
from flows.sweep_config import DATA_KEYS, SweepConfig, data_variants, trials_at_once
from training import tracking, trainer
from training.curves import log_learning_curves
from training.data import TrainData, load_train_data
from training.tracking import resolve_tracking_uri

CHECKPOINT_PATH = "checkpoint_path"  # what TuneReportCallback adds to a reported result
INTERRUPTED = "interrupted"  # a trial's status while its sweep, stopped by Ctrl-C, waits to be resumed


def corpus_key(values: dict[str, Any]) -> str:
    """Which prepared corpus a trial uses: its data and tokenizer values."""
    return json.dumps({k: v for k, v in sorted(values.items()) if k.startswith(DATA_KEYS)})


def run_trial(values: dict[str, Any], *, base: dict[str, Any], parent_id: str, tracking_uri: str,
              corpora: dict[str, Manifest], data: dict[str, TrainData], dashboard: bool) -> None:
    """One trial, inside a Tune actor: a child MLflow run, then the same training `alignflow run` does."""
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    config = trial_config(PipelineConfig.model_validate(base), values)
    key = corpus_key(values)
    manifest, trial_id = corpora[key], ray.tune.get_context().get_trial_id()
    spec = provenance.run_spec(config, manifest.fingerprint)
    spec = replace(spec, resume_name=None, tags={**spec.tags, tracking.PARENT_TAG: parent_id,
                                                 tracking.TRIAL_TAG: trial_id, tracking.SWEEP_TAG: "trial"})
    run_id = tracking.start_trial(tracking_uri, spec, manifest, parent_id, trial_id).run_id
    # An exception here may be a failure or Tune stopping the trial (ASHA): Tune's verdict is the driver's to
    # record (`settle`), so only a trial that returned ends its run itself.
    trained = trainer.fit(loop_config(config, manifest, tracking_uri, run_id), data[key], config.scaling,
                          name=ray_run_name(run_id), storage_path=storage_path(config),
                          keep=config.tracking.keep_checkpoints, say=_say, callbacks=[TuneReportCallback()],
                          dashboard=dashboard)
    # As `run` does: what rank 0 could not send to MLflow is in the latest checkpoint.
    tracking.deliver(tracking_uri, run_id, trained.latest, config.tracking.outage_wait_minutes * 60, _say)
    tracking.end_trial(tracking_uri, run_id, "completed")


def _say(line: str) -> None:
    print(line, flush=True)  # from a Tune actor, whose prints Ray forwards to the driver's console


def param_space(sweep: SweepConfig) -> dict[str, Any]:
    from ray import tune

    make = {"choice": tune.choice, "uniform": tune.uniform, "loguniform": tune.loguniform,
            "randint": lambda low, high: tune.randint(low, high + 1)}  # Tune's high is excluded, ours included
    return {key: (make["choice"](d.choice) if d.kind == "choice" else make[d.kind](*d.extremes()))
            for key, d in sweep.space.items()}


def max_epochs(config: PipelineConfig) -> int:
    domain = config.sweep.space.get("train.epochs") if config.sweep else None
    return int(max(domain.extremes())) if domain else config.train.epochs


@dataclass(frozen=True)
class Trial:
    """A finished trial as the driver sees it: what Tune reported, and its child run."""

    trial_id: str
    values: dict[str, Any]
    history: list[dict[str, Any]]  # every epoch Tune received
    error: str | None
    run_id: str | None = None
    status: str = "failed"

    def best(self, metric: str, mode: str) -> dict[str, Any] | None:
        rows = [r for r in self.history if isinstance(r.get(metric), int | float) and not math.isnan(r[metric])]
        pick = max if mode == "max" else min
        return pick(rows, key=lambda r: r[metric]) if rows else None


def tuner(config: PipelineConfig, parent_id: str, tracking_uri: str, corpora: dict[str, Manifest],
          data: dict[str, TrainData], at_once: int, name: str, resume: bool) -> Any:
    """Tune's search; with `resume`, the interrupted one of the same name is restored (Tune's own resume): its
    finished trials stay as they were, the others continue."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import BasicVariantGenerator

    sweep = config.sweep
    assert sweep is not None
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, base=config.model_dump(mode="json"), parent_id=parent_id,
                             tracking_uri=tracking_uri, corpora=corpora, data=data, dashboard=trainer.has_dashboard()),
        # The trial's Ray Train workers reserve what they need; the trial itself (driver of that training) takes
        # nothing they could use. Tune refuses an empty request, hence one byte of memory.
        {"CPU": 0, "memory": 1})
    path = str(Path(storage_path(config)).resolve() / name)
    if resume and tune.Tuner.can_restore(path):
        return tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=True)
    scheduler = (ASHAScheduler(max_t=max_epochs(config), grace_period=min(sweep.grace_period, max_epochs(config)),
                               reduction_factor=sweep.reduction_factor)
                 if sweep.scheduler == "asha" else FIFOScheduler())
    return tune.Tuner(
        trainable,
        param_space=param_space(sweep),
        tune_config=tune.TuneConfig(metric=sweep.metric, mode=sweep.order, scheduler=scheduler,
                                    num_samples=sweep.num_trials,
                                    # Tune hands max_concurrent_trials to its own generator only, not to one given
                                    search_alg=BasicVariantGenerator(random_state=sweep.seed, max_concurrent=at_once)),
        # A trial whose driver fails (its actor or node lost, an error outside the workers) is run again as Tune
        # does it, with the retries a run's worker group gets: its child run and Ray Train run are found by name,
        # so it resumes from its latest checkpoint, as a resumed sweep does.
        run_config=tune.RunConfig(name=name, storage_path=str(Path(storage_path(config)).resolve()), verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=config.scaling.max_failures)))


def per_trial(config: PipelineConfig) -> dict[str, float]:
    """What one trial's Ray Train workers reserve, all together."""
    return {r: v * config.scaling.num_workers for r, v in config.scaling.resources.items()}


def check_sweep(config: PipelineConfig, cluster: dict[str, float]) -> int:
    """Trials at once on `cluster` (its total resources); UnavailableError when no trial fits, or fewer than
    sweep.max_concurrent_trials asks for."""
    from data_prep.errors import UnavailableError

    assert config.sweep is not None
    try:
        return trials_at_once(config.sweep, per_trial(config), cluster)
    except ValueError as e:
        raise UnavailableError(str(e)) from None


@dataclass(frozen=True)
class Searched:
    trials: list[Trial]
    interrupted: bool  # Ctrl-C: Tune stopped and saved the search before every trial had finished


@task
def search(config: PipelineConfig, parent_id: str, tracking_uri: str, corpora: dict[str, Manifest],
           name: str, resume: bool) -> Searched:
    """Runs every trial on the Ray cluster; each trial's history and error as Tune recorded them."""
    trainer.connect(config.scaling)
    at_once = check_sweep(config, cluster_resources())
    get_run_logger().info(f"sweep {name!r}: {config.sweep.num_trials} trials, {at_once} at a time, "
                          f"{config.scaling.num_workers} worker(s) each, scheduler {config.sweep.scheduler}")
    data = {key: load_train_data(m.encoded) for key, m in corpora.items()}
    grid = tuner(config, parent_id, tracking_uri, corpora, data, at_once, name, resume).fit()
    trials = []
    for result in grid:
        frame = result.metrics_dataframe
        history = frame.to_dict("records") if frame is not None else []
        trials.append(Trial(result.metrics.get("trial_id", "") or Path(result.path).name,
                            {k: v for k, v in (result.config or {}).items()}, history,
                            None if result.error is None else str(result.error).splitlines()[0]))
    return Searched(trials, interrupted=was_interrupted(grid.experiment_path, config.sweep.num_trials))


def was_interrupted(experiment_path: str, num_trials: int) -> bool:
    """Whether Ctrl-C ended Tune's search early. Tune then stops the running trials as TERMINATED, as a finished
    search would, but the experiment state it saved just before (what `Tuner.restore` resumes) still has them
    running, and lacks the trials not yet started."""
    states = sorted(Path(experiment_path).glob("experiment_state-*.json"))
    if not states:
        return False
    trials = json.loads(states[-1].read_text())["trial_data"]
    statuses = [(json.loads(t) if isinstance(t, str) else t)["status"] for t, _ in trials]
    return len(statuses) < num_trials or any(s not in ("TERMINATED", "ERROR") for s in statuses)


def cluster_resources() -> dict[str, float]:
    import ray

    return {k: float(v) for k, v in ray.cluster_resources().items()}


def failed_status(error: str) -> str:
    """How a failed trial's status reads in its child run's tag and in the ranking table."""
    return f"failed: {error}"


def settle(trials: list[Trial], tracking_uri: str, parent_id: str, config: PipelineConfig) -> list[Trial]:
    """Each trial's child run and status. A trial that returned ended its run itself; one that failed (Tune
    recorded its error), or that Tune stopped (ASHA, or its last epoch reached), is still running in MLflow, and
    is ended here."""
    runs = tracking.trial_runs(tracking_uri, parent_id)
    settled = []
    for t in trials:
        run = runs.get(t.trial_id)
        if run is None:
            settled.append(t)
            continue
        status = run.data.tags.get(tracking.TRIAL_STATUS_TAG)
        if status == INTERRUPTED:  # Tune has finished it since the sweep was resumed: decided as below
            status = None
        if status is None and t.error is not None:
            status = "failed"
            tracking.end_trial(tracking_uri, run.info.run_id, failed_status(t.error), RuntimeError(t.error))
        elif status is None:  # stopped by Tune: ASHA before its last epoch, or at it
            epoch = int(max((r.get("epoch", 0) for r in t.history), default=0))
            if t.history and t.history[-1].get(CHECKPOINT_PATH):  # what rank 0 could not send before the stop
                tracking.deliver(tracking_uri, run.info.run_id, t.history[-1][CHECKPOINT_PATH],
                                 config.tracking.outage_wait_minutes * 60)
            epochs = trial_config(config, t.values).train.epochs
            status = "completed" if epoch >= epochs else f"stopped early by ASHA at epoch {epoch}"
            tracking.end_trial(tracking_uri, run.info.run_id, status)
        if t.history:
            log_learning_curves(tracking_uri, run.info.run_id)
        settled.append(replace(t, run_id=run.info.run_id, status=status))
    return settled


def interrupted(tracking_uri: str, parent_id: str, name: str) -> None:
    """Ctrl-C: the children of unfinished trials are ended KILLED, and the sweep stops here (its parent is ended
    KILLED too); the same command with tracking.run_name=<name> resumes it."""
    for run in tracking.trial_runs(tracking_uri, parent_id).values():
        if run.info.status == "RUNNING":
            tracking.end_trial(tracking_uri, run.info.run_id, INTERRUPTED, KeyboardInterrupt())
    print(f"sweep {name!r} interrupted; to resume it, run the same command with --set tracking.run_name={name}",
          flush=True)
    raise KeyboardInterrupt


def ranking(trials: list[Trial], sweep: SweepConfig) -> list[Trial]:
    """Best first by the sweep's metric (each trial's best epoch); trials without a score last."""
    def key(t: Trial) -> float:
        best = t.best(sweep.metric, sweep.order)
        if best is None:
            return math.inf
        return -best[sweep.metric] if sweep.order == "max" else best[sweep.metric]
    return sorted(trials, key=key)


def ranking_table(trials: list[Trial], sweep: SweepConfig) -> dict[str, list[Any]]:
    keys = list(sweep.space)
    table: dict[str, list[Any]] = {"rank": [], "run_id": [], "status": [], "epochs": [], sweep.metric: [],
                                   **{k: [] for k in keys}}
    for i, t in enumerate(trials, 1):
        best = t.best(sweep.metric, sweep.order)
        table["rank"].append(i)
        table["run_id"].append(t.run_id or "")
        table["status"].append(t.status if t.error is None else failed_status(t.error))
        table["epochs"].append(int(max((r.get("epoch", 0) for r in t.history), default=0)))
        table[sweep.metric].append(None if best is None else round(float(best[sweep.metric]), 4))
        for k in keys:
            table[k].append(t.values.get(k))
    return table


def ranking_markdown(table: dict[str, list[Any]], name: str, best: dict[str, Any] | None) -> str:
    cols = list(table)
    head = "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n"
    rows = "".join("| " + " | ".join(_cell(table[c][i]) for c in cols) + " |\n" for i in range(len(table["rank"])))
    outcome = (f"\nbest trial: run `{best['run_id']}`, test BLEU {best['test_bleu']:.2f}; registered version "
               f"{best['version']} ({'champion' if best['champion'] else 'challenger'})\n") if best else "\n"
    return f"# alignflow sweep `{name}`\n\n{head}{rows}{outcome}"


def _cell(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else f"`{value}`" if isinstance(value, str) and value else \
        str(value)


def corpora_for(config: PipelineConfig) -> dict[str, Manifest]:
    """Every corpus the space asks for, prepared (or found in the cache) before any trial starts."""
    return {corpus_key(variant): prepared(trial_config(config, variant)) for variant in data_variants(config.sweep)}


def register_best(config: PipelineConfig, best: Trial, corpora: dict[str, Manifest], tracking_uri: str
                  ) -> dict[str, Any]:
    """The best trial's best checkpoint (by tracking.select_metric, as `run` picks it): tested, then registered
    through the champion gate, both into the trial's own run."""
    trial = trial_config(config, best.values)
    manifest = corpora[corpus_key(best.values)]
    row = best.best(trial.tracking.select_metric, "max")
    assert row is not None and best.run_id is not None
    test = evaluate(trial, manifest, row[CHECKPOINT_PATH], tracking_uri, best.run_id)
    return {"run_id": best.run_id, **test, **register(trial, manifest, row[CHECKPOINT_PATH], tracking_uri,
                                                      best.run_id, test)}


def sweep_params(config: PipelineConfig) -> dict[str, Any]:
    sweep = config.sweep
    assert sweep is not None
    space = {f"sweep.space.{k}": f"{d.kind} {json.dumps(d.extremes())}" for k, d in sweep.space.items()}
    settings = sweep.model_dump(exclude={"space"}) | {"mode": sweep.order}
    return {**space, **{f"sweep.{k}": v for k, v in settings.items()}, "corpus": config.data.source}


@flow(name="sweep-pipeline", log_prints=True)
def sweep_pipeline(config: PipelineConfig) -> dict[str, Any]:
    config = config.model_copy(update={"work_dir": str(Path(config.work_dir).resolve())})  # trials run elsewhere
    tracking_uri = resolve_tracking_uri(config.tracking.uri)
    corpora = corpora_for(config)
    parent = tracking.start_sweep(tracking_uri, config.tracking.experiment,
                                  config.tracking.run_name or f"sweep {provenance.run_name(config)}",
                                  config.tracking.run_name,
                                  sweep_params(config), provenance.run_tags(config, next(iter(corpora.values()))
                                                                            .fingerprint),
                                  config.model_dump(mode="json"))
    name = config.tracking.run_name or f"sweep-{parent.run_id[:12]}"
    if not config.tracking.run_name:
        tracking.name_sweep(tracking_uri, parent.run_id, name)
    table: dict[str, list[Any]] = {}
    try:
        searched = search(config, parent.run_id, tracking_uri, corpora, name, parent.resumed)
        if searched.interrupted:
            interrupted(tracking_uri, parent.run_id, name)
        trials = settle(searched.trials, tracking_uri, parent.run_id, config)
        ranked = ranking(trials, config.sweep)
        table = ranking_table(ranked, config.sweep)
        if ranked[0].best(config.sweep.metric, config.sweep.order) is None:
            from data_prep.errors import AlignflowError

            raise AlignflowError(f"sweep {name!r}: no trial reported {config.sweep.metric}; see the trials' runs")
        best = register_best(config, ranked[0], corpora, tracking_uri)
    except BaseException as e:
        tracking.end_sweep(tracking_uri, parent.run_id, {}, {}, table, e)
        raise
    best_val = ranked[0].best(config.sweep.metric, config.sweep.order) or {}
    metrics = {**{f"best_{k}": v for k, v in best_val.items() if k.startswith("val_")},
               **{f"best_{k}": v for k, v in best.items() if k.startswith("test_")}}
    tracking.end_sweep(tracking_uri, parent.run_id, metrics,
                       {"best_trial_run_id": best["run_id"], "registered_version": str(best["version"])}, table)
    create_markdown_artifact(key="alignflow-sweep-ranking", markdown=ranking_markdown(table, name, best),
                             description="alignflow sweep: the trials ranked")
    print(f"done: sweep {name!r}, MLflow parent run {parent.run_id}: {len(trials)} trials "
          f"({', '.join(sorted({t.status for t in trials}))}); best run {best['run_id']} test BLEU "
          f"{best['test_bleu']:.2f}, registered {config.tracking.model_name} version {best['version']}"
          f"{', champion now' if best['champion'] else ', challenger'}")
    return {"parent_run_id": parent.run_id, "name": name, "trials": table, **best}
