"""`alignflow gc` removes checkpoints of completed runs and corpora no run needs, keeps what a resumable run
needs, and never touches the MLflow store."""

import os
import subprocess
import time

from mlflow import MlflowClient

from data_prep.prepare import MANIFEST, TMP_PREFIX
from flows.config import load_config
from flows.gc import collect
from flows.pipeline import ray_run_name
from tests.conftest import REPO, run_cli
from training.tracking import COMPLETE_TAG

OLD = time.time() - 30 * 24 * 3600


def _dir(path, old: bool = True, manifest: bool = False):
    path.mkdir(parents=True)
    (path / (MANIFEST if manifest else "checkpoint_000001")).write_text("{}")
    if old:
        for p in (path / (MANIFEST if manifest else "checkpoint_000001"), path):
            os.utime(p, (OLD, OLD))
    return path


def test_gc_keeps_what_resumable_runs_need_and_removes_the_rest(tmp_path, tracking_uri):
    client = MlflowClient(tracking_uri)
    exp = client.create_experiment("alignflow")
    runs = {name: client.create_run(exp, start_time=int(OLD * 1000), tags={"data_fingerprint": fp or ""}).info.run_id
            for name, fp in (("complete", "fpdone"), ("resumable", "fpneeded"), ("deleted", "fpdone"),
                             ("recent", None))}
    for name in ("complete", "recent"):
        client.set_tag(runs[name], COMPLETE_TAG, "true")
    client.delete_run(runs["deleted"])
    work = tmp_path / "work"
    ray = {name: _dir(work / "ray" / ray_run_name(run_id), old=name != "recent") for name, run_id in runs.items()}
    ray["unknown"] = _dir(work / "ray" / "train-0123456789ab")
    prepared = work / "prepared"
    corpora = {fp: _dir(prepared / fp, manifest=True) for fp in ("fpdone", "fpneeded", "fpunused")}
    corpora["fresh"] = _dir(prepared / "fpfresh", old=False, manifest=True)
    tmp = _dir(prepared / f"{TMP_PREFIX}fpx-abc")
    (prepared / ".fpunused.lock").touch()
    db = (tmp_path / "mlflow.db").stat()

    config = load_config(None, [f"work_dir={work}"])
    assert {p for p, _ in collect(config, 7, dry_run=True).remove} == {
        ray["complete"], ray["deleted"], corpora["fpdone"], corpora["fpunused"], tmp}
    assert all(p.exists() for p in [*ray.values(), *corpora.values(), tmp])  # a dry run deletes nothing
    collect(config, 7)
    assert not any(p.exists() for p in (ray["complete"], ray["deleted"], corpora["fpdone"], corpora["fpunused"], tmp))
    assert all(p.exists() for p in (ray["resumable"], ray["unknown"], ray["recent"], corpora["fpneeded"],
                                    corpora["fresh"]))
    assert not (prepared / ".fpunused.lock").exists()
    assert sorted(p.name for p in prepared.iterdir()) == ["fpfresh", "fpneeded"]  # nothing renamed aside is left
    assert (tmp_path / "mlflow.db").stat().st_size >= db.st_size and (tmp_path / "mlflow.db").exists()


def test_gc_command_dry_run(tmp_path, tracking_uri):
    _dir(tmp_path / "work" / "prepared" / f"{TMP_PREFIX}fpx-abc")
    result = run_cli("gc", "--set", f"work_dir={tmp_path / 'work'}", "--dry-run", "--older-than", "1", timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines() == [
        f"would remove {tmp_path / 'work' / 'prepared' / (TMP_PREFIX + 'fpx-abc')} (left by an interrupted "
        "preparation)"]


def test_make_clean_never_deletes_the_mlflow_store_or_checkpoints():
    commands = subprocess.run(["make", "-n", "clean"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert "rm -rf .venv" in commands
    for kept in ("mlflow.db", "mlartifacts", "alignflow-work"):
        assert kept not in commands, commands
