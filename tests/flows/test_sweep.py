"""A real sweep: Ray Tune on the suite's local Ray cluster, a real MLflow store, the suite's Prefect server; one
trial's worker is SIGKILLed mid-run, and the MLflow UI compares the trials in headless chromium."""

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from flows.config import load_config
from tests.conftest import REPO, run_cli
from tests.ops import browser, servers
from tests.ops.conftest import ARTIFACTS
from tests.processes import kill_group, registered_epochs, train_workers, wait_for, worker_run_name

pytestmark = pytest.mark.integration

# configs/sweep-dates.yaml, smaller: its seed samples the absurd learning rate for the 3rd and 4th trials.
SMALL = ["data.sizes.train=2000", "data.sizes.validation=100", "data.sizes.test=100", "train.epochs=2",
         "tracking.model_name=sweep-dates", "tracking.experiment=sweeps"]


def _kill_a_trials_worker_after_its_first_checkpoint(ray_storage: Path, killed: list[str]) -> None:
    """SIGKILLs the Ray Train worker of the first trial to checkpoint epoch 1, as soon as Ray has registered that
    checkpoint: its epoch 2 (the last, a few seconds) is under way by then, and must not be over."""
    name = wait_for(lambda: next(iter(registered_epochs(ray_storage)), None), 600, "a trial's first checkpoint",
                    every=0.05)
    [pid] = wait_for(lambda: [p for p in train_workers() if worker_run_name(p) == name], 30, f"{name}'s worker",
                     every=0.05)
    os.kill(pid, signal.SIGKILL)
    killed.append(name)


@dataclass(frozen=True)
class Swept:
    root: Path  # the sweep's working directory: mlflow.db, work/
    tracking_uri: str
    summary: dict[str, Any]  # what sweep_pipeline returned
    killed: list[str]  # the Ray Train run (one trial's training) whose worker was SIGKILLed


