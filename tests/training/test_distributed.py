"""Distributed training on real Ray clusters: placement on two nodes, a worker killed mid-epoch, the pipeline
process killed and resumed, and Ctrl-C. Each test trains a tiny model for a few epochs."""

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from flows.config import load_config
from flows.pipeline import train_pipeline
from tests.conftest import REPO
from tests.console_checks import assert_console_is_clean
from training.tracking import RUN_NAME_TAG
from training.translator import MODEL_CONFIG, WEIGHTS, Translator

pytestmark = pytest.mark.integration

SMALL = ["data.sizes.train=1500", "data.sizes.validation=100", "data.sizes.test=100"]
# Prefect's ephemeral API gets 20 s to start by default, too little on a busy 2-core machine.
PATIENT_PREFECT = {"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180"}


@pytest.fixture(autouse=True)
def _patient_prefect() -> Iterator[None]:
    # Prefect read its environment at import, so this process needs its settings context changed.
    from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, temporary_settings

    with temporary_settings({PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: 180}):
        yield


# --- processes: only this test's own process tree is ever inspected or signalled ---------------------------

def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        kids = children.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _train_workers(root: int) -> list[int]:
    """Ray Train worker processes under `root` (Ray titles them `ray::RayTrainWorker...`)."""
    return [p for p in _descendants(root) if "RayTrainWorker" in _cmdline(p)]


def _group_workers(pgid: int) -> list[int]:
    """Ray Train worker processes left in process group `pgid`, whoever their parent is now."""
    out = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[3]) == pgid:
                out.append(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue
    return [p for p in out if "RayTrainWorker" in _cmdline(p)]


# --- Ray's storage: which checkpoint has the controller registered (what a restart resumes from) ----------

def _registered_epoch(ray_storage: Path) -> int | None:
    for snapshot in ray_storage.glob("*/checkpoint_manager_snapshot.json"):
        try:
            latest = json.loads(snapshot.read_text()).get("latest_checkpoint_result")
            progress = snapshot.parent / latest["checkpoint_dir_name"] / "progress.json"
            return int(json.loads(progress.read_text())["epoch"])
        except (OSError, ValueError, TypeError, KeyError):
            return None
    return None


def _wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the pipeline exited ({proc.returncode}) before {what}")
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


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
            _kill_tree(proc)


def test_workers_are_placed_on_both_nodes_and_a_model_is_registered(two_node_cluster, tracking_uri,
                                                                     tiny_overrides, tmp_path):
    args = [f"--set={o}" for o in [*tiny_overrides, *SMALL, "train.epochs=2"]]
    proc = _start_cli(args, tmp_path / "cli.log", {"RAY_ADDRESS": two_node_cluster})
    try:
        assert proc.wait(timeout=900) == 0, (tmp_path / "cli.log").read_text()[-3000:]
    finally:
        _kill_tree(proc)

    client = MlflowClient(tracking_uri)
    [run] = client.search_runs(client.get_experiment_by_name("alignflow").experiment_id)
    placed = json.loads(run.data.tags["ray.worker_nodes"])  # node id of each rank, gathered by the workers
    assert len(placed) == 2 and len(set(placed)) == 2  # one worker on each node
    assert run.info.status == "FINISHED"
    assert str(client.get_registered_model("tiny-dates").aliases["champion"]) == "1"


# --- 2. a worker killed mid-epoch ---------------------------------------------------------------------------

def test_a_worker_killed_mid_epoch_recovers_from_the_last_checkpoint(ray_cluster, tracking_uri, tiny_overrides,
                                                                     tmp_path, caplog):
    killed: list[tuple[int, int, int]] = []  # (pid, checkpointed epoch before / at the kill)

    def kill_a_worker_during_epoch_2() -> None:
        epoch = _wait_for(lambda: _registered_epoch(tmp_path / "work" / "ray"), 420, "the first checkpoint")
        time.sleep(1.0)  # into the next epoch, past its first batches
        pid = _wait_for(lambda: _train_workers(os.getpid())[-1:], 30, "a training worker")[0]
        at_kill = _registered_epoch(tmp_path / "work" / "ray") or epoch
        os.kill(pid, signal.SIGKILL)
        killed.append((pid, epoch, at_kill))

    killer = threading.Thread(target=kill_a_worker_during_epoch_2, daemon=True)
    killer.start()
    summary = train_pipeline(load_config(None, [*tiny_overrides, *SMALL, "train.epochs=3"]))
    killer.join(timeout=5)

    assert killed, "no worker was killed"
    pid, checkpointed, at_kill = killed[0]
    assert at_kill < 3, "killed after training had finished"
    client = MlflowClient(tracking_uri)
    assert summary["version"] == 1 and client.get_run(summary["run_id"]).info.status == "FINISHED"
    # every epoch logged once, at increasing global steps; the epochs after the kill ran in a new worker
    # group that started from the checkpoint, not from scratch
    epochs = _epoch_history(client, summary["run_id"])
    assert [e for _, e in epochs] == [1.0, 2.0, 3.0]
    # The restarted group began from a checkpoint, not from scratch: at least the one registered before the kill.
    # (Ray registers a checkpoint a moment after the workers log its epoch, so the killed group may already have
    # logged later epochs; the new group then repeats them without logging them twice.)
    # rank 0's progress lines reach the driver's log through the train task's Prefect logger
    resumed = [int(m) for m in re.findall(r"resuming at epoch (\d+)", caplog.text)]
    assert resumed and checkpointed <= resumed[0] - 1 <= 3, resumed
    starts = [s for _, s in _epoch_history(client, summary["run_id"], "start_epoch")]
    assert starts[0] == 1.0 and set(starts) <= {1.0, float(resumed[0])}
    _assert_no_duplicated_steps(client, summary["run_id"])


# --- 3. the pipeline process killed, then re-run with the same run name -------------------------------------

def _start_cli(args: list[str], log: Path, extra_env: dict[str, str] | None = None) -> subprocess.Popen:
    # Its own session, so the test can clean up exactly that process tree (its Ray cluster included).
    env = {**os.environ, "PYTHONPATH": str(REPO), **PATIENT_PREFECT, **(extra_env or {})}
    return subprocess.Popen([sys.executable, "-m", "flows.cli", "run", *args], stdout=log.open("w"),
                            stderr=subprocess.STDOUT, cwd=os.getcwd(), env=env, start_new_session=True)


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL whatever is left of the CLI's own process group (its local Ray cluster)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def test_a_killed_pipeline_resumes_from_its_checkpoint_in_the_same_mlflow_run(tracking_uri, tiny_overrides,
                                                                                tmp_path):
    args = [f"--set={o}" for o in [*tiny_overrides, *SMALL, "train.epochs=3", "tracking.run_name=resumable",
                                   "train.log_every=10"]]
    ray_storage = tmp_path / "work" / "ray"
    first = _start_cli(args, tmp_path / "first.log")
    try:
        _wait_for(lambda: _registered_epoch(ray_storage), 420, "the first checkpoint", first)
        os.kill(first.pid, signal.SIGKILL)  # the driver dies without any chance to clean up
        first.wait(timeout=30)
    finally:
        _kill_tree(first)
    checkpointed = _registered_epoch(ray_storage)
    assert checkpointed is not None and checkpointed < 3

    client = MlflowClient(tracking_uri)
    [killed_run] = client.search_runs(client.get_experiment_by_name("alignflow").experiment_id)
    assert killed_run.info.status == "RUNNING"  # nobody was left to mark it

    second = _start_cli(args, tmp_path / "second.log")
    try:
        assert second.wait(timeout=600) == 0, (tmp_path / "second.log").read_text()[-3000:]
    finally:
        _kill_tree(second)
    out = (tmp_path / "second.log").read_text()
    resumed = re.search(r"resuming at epoch (\d+)", out)
    assert resumed, out[-3000:]
    start = int(resumed[1])
    # From the checkpoint Ray had registered when the driver died, or from one written a moment later, before the
    # rest of the process group was killed -- never from scratch.
    assert start - 1 in {checkpointed, checkpointed + 1} and 1 < start <= 3

    runs = client.search_runs([killed_run.info.experiment_id], filter_string=f"tags.`{RUN_NAME_TAG}` = 'resumable'")
    assert [r.info.run_id for r in runs] == [killed_run.info.run_id]  # the same run, no duplicate
    assert runs[0].info.status == "FINISHED"
    epochs = _epoch_history(client, killed_run.info.run_id)
    starts = [s for _, s in _epoch_history(client, killed_run.info.run_id, "start_epoch")]
    assert [e for _, e in epochs] == [1.0, 2.0, 3.0]
    assert starts[0] == 1.0 and starts[-1] == float(start)
    _assert_no_duplicated_steps(client, killed_run.info.run_id)
    assert client.get_model_version("tiny-dates", "1").run_id == killed_run.info.run_id
    # and what the person who ran it again saw
    assert_console_is_clean(out.splitlines(), range(start, 4), 3, "tiny-dates", 1)


