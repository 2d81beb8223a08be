"""The driver side of training: a Ray Train `TorchTrainer` configured from the pipeline config.

Fault tolerance is configuration (Ray Train V2): `FailureConfig(max_failures)` restarts the worker group from
the latest checkpoint when a worker or node dies, `CheckpointConfig` keeps the best k by the selection metric
(Ray never deletes the latest one), and re-running with the same `RunConfig(name, storage_path)` resumes an
interrupted run from its latest checkpoint. Ctrl-C or SIGTERM (Prefect's cancellation) aborts the run on the
cluster, then raises `KeyboardInterrupt`; the checkpoints already written stay usable.

The console carries the run's own progress lines, warnings and errors. Ray Train's INFO records (each report's
metrics, each checkpoint's path, worker-group set-up) go only to the session's log files
(/tmp/ray/session_latest/logs/train/).
"""

import contextlib
import math
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import ray
from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer
from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback

from data_prep.errors import UnavailableError
from training.config import ScalingSettings
from training.data import TrainData
from training.loop import LoopConfig, train_loop_per_worker
from training.pg_cleanup import ControllerPingingCleanerCallback
from training.progress import Relay

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def ray_address(scaling: ScalingSettings) -> str:
    return scaling.address or os.environ.get("RAY_ADDRESS") or "local"


def connect(scaling: ScalingSettings) -> None:
    """Join `scaling.address` / RAY_ADDRESS if given; otherwise start a new local cluster on this machine
    ("local", never the auto-detected cluster of someone else's `ray start`)."""
    if ray.is_initialized():
        return
    address = ray_address(scaling)
    if address == "local":
        if "RAY_AUTH_MODE" not in os.environ:
            # Ray turns token authentication on for a new local cluster, with a warning that it did unless the
            # mode was set. Set it the way Ray does (its config reads the variable once, at import).
            from ray._private.authentication.authentication_token_setup import _enable_token_auth

            _enable_token_auth()
        # Ray Train's preemption watcher polls for nodes being drained (spot instances); this machine is the
        # whole cluster, and the watcher's start logs an error line about its constructor arguments.
        os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
    on_term = signal.getsignal(signal.SIGTERM)
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=True,
                 configure_logging=True, logging_level="WARNING")
    except ConnectionError as e:
        raise UnavailableError(f"Ray cluster {address}: {str(e).splitlines()[0]}") from None
    # ray.init replaces the SIGTERM handler with a bare sys.exit; keep the host's (Prefect turns SIGTERM into
    # a cancelled or crashed flow run), which the abort handler below calls after stopping the training.
    if callable(on_term) and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_term)


def local_node() -> dict[str, float]:
    """The resources a new local cluster on this machine will have, as Ray itself works them out when it
    starts one (CPUs as the cgroup allows, detected GPUs, RAY_OVERRIDE_RESOURCES), without starting it."""
    from ray._private.resource_and_label_spec import ResourceAndLabelSpec  # pinned Ray: a private helper

    return {k: float(v) for k, v in ResourceAndLabelSpec().resolve(is_head=True).to_resource_dict().items()}


def check_fits(scaling: ScalingSettings, nodes: list[dict[str, float]] | None = None) -> None:
    """Raises UnavailableError if the cluster's nodes (default: those of the connected cluster) can never hold
    `num_workers` workers of `resources_per_worker`; Ray Train would wait for them without end. A worker's
    resources must come from one node, so each node holds floor(min over resources of node / per worker)
    workers. Skipped with `scaling.autoscaling`: the nodes such a cluster has now are not all it can have."""
    if scaling.autoscaling:
        return
    if nodes is None:
        nodes = [n["Resources"] for n in ray.nodes() if n["Alive"]]
    need = {r: v for r, v in scaling.resources.items() if v > 0}
    fits = sum(min(math.floor(node.get(r, 0.0) / v + 1e-9) for r, v in need.items()) for node in nodes)
    if fits >= scaling.num_workers:
        return
    total = {r: sum(node.get(r, 0.0) for node in nodes) for r in need}
    per_worker = ", ".join(f"{r}: {v:g}" for r, v in need.items())
    asked = ", ".join(f"{v * scaling.num_workers:g} {r}" for r, v in need.items())
    has = ", ".join(f"{total.get(r, 0.0):g} {r}" for r in need)
    raise UnavailableError(
        f"scaling: {scaling.num_workers} workers x {{{per_worker}}} ask for {asked}; the Ray cluster "
        f"({ray_address(scaling)}) has {has} on {len(nodes)} node(s), room for {fits} worker(s): lower "
        "scaling.num_workers or scaling.resources_per_worker, or set scaling.autoscaling if it adds nodes")