@pytest.fixture(scope="module")
def swept(ray_cluster, tmp_path_factory: pytest.TempPathFactory) -> Swept:
    from flows.sweep import sweep_pipeline

    root = tmp_path_factory.mktemp("sweep")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    config = load_config(REPO / "configs" / "sweep-dates.yaml", [*SMALL, f"work_dir={root / 'work'}"])
    killed: list[str] = []
    killer = threading.Thread(target=_kill_a_trials_worker_after_its_first_checkpoint,
                              args=(root / "work" / "ray", killed), daemon=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.chdir(root)
        killer.start()
        summary = sweep_pipeline(config)
    killer.join(timeout=5)
    return Swept(root, uri, summary, killed)


def _children(swept: Swept) -> list[Any]:
    client = MlflowClient(swept.tracking_uri)
    return client.search_runs([client.get_experiment_by_name("sweeps").experiment_id],
                              filter_string=f"tags.mlflow.parentRunId = '{swept.summary['parent_run_id']}'")


def test_a_4_trial_asha_sweep_gives_a_parent_4_children_and_registers_the_best(swept: Swept):
    summary = swept.summary
    client = MlflowClient(swept.tracking_uri)
    exp = client.get_experiment_by_name("sweeps").experiment_id
    runs = client.search_runs([exp])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = _children(swept)
    assert len(parents) == 1 and parents[0].info.run_id == summary["parent_run_id"]
    assert len(children) == 4 and len(runs) == 5

    parent = parents[0]
    assert parent.data.params["sweep.space.train.lr"].startswith("choice [0.001")
    assert parent.data.params["sweep.scheduler"] == "asha" and parent.info.status == "FINISHED"
    assert parent.data.metrics["best_test_bleu"] == summary["test_bleu"]
    table = json.loads(Path(client.download_artifacts(parent.info.run_id, "sweep/trials.json")).read_text())
    assert len(table["data"]) == 4

    statuses = {r.info.run_id: r.data.tags["alignflow.trial_status"] for r in children}
    for run in children:
        assert run.data.params["train.lr"] in {"0.001", "0.003", "0.006", "3.0"}
        assert run.info.status == "FINISHED", statuses
        epochs = client.get_metric_history(run.info.run_id, "epoch")
        assert epochs and [m.value for m in epochs] == list(range(1, len(epochs) + 1)), (statuses, table["status"])
        assert epochs[0].step > 0
    assert any(s.startswith("stopped early by ASHA at epoch") for s in statuses.values()), statuses
    assert statuses[summary["run_id"]] in ("completed",) or "ASHA" in statuses[summary["run_id"]]

    version = client.get_model_version_by_alias("sweep-dates", "champion")
    assert version.run_id == summary["run_id"] and summary["champion"]


def test_a_trial_whose_worker_is_killed_resumes_from_its_checkpoint_and_completes(swept: Swept):
    """FailureConfig restarts the trial's worker group from its latest checkpoint, as for `alignflow run`: its
    second epoch ran in a new worker group that began at epoch 2, each epoch logged once."""
    from flows.pipeline import ray_run_name

    assert swept.killed, "no trial's worker was killed"
    [victim] = [r for r in _children(swept) if ray_run_name(r.info.run_id) == swept.killed[0]]
    assert victim.data.tags["alignflow.trial_status"] == "completed" and victim.info.status == "FINISHED"
    client = MlflowClient(swept.tracking_uri)
    starts = sorted((m.step, m.value) for m in client.get_metric_history(victim.info.run_id, "start_epoch"))
    assert [v for _, v in starts] == [1.0, 2.0], starts
    epochs = sorted(m.value for m in client.get_metric_history(victim.info.run_id, "epoch"))
    assert epochs == [1.0, 2.0]


# The parallel-coordinates plot starts on the first metric by name (a data-lineage count): put the sweep's metric
# there instead; show only the parameters and metrics that differ; close the assistant panel.
ARRANGE_TRIALS = """(async () => {
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  document.querySelector('[aria-label="Close"]')?.click();
  document.querySelectorAll('[role="switch"]').forEach((s) => {
    if (s.getAttribute("aria-checked") !== "true") s.click();
  });
  const label = [...document.querySelectorAll("div")].find(
    (e) => e.children.length === 0 && e.textContent.trim() === "Metrics:");
  const select = label.nextElementSibling;
  select.querySelectorAll(".du-bois-light-select-selection-item-remove").forEach((x) => x.click());
  await sleep(300);
  select.querySelector(".du-bois-light-select-selector").dispatchEvent(new MouseEvent("mousedown", {bubbles: true}));
  await sleep(300);
  const input = select.querySelector("input");
  Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, "value").set.call(input, "val_bleu");
  input.dispatchEvent(new Event("input", {bubbles: true}));
  await sleep(500);
  [...document.querySelectorAll(".du-bois-light-select-item-option")]
    .find((o) => o.getAttribute("title") === "val_bleu")?.click();
  await sleep(300);
  input.dispatchEvent(new KeyboardEvent("keydown", {key: "Escape", keyCode: 27, bubbles: true}));
  input.blur();
})()"""


def test_the_mlflow_ui_compares_the_sweeps_trials_in_a_real_browser(swept: Swept):
    if browser.chromium_path() is None:
        pytest.skip("chromium not installed (Debian: apt-get install -y chromium)")
    children = _children(swept)
    (swept.root / "ui").mkdir(exist_ok=True)
    server, url = servers.mlflow_server(swept.tracking_uri, swept.root / "ui")
    try:
        server.wait_until(lambda: servers.http_status(f"{url}/health") == 200, timeout=300)
        ids = urllib.parse.quote(json.dumps([r.info.run_id for r in children]))
        exps = urllib.parse.quote(json.dumps([children[0].info.experiment_id]))
        shot = ARTIFACTS / "mlflow-compare-sweep-trials.png"
        shot.unlink(missing_ok=True)
        text = browser.screenshot(f"{url}/#/compare-runs?runs={ids}&experiments={exps}", shot, {},
                                  wait_for=[*(r.info.run_name for r in children), "train.lr", "val_bleu"],
                                  script=ARRANGE_TRIALS, size=(1600, 1500))
    finally:
        server.stop()
    # every trial side by side, with the swept settings and the score they were ranked by
    for expected in (*(r.info.run_name for r in children), "Parallel Coordinates Plot", "train.lr",
                     "model.dropout", "val_bleu"):
        assert expected in text, expected
    assert shot.stat().st_size > 30_000  # a rendered page, not a blank one


def test_ctrl_c_stops_the_sweep_marks_its_runs_killed_and_the_same_command_resumes_it(tmp_path: Path):
    """`alignflow sweep` interrupted (SIGINT) once a trial has checkpointed: one line and exit 130, the parent and
    the unfinished trials' runs KILLED; the same command with the same tracking.run_name resumes the sweep (Tune's
    restore): the same parent, one child per trial, the interrupted trials trained on from their checkpoints."""
    work = tmp_path / "work"
    args = ["sweep", "--config", str(REPO / "configs" / "sweep-dates.yaml"),
            *(f"--set={o}" for o in [*SMALL, "sweep.num_trials=2", f"work_dir={work}", "tracking.run_name=nightly"])]
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "PYTHONPATH": str(REPO)}
    log = tmp_path / "first.log"
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", *args], stdout=log.open("w"), stderr=subprocess.STDOUT,
                            cwd=tmp_path, env={**os.environ, **env}, start_new_session=True)
    try:
        wait_for(lambda: registered_epochs(work / "ray"), 600, "a trial's first checkpoint", proc)
        os.kill(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=300) == 130, log.read_text()[-3000:]
    finally:
        kill_group(proc)
    first = log.read_text()
    hint = "sweep 'nightly' interrupted; to resume it, run the same command with --set tracking.run_name=nightly"
    assert hint in first and "alignflow: interrupted" in first.splitlines(), first[-3000:]
    assert "Traceback" not in first, first[-3000:]
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("sweeps").experiment_id
    [parent] = [r for r in client.search_runs([exp]) if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.status == "KILLED"
    killed = {r.info.run_id for r in client.search_runs([exp]) if r.info.status == "KILLED"} - {parent.info.run_id}
    assert killed, "no trial was interrupted"

    again = run_cli(*args, env=env, timeout=600)
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    assert f"resuming sweep 'nightly': MLflow run {parent.info.run_id} (was KILLED)" in again.stdout + again.stderr
    runs = client.search_runs([exp])
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(runs) == 3 and len(children) == 2  # the same parent, no duplicate child
    assert len({r.data.tags["alignflow.trial_id"] for r in children}) == 2
    assert client.get_run(parent.info.run_id).info.status == "FINISHED"
    for run in children:
        assert run.info.status == "FINISHED" and run.data.tags["alignflow.trial_status"] != "interrupted"
        epochs = [m.value for m in sorted(client.get_metric_history(run.info.run_id, "epoch"), key=lambda m: m.step)]
        assert epochs == list(range(1, len(epochs) + 1)), epochs  # each epoch once, across the interruption


def test_trials_rank_by_their_best_epoch_and_unscored_trials_come_last():
    from flows.sweep import Trial, ranking, ranking_markdown, ranking_table

    sweep = load_config(REPO / "configs" / "sweep-dates.yaml").sweep
    good = Trial("a", {"train.lr": 0.003, "model.dropout": 0.1},
                 [{"epoch": 1, "val_bleu": 20.0}, {"epoch": 2, "val_bleu": 30.0}], None, "run-a", "completed")
    stopped = Trial("b", {"train.lr": 3.0, "model.dropout": 0.2}, [{"epoch": 1, "val_bleu": 0.5}], None, "run-b",
                    "stopped early by ASHA at epoch 1")
    failed = Trial("c", {"train.lr": 0.001, "model.dropout": 0.0}, [], "RayTaskError: boom", "run-c")
    ranked = ranking([failed, stopped, good], sweep)
    assert [t.trial_id for t in ranked] == ["a", "b", "c"]
    table = ranking_table(ranked, sweep)
    assert table["val_bleu"] == [30.0, 0.5, None] and table["epochs"] == [2, 1, 0]
    assert table["status"][2] == "failed: RayTaskError: boom" and table["train.lr"] == [0.003, 3.0, 0.001]
    markdown = ranking_markdown(table, "s", {"run_id": "run-a", "test_bleu": 31.0, "version": 1, "champion": True})
    assert "| 1 | `run-a` | `completed` | 2 | 30 | 0.003 | 0.1 |" in markdown and "champion" in markdown
