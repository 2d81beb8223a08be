"""A tracking server that falters during training: a real `mlflow server` on loopback, stopped in the middle of
training for longer than the buffer's retry window (one quick attempt per flush), then started again on the same
backend store and port -- or never again, until the run is resumed. Training never waits for it; every epoch's
metrics end up in the run exactly once."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.conftest import REPO, TINY
from tests.ops import servers
from tests.processes import kill_group, wait_for
from training.tracking import RUN_NAME_TAG

pytestmark = pytest.mark.integration

EPOCHS = 4
SMALL = ["data.sizes.train=1500", "data.sizes.validation=100", "data.sizes.test=100", f"train.epochs={EPOCHS}"]


class Tracking:
    """`mlflow server` on a sqlite store in `root`, always on the same port, so it can be stopped and started."""

    def __init__(self, root: Path) -> None:
        self.root, self.port = root, servers.free_port()
        self.url = f"http://{servers.HOST}:{self.port}"
        self.server: servers.Server | None = None

    def start(self) -> None:
        self.server, _ = servers.mlflow_server(f"sqlite:///{self.root / 'mlflow.db'}", self.root, port=self.port)
        try:  # a busy 2-core machine (other runs' Ray clusters) has been seen to take over 3 minutes to start one
            self.server.wait_until(lambda: servers.http_status(f"{self.url}/health", timeout=5) == 200, timeout=600)
        except BaseException:  # the fixture never yields, so its teardown would not stop it
            self.server.stop()
            raise

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()


@pytest.fixture
def tracking(tmp_path: Path):
    t = Tracking(tmp_path / "mlflow")
    t.start()
    yield t
    t.stop()


def _checkpoints(work: Path) -> int:
    """Checkpoints Ray has written for the run (directories appear once complete: Ray persists, then renames)."""
    return len(list((work / "ray").glob("train-*/checkpoint_*")))


def _start(args: list[str], out: Path, tracking_url: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_TRACKING_URI": tracking_url,
           "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180"}
    # Its own session: the test ends exactly this process tree (its Ray cluster included), nothing else.
    return subprocess.Popen([sys.executable, "-m", "flows.cli", "run", *[f"--set={a}" for a in args]],
                            stdout=(out / "stdout.log").open("w"), stderr=(out / "stderr.log").open("w"),
                            cwd=out, env=env, start_new_session=True)


def _logs(out: Path) -> str:
    return (out / "stdout.log").read_text() + (out / "stderr.log").read_text()


def _the_run(url: str, name: str):
    client = MlflowClient(url)
    exp = client.get_experiment_by_name("alignflow").experiment_id
    [run] = client.search_runs([exp], filter_string=f"tags.`{RUN_NAME_TAG}` = '{name}'")
    return client, run


def _assert_every_epoch_once(client: MlflowClient, run_id: str) -> None:
    epochs = sorted((m.step, m.value) for m in client.get_metric_history(run_id, "epoch"))
    assert [e for _, e in epochs] == [float(e) for e in range(1, EPOCHS + 1)], epochs
    for key in ("epoch", "train_loss", "val_loss", "val_bleu", "pairs_seen"):
        steps = [m.step for m in client.get_metric_history(run_id, key)]
        assert sorted(steps) == [s for s, _ in epochs], (key, steps)  # each epoch's step, once


def test_an_outage_in_the_middle_of_training_delays_the_metrics_not_the_training(tracking, tmp_path):
    work = tmp_path / "work"
    proc = _start([*TINY, *SMALL, f"work_dir={work}", "tracking.run_name=outage"], tmp_path, tracking.url)
    try:
        wait_for(lambda: _checkpoints(work) >= 1, 420, "the first checkpoint", proc)
        tracking.stop()
        down = time.monotonic()
        # Training goes on without the server: a further epoch is checkpointed while it is down...
        wait_for(lambda: _checkpoints(work) >= 2, 300, "a checkpoint during the outage", proc)
        # ...which lasts well past the buffer's retry window (one attempt, 5 s timeout, one quick retry).
        time.sleep(max(0.0, 20 - (time.monotonic() - down)))
        tracking.start()  # same store, same port
        assert proc.wait(timeout=420) == 0, _logs(tmp_path)[-4000:]
    finally:
        kill_group(proc)
    logs = _logs(tmp_path)
    assert "unreachable; training goes on" in logs and "reachable again" in logs, logs[-4000:]
    client, run = _the_run(tracking.url, "outage")
    assert run.info.status == "FINISHED"
    _assert_every_epoch_once(client, run.info.run_id)
    [version] = client.search_model_versions(f"name = 'tiny-dates' and run_id = '{run.info.run_id}'")
    assert version.version == "1"


def test_a_server_that_never_comes_back_ends_the_run_with_one_line_and_the_checkpoint_resumes_it(tracking,
                                                                                              tmp_path):
    work = tmp_path / "work"
    args = [*TINY, *SMALL, f"work_dir={work}", "tracking.run_name=lost", "tracking.outage_wait_minutes=0.1"]
    first = tmp_path / "first"
    first.mkdir()
    proc = _start(args, first, tracking.url)
    try:
        wait_for(lambda: _checkpoints(work) >= 1, 420, "the first checkpoint", proc)
        tracking.stop()
        code = proc.wait(timeout=420)
    finally:
        kill_group(proc)
    stderr = (first / "stderr.log").read_text()
    assert code == 2, _logs(first)[-4000:]
    assert "Traceback" not in stderr, stderr[-4000:]
    [error] = [line for line in stderr.splitlines() if line.startswith("alignflow: error:")]
    assert f"MLflow tracking server {tracking.url} unreachable" in error and "tracking.run_name=lost" in error
    assert str(work / "ray") in error and "checkpoint_" in error, error

    tracking.start()  # the server is back: the same config resumes the run from its latest checkpoint
    second = tmp_path / "second"
    second.mkdir()
    proc = _start(args, second, tracking.url)
    try:
        assert proc.wait(timeout=420) == 0, _logs(second)[-4000:]
    finally:
        kill_group(proc)
    client, run = _the_run(tracking.url, "lost")  # one run by that name: the same MLflow run, continued
    assert run.info.status == "FINISHED"
    _assert_every_epoch_once(client, run.info.run_id)
    [version] = client.search_model_versions(f"name = 'tiny-dates' and run_id = '{run.info.run_id}'")
    assert version.version == "1"
