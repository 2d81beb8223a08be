"""A tracking server that falters during training: a real `mlflow server` on loopback, stopped in the middle of
training, and started again on the same backend store and port either too late for the run (which then ends with
one line, and its checkpoint resumes it) or past the buffer's retry window but in time. Training never waits for
it; every epoch's metrics end up in the run exactly once."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.conftest import REPO, TINY
from tests.ops import servers
from tests.processes import kill_group, registered_epoch, wait_for
from training.tracking import RUN_NAME_TAG

pytestmark = pytest.mark.integration

EPOCHS = 5  # 2 in the run that loses its server, 3 more in the run that resumes it
SMALL = ["data.sizes.train=1500", "data.sizes.validation=100", "data.sizes.test=100"]


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


def _start(args: list[str], out: Path, tracking_url: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_TRACKING_URI": tracking_url}
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


def test_a_lost_server_ends_the_run_in_one_line_the_checkpoint_resumes_it_and_a_brief_outage_delays_only_metrics(
        tracking, tmp_path):
    """The server goes down after epoch 1 of 2 and is not back within tracking.outage_wait_minutes: training
    finishes all the same, then the run ends with one line naming its checkpoint (exit 2). With the server back,
    the same config asking for more epochs continues the run from that checkpoint; the server goes down again after
    epoch 3 and is back 20 s later, well past the buffer's retry window (one attempt, 5 s timeout, one quick
    retry): that run finishes by itself, and every epoch's metrics are in the one MLflow run, once each."""
    work = tmp_path / "work"
    ray_storage, config = work / "ray", [*TINY, *SMALL, f"work_dir={work}", "tracking.run_name=lost"]
    first = tmp_path / "first"
    first.mkdir()
    proc = _start([*config, "train.epochs=2", "tracking.outage_wait_minutes=0.1"], first, tracking.url)
    try:
        wait_for(lambda: registered_epoch(ray_storage), 420, "the first checkpoint", proc)
        tracking.stop()
        code = proc.wait(timeout=420)
    finally:
        kill_group(proc)
    stderr = (first / "stderr.log").read_text()
    assert code == 2, _logs(first)[-4000:]
    assert "Traceback" not in stderr, stderr[-4000:]
    assert registered_epoch(ray_storage) == 2  # training went on without the server
    [error] = [line for line in stderr.splitlines() if line.startswith("alignflow: error:")]
    assert f"MLflow tracking server {tracking.url} unreachable" in error and "tracking.run_name=lost" in error
    assert str(ray_storage) in error and "checkpoint_" in error, error

    tracking.start()  # the server is back: the same config resumes the run from its latest checkpoint
    second = tmp_path / "second"
    second.mkdir()
    proc = _start([*config, f"train.epochs={EPOCHS}"], second, tracking.url)
    try:
        wait_for(lambda: (registered_epoch(ray_storage) or 0) >= 3, 420, "epoch 3's checkpoint", proc)
        tracking.stop()
        down = time.monotonic()
        # Training goes on without the server: a further epoch is checkpointed while it is down...
        wait_for(lambda: (registered_epoch(ray_storage) or 0) >= 4, 300, "a checkpoint during the outage", proc)
        time.sleep(max(0.0, 20 - (time.monotonic() - down)))  # ...which outlasts the retry window
        tracking.start()  # same store, same port
        assert proc.wait(timeout=420) == 0, _logs(second)[-4000:]
    finally:
        kill_group(proc)
    logs = _logs(second)
    assert "unreachable; training goes on" in logs and "reachable again" in logs, logs[-4000:]
    client, run = _the_run(tracking.url, "lost")  # one run by that name: the same MLflow run, continued
    assert run.info.status == "FINISHED"
    _assert_every_epoch_once(client, run.info.run_id)
    [version] = client.search_model_versions(f"name = 'tiny-dates' and run_id = '{run.info.run_id}'")
    assert version.version == "1"