# --- 4. Ctrl-C, or SIGTERM as when Prefect cancels a flow run ------------------------------------------------

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
        _wait_for(lambda: _registered_epoch(ray_storage), 420, "the first checkpoint", proc)
        assert _train_workers(proc.pid), "training workers should be running"
        os.kill(proc.pid, signum)
        assert proc.wait(timeout=120) == code, (tmp_path / "run.log").read_text()[-3000:]
        # the job was stopped, not orphaned: no training worker of this run survives its driver
        _wait_for(lambda: not _group_workers(proc.pid), 30, "the training workers to exit")
    finally:
        _kill_tree(proc)
    assert message in (tmp_path / "run.log").read_text()

    client = MlflowClient(tracking_uri)
    [run] = client.search_runs(client.get_experiment_by_name("alignflow").experiment_id)
    assert run.info.status == "KILLED"
    # the last registered checkpoint still loads and translates
    epoch = _registered_epoch(ray_storage)
    assert epoch is not None and epoch < 6
    [snapshot] = ray_storage.glob("*/checkpoint_manager_snapshot.json")
    ckpt = snapshot.parent / json.loads(snapshot.read_text())["latest_checkpoint_result"]["checkpoint_dir_name"]
    [prepared] = (tmp_path / "work" / "prepared").glob("*/manifest.json")
    translator = Translator.from_files(ckpt / WEIGHTS, ckpt / MODEL_CONFIG, prepared.parent / "src_tokenizer.json",
                                       prepared.parent / "tgt_tokenizer.json")
    assert isinstance(translator.translate(["3 mar 98"])[0], str)
