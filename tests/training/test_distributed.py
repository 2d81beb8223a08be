"""Distributed training on real Ray clusters: placement on two nodes, a worker killed mid-epoch, the pipeline
process killed and resumed, and Ctrl-C. Each test trains a tiny model for a few epochs."""

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.conftest import REPO
from tests.console_checks import assert_console_is_clean
from tests.processes import group_workers, kill_group, registered_checkpoints, registered_epoch, train_workers, wait_for
from training.tracking import RUN_NAME_TAG
from training.translator import MODEL_CONFIG, WEIGHTS, Translator

pytestmark = pytest.mark.integration

SMALL = ["data.sizes.train=1500", "data.sizes.validation=100", "data.sizes.test=100"]
EPOCHS = 6  # of the killed-and-resumed run


def _epoch_history(client: MlflowClient, run_id: str, key: str = "epoch") -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def _assert_no_duplicated_steps(client: MlflowClient, run_id: str) -> None:
    for key in ("epoch", "start_epoch", "train_loss", "val_bleu", "val_loss"):
        steps = [m.step for m in client.get_metric_history(run_id, key)]
        assert len(steps) == len(set(steps)), (key, steps)


# --- 1. two nodes -----------------------------------------------------------------------------------------

@pytest.fixture
def two_node_cluster(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A real two-node cluster (1 CPU each) on this machine, in its own process group; yields its address."""
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # head, nodes and driver must agree
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("two_node_cluster.py"))],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        address = proc.stdout.readline().strip()
        assert address, "the two-node cluster did not start"
        yield address
    finally:
        with contextlib.suppress(OSError):
            proc.stdin.close()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            kill_group(proc)


def test_workers_are_placed_on_both_nodes_and_a_model_is_registered(two_node_cluster, tracking_uri,
                                                                     tiny_overrides, tmp_path):
    args = [f"--set={o}" for o in [*tiny_overrides, *SMALL, "train.epochs=2"]]
    proc = _start_cli(args, tmp_path / "cli.log", {"RAY_ADDRESS": two_node_cluster})
    try:
        assert proc.wait(timeout=900) == 0, (tmp_path / "cli.log").read_text()[-3000:]
    finally:
        kill_group(proc)

    client = MlflowClient(tracking_uri)
    [run] = client.search_runs(client.get_experiment_by_name("alignflow").experiment_id)
    placed = json.loads(run.data.tags["ray.worker_nodes"])  # node id of each rank, gathered by the workers
    assert len(placed) == 2 and len(set(placed)) == 2  # one worker on each node
    assert run.info.status == "FINISHED"
    assert str(client.get_registered_model("tiny-dates").aliases["champion"]) == "1"


# --- 2. a worker killed mid-epoch, then the pipeline process killed and re-run with the same run name -----

def _start_cli(args: list[str], log: Path, extra_env: dict[str, str] | None = None) -> subprocess.Popen:
    # Its own session, so the test can clean up exactly that process tree (its Ray cluster included).
    env = {**os.environ, "PYTHONPATH": str(REPO), **(extra_env or {})}
    return subprocess.Popen([sys.executable, "-m", "flows.cli", "run", *args], stdout=log.open("w"),
                            stderr=subprocess.STDOUT, cwd=os.getcwd(), env=env, start_new_session=True)


def _resumed_at(log: Path) -> list[int]:
    """The epochs a worker group began at after a restore, from rank 0's start lines in a run's console."""
    return [int(m) for m in re.findall(r"resuming at epoch (\d+)", log.read_text())]


def test_a_killed_worker_and_then_a_killed_pipeline_resume_from_checkpoints_in_the_same_mlflow_run(
        tracking_uri, tiny_overrides, tmp_path):
    """Two faults in one run: a training worker SIGKILLed mid-epoch (Ray Train restarts the worker group from
    the last checkpoint: FailureConfig), then the pipeline's own process SIGKILLed (re-running the same config
    resumes the same MLflow run from its checkpoint). Every epoch ends up logged once, never trained from scratch.
    Epochs take about a second here: the driver is killed at once after a checkpoint of the restarted group, and
    six epochs leave room for the resumed run whatever Ray registered in the meantime."""
    args = [f"--set={o}" for o in [*tiny_overrides, *SMALL, f"train.epochs={EPOCHS}", "tracking.run_name=resumable",
                                   "train.log_every=10"]]
    ray_storage, first_log = tmp_path / "work" / "ray", tmp_path / "first.log"
    first = _start_cli(args, first_log)
    try:
        before_worker_kill = wait_for(lambda: registered_epoch(ray_storage), 420, "the first checkpoint", first)
        time.sleep(0.3)  # into the next epoch (about a second), past its first batches
        worker = wait_for(lambda: train_workers(first.pid)[-1:], 30, "a training worker", first)[0]
        os.kill(worker, signal.SIGKILL)
        # The restarted group has started from a checkpoint and Ray has registered one of its own.
        wait_for(lambda: (resumed := _resumed_at(first_log)) and (registered_epoch(ray_storage) or 0) >= resumed[0],
                 420, "a checkpoint of the restarted worker group", first, every=0.05)
        os.kill(first.pid, signal.SIGKILL)  # the driver dies without any chance to clean up
        first.wait(timeout=30)
    finally:
        kill_group(first)
    [worker_restart] = _resumed_at(first_log)
    assert before_worker_kill <= worker_restart - 1 <= before_worker_kill + 1  # Ray may register one more first
    checkpointed = registered_epoch(ray_storage)
    assert checkpointed is not None and worker_restart <= checkpointed < EPOCHS - 1

    client = MlflowClient(tracking_uri)
    [killed_run] = client.search_runs(client.get_experiment_by_name("alignflow").experiment_id)
    assert killed_run.info.status == "RUNNING"  # nobody was left to mark it

    second = _start_cli(args, tmp_path / "second.log")
    try:
        assert second.wait(timeout=600) == 0, (tmp_path / "second.log").read_text()[-3000:]
    finally:
        kill_group(second)
    out = (tmp_path / "second.log").read_text()
    [start] = _resumed_at(tmp_path / "second.log")
    # From the checkpoint Ray had registered when the driver died, or from one written a moment later, before the
    # rest of the process group was killed -- never from scratch.
    assert start - 1 in {checkpointed, checkpointed + 1} and 2 < start < EPOCHS

    runs = client.search_runs([killed_run.info.experiment_id], filter_string=f"tags.`{RUN_NAME_TAG}` = 'resumable'")
    assert [r.info.run_id for r in runs] == [killed_run.info.run_id]  # the same run, no duplicate
    assert runs[0].info.status == "FINISHED"
    epochs = _epoch_history(client, killed_run.info.run_id)
    starts = [s for _, s in _epoch_history(client, killed_run.info.run_id, "start_epoch")]
    assert [e for _, e in epochs] == [float(e) for e in range(1, EPOCHS + 1)]
    # Each epoch was logged by a worker group that trained it: the first, the restarted one, the resumed run's.
    # Rank 0 logs an epoch as soon as it reported it, before Ray registers it, so the first run may have logged
    # one epoch the resumed run then trains again: that one keeps its first point, the curve never doubles.
    assert starts == sorted(starts) and all(s <= e for s, (_, e) in zip(starts, epochs, strict=True))
    assert starts[0] == 1.0 and set(starts) <= {1.0, float(worker_restart), float(start)} and starts[-1] == start
    _assert_no_duplicated_steps(client, killed_run.info.run_id)
    assert client.get_model_version("tiny-dates", "1").run_id == killed_run.info.run_id
    # and what the person who ran it again saw
    assert_console_is_clean(out.splitlines(), range(start, EPOCHS + 1), EPOCHS, "tiny-dates", 1)


# --- 3. Ctrl-C, or SIGTERM as when Prefect cancels a flow run --------------------------------------------

# Ctrl-C (SIGINT, exit 130, "alignflow: interrupted") takes the same abort path in training/trainer.py; SIGTERM also
# hands back to Prefect's own handler, so it is the variant kept in the suite (each costs a pipeline run, ~1 min).
@pytest.mark.parametrize(("signum", "code", "message"), [
    # Prefect records the crash, then lets the process end by the signal itself, as a terminated process should
    (signal.SIGTERM, -signal.SIGTERM, "Execution was aborted by a termination signal"),
])
def test_ctrl_c_or_sigterm_stops_the_training_job_and_leaves_a_usable_checkpoint(
        signum, code, message, tracking_uri, tiny_overrides, tmp_path):
    args = [f"--set={o}" for o in [*tiny_overrides, *SMALL, "train.epochs=6", "tracking.run_name=cancelled"]]
    ray_storage = tmp_path / "work" / "ray"
    proc = _start_cli(args, tmp_path / "run.log")
    try:
        wait_for(lambda: registered_epoch(ray_storage), 420, "the first checkpoint", proc)
        assert train_workers(proc.pid), "training workers should be running"
        os.kill(proc.pid, signum)
        assert proc.wait(timeout=120) == code, (tmp_path / "run.log").read_text()[-3000:]
        # the job was stopped, not orphaned: no training worker of this run survives its driver
        wait_for(lambda: not group_workers(proc.pid), 30, "the training workers to exit")
    finally:
        kill_group(proc)
    assert message in (tmp_path / "run.log").read_text()

    client = MlflowClient(tracking_uri)
    [run] = client.search_runs(client.get_experiment_by_name("alignflow").experiment_id)
    assert run.info.status == "KILLED"
    # the last registered checkpoint still loads and translates
    epoch = registered_epoch(ray_storage)
    assert epoch is not None and epoch < 6
    [ckpt] = registered_checkpoints(ray_storage).values()
    [prepared] = (tmp_path / "work" / "prepared").glob("*/manifest.json")
    translator = Translator.from_files(ckpt / WEIGHTS, ckpt / MODEL_CONFIG, prepared.parent / "src_tokenizer.json",
                                       prepared.parent / "tgt_tokenizer.json")
    assert isinstance(translator.translate(["3 mar 98"])[0], str)
