"""The driver side of training: a Ray Train `TorchTrainer` configured from the pipeline config."""

import os
from pathlib import Path
from typing import Any

import ray
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from training.config import ScalingSettings
from training.loop import LoopConfig, train_loop_per_worker


def connect(scaling: ScalingSettings) -> None:
    """Join `scaling.address` / RAY_ADDRESS if given; otherwise start a local cluster on this machine."""
    if ray.is_initialized():
        return
    address = scaling.address or os.environ.get("RAY_ADDRESS")
    ray.init(address=address, include_dashboard=False, log_to_driver=True,
             configure_logging=True, logging_level="WARNING")


def fit(job: LoopConfig, data: dict[str, Any], scaling: ScalingSettings, name: str, storage_path: Path,
        keep: int, max_failures: int = 0) -> dict[str, Any]:
    """Train on the Ray cluster; returns the best checkpoint's local path and its metrics."""
    connect(scaling)
    resources = {"CPU": scaling.cpus_per_worker, **({"GPU": 1} if scaling.use_gpu else {})}
    trainer = TorchTrainer(
        train_loop_per_worker,
        # The corpus goes through the object store, so workers on other nodes need no shared disk.
        train_loop_config={"job": job.model_dump(), "data": ray.put(data)},
        scaling_config=ScalingConfig(num_workers=scaling.num_workers, use_gpu=scaling.use_gpu,
                                     resources_per_worker=resources),
        run_config=RunConfig(
            name=name,
            storage_path=str(Path(storage_path).resolve()),
            checkpoint_config=CheckpointConfig(num_to_keep=keep, checkpoint_score_attribute=job.select_metric,
                                               checkpoint_score_order="max"),
            failure_config=FailureConfig(max_failures=max_failures),
        ),
    )
    result = trainer.fit()
    best, metrics = max(result.best_checkpoints, key=lambda cm: cm[1][job.select_metric])
    return {"checkpoint": best.path, "metrics": metrics, "last_metrics": result.metrics,
            "storage": result.path}