class _AbortingTrainer(TorchTrainer):
    """Ray's own Ctrl-C handler aborts the run but then calls `sys.exit(0)`, which a pipeline would take for
    success. This one aborts on SIGINT and SIGTERM alike and raises KeyboardInterrupt; `fit` then hands a
    SIGTERM to the previous handler (Prefect turns it into a cancelled or crashed flow run). Raising anything
    else from inside `ray.get` ends up as a SystemError."""

    stopped_by: int | None = None
    dashboard: bool | None = None  # whether the cluster runs a dashboard; None: ask the connected node

    def _register_sigint_handler(self, controller: Any) -> None:
        previous = {s: signal.getsignal(s) for s in _STOP_SIGNALS}

        def stop(signum: int, frame: FrameType | None) -> None:
            for s, handler in previous.items():  # a second signal takes the usual, immediate path
                signal.signal(s, handler)
            # abort() stops the workers and ends the controller actor, so its reply is an actor error
            with contextlib.suppress(ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                ray.get(controller.abort.remote(), timeout=60)
            self.stopped_by = signum
            raise KeyboardInterrupt(f"training aborted by {signal.Signals(signum).name}")

        for s in _STOP_SIGNALS:
            signal.signal(s, stop)

    def _create_default_callbacks(self) -> list[Any]:
        """Ray's callbacks, with another PlacementGroupCleaner where the cluster runs no dashboard. Ray's cleaner
        (a detached actor) asks the State API every second whether the controller still lives, to remove the
        placement group of a controller that died; the dashboard serves that API. Without one, every query
        fails and logs "State API may be temporarily unavailable" (1,712 of a 25-minute run's 1,940 console
        lines), and on a machine running other Ray instances it asks one of those instead of its own. A local
        cluster has no dashboard here (ray[default] is not installed): training/pg_cleanup.py asks the
        controller itself."""
        callbacks = super()._create_default_callbacks()
        if self.dashboard if self.dashboard is not None else has_dashboard():
            return callbacks
        return [ControllerPingingCleanerCallback() if isinstance(c, PlacementGroupCleanerCallback) else c
                for c in callbacks]


def has_dashboard() -> bool:
    """Whether the connected cluster runs the dashboard (and so the State API), asked on the driver: a Ray actor
    (a sweep's trial) has no global node to ask, and is told by its driver."""
    node = ray._private.worker._global_node
    return node is None or bool(node.webui_url)  # no local node: Ray Client, keep Ray's defaults


@dataclass(frozen=True)
class FitResult:
    checkpoint: str  # local directory of the best checkpoint by the selection metric
    metrics: dict[str, float]  # that checkpoint's epoch metrics
    last_metrics: dict[str, float]  # the last epoch's metrics
    latest: str  # local directory of the last epoch's checkpoint


def fit(job: LoopConfig, data: TrainData, scaling: ScalingSettings, name: str, storage_path: Path | str,
        keep: int, say: Callable[[str], None] = print, callbacks: list[Any] | None = None,
        dashboard: bool | None = None) -> FitResult:
    """Train on the Ray cluster: the best checkpoint, its metrics and the last epoch's metrics.

    `name` + `storage_path` identify the run: calling again with the same pair resumes it. On a multi-node
    cluster `storage_path` must be shared (NFS mount, or s3://... / gs://... via pyarrow filesystems): workers
    write checkpoints there and the driver reads the best one back. `say` prints rank 0's progress lines.
    `callbacks`: Ray Train user callbacks, e.g. Tune's TuneReportCallback when a sweep trial runs this;
    `dashboard`: whether the cluster has one (see `has_dashboard`), for callers that are not the driver.
    """
    connect(scaling)
    check_fits(scaling)
    storage = str(storage_path) if "://" in str(storage_path) else str(Path(storage_path).resolve())
    relay = Relay(say)
    trainer = _AbortingTrainer(
        train_loop_per_worker,
        # The encoded corpus (flat numpy arrays) goes through the object store: workers on the driver's node
        # read it zero-copy, workers on other nodes receive it over the network, so no shared disk is needed.
        train_loop_config={"job": job.model_dump(), "data": ray.put(data), "lines": relay.queue},
        torch_config=TorchConfig(backend="nccl" if scaling.use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=scaling.num_workers, use_gpu=scaling.use_gpu,
                                     resources_per_worker=scaling.resources),
        run_config=RunConfig(
            name=name,
            storage_path=storage,
            checkpoint_config=CheckpointConfig(num_to_keep=keep, checkpoint_score_attribute=job.select_metric,
                                               checkpoint_score_order="max"),
            failure_config=FailureConfig(max_failures=scaling.max_failures),
            logging_config=LoggingConfig(log_level="WARNING"),  # INFO records: to the session's log files only
            callbacks=callbacks,
        ),
    )
    trainer.dashboard = dashboard
    handlers = {s: signal.getsignal(s) for s in _STOP_SIGNALS}
    try:
        with relay:
            result = trainer.fit()
    except KeyboardInterrupt:
        on_term = handlers[signal.SIGTERM]
        if trainer.stopped_by == signal.SIGTERM and callable(on_term):
            on_term(signal.SIGTERM, None)
        raise
    finally:  # the abort handler only makes sense while this run is in flight
        if threading.current_thread() is threading.main_thread():
            for s, handler in handlers.items():
                signal.signal(s, handler)
    if not result.best_checkpoints:
        raise RuntimeError(f"Ray run {name!r} ended without a checkpoint (see {result.path})")
    best, metrics = max(result.best_checkpoints, key=lambda cm: cm[1][job.select_metric])
    # Evaluation and registration read files: fetch the checkpoint when it lives in cloud storage.
    local = best.path if "://" not in storage else best.to_directory()
    latest = result.checkpoint.path if "://" not in storage else result.checkpoint.to_directory()
    return FitResult(local, metrics, result.metrics, latest)
