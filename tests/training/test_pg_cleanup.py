"""A training run whose driver dies mid-run, as a sweep trial's actor does when Tune stops it, gives its workers'
CPUs back (training/pg_cleanup.py) on a cluster without a dashboard, like the suite's."""

import time
from pathlib import Path

import pytest
import ray

from tests.processes import wait_for

pytestmark = pytest.mark.integration


def _train_forever(config: dict) -> None:
    Path(config["started"]).touch()
    while True:
        time.sleep(0.5)


@ray.remote(num_cpus=0)
class TrialLikeDriver:
    """Calls `fit` from inside an actor, owning the Train controller as a Tune trial does."""

    def fit(self, storage: str, started: str) -> None:
        from ray.train import RunConfig, ScalingConfig

        from training.trainer import _AbortingTrainer

        trainer = _AbortingTrainer(_train_forever, train_loop_config={"started": started},
                                   scaling_config=ScalingConfig(num_workers=1),
                                   run_config=RunConfig(name="orphaned", storage_path=storage))
        trainer.dashboard = False
        trainer.fit()


def _free_cpus() -> float:
    return ray.available_resources().get("CPU", 0.0)


def test_the_placement_group_of_a_killed_driver_is_removed(ray_cluster, tmp_path):
    total = ray.cluster_resources()["CPU"]
    wait_for(lambda: _free_cpus() == total, 60, "the cluster to be idle")
    driver = TrialLikeDriver.remote()
    started = tmp_path / "started"
    driver.fit.remote(str(tmp_path / "ray"), str(started))
    wait_for(started.exists, 180, "the training function to run")
    assert _free_cpus() <= total - 1  # its worker's CPU, in the run's placement group
    ray.kill(driver)  # the controller it owns dies with it, before it could remove its placement group
    wait_for(lambda: _free_cpus() == total, 90, "the placement group's CPU to come free")
