"""`alignflow gc`: deletes from the work dir what no run needs any more, and nothing else.

- Ray Train run directories (`<storage_path>/train-<run id>/`, checkpoints) of pipeline runs that completed or
  were deleted in MLflow. A run that never completed may be resumed, so its checkpoints stay; so do directories
  whose run the tracking store does not know (another store's, perhaps). The registry needs none of them: a
  registered model is a copy of its weights and tokenizers in the MLflow artifact store.
- Prepared corpora (`<work_dir>/prepared/<fingerprint>/`) that no resumable run uses and that no run has started
  with, and that were not prepared, within the last `older_than_days`; a later run that wants one again
  prepares it again.
- Temporary directories of interrupted preparations, older than that too.

Only what is older than `older_than_days` goes, so a run that just started is never pulled from under itself.
The MLflow store (runs, metrics, registered models, artifacts) is never touched."""

import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock

from data_prep.prepare import MANIFEST, TMP_PREFIX, lock_path
from flows.config import PipelineConfig
from flows.pipeline import ray_run_name
from training.tracking import RunState, resolve_tracking_uri, run_states

RAY_RUN_DIR = re.compile(r"train-[0-9a-f]{12}")
DAY_S = 24 * 3600.0


@dataclass
class Plan:
    remove: list[tuple[Path, str]] = field(default_factory=list)  # (path, why)
    keep: list[tuple[Path, str]] = field(default_factory=list)


def plan(config: PipelineConfig, runs: list[RunState], older_than_days: float, now: float | None = None) -> Plan:
    """What `collect` would remove and keep, and why; reads the disk, deletes nothing."""
    cutoff = (now or time.time()) - older_than_days * DAY_S
    out = Plan()
    _plan_ray_runs(out, config.scaling.storage_path or str(Path(config.work_dir) / "ray"), runs, cutoff)
    _plan_prepared(out, Path(config.work_dir) / "prepared", runs, cutoff)
    return out


def _plan_ray_runs(out: Plan, storage: str, runs: list[RunState], cutoff: float) -> None:
    if "://" in storage:
        out.keep.append((Path(storage), "remote storage_path: not collected"))
        return
    if not Path(storage).is_dir():
        return
    by_name = {ray_run_name(r.run_id): r for r in runs}
    for d in sorted(p for p in Path(storage).iterdir() if p.is_dir() and RAY_RUN_DIR.fullmatch(p.name)):
        run = by_name.get(d.name)
        if run is None:
            out.keep.append((d, "no run in this tracking store"))
        elif run.resumable:
            out.keep.append((d, f"run {run.run_id} can be resumed"))
        elif _mtime(d) > cutoff:
            out.keep.append((d, "written too recently"))
        else:
            out.remove.append((d, f"checkpoints of run {run.run_id}, which completed or was deleted"))


def _plan_prepared(out: Plan, prepared: Path, runs: list[RunState], cutoff: float) -> None:
    if not prepared.is_dir():
        return
    needed = {r.data_fingerprint for r in runs if r.resumable}
    last_run: dict[str | None, float] = {}
    for r in runs:
        last_run[r.data_fingerprint] = max(last_run.get(r.data_fingerprint, 0.0), r.started_s)
    for d in sorted(p for p in prepared.iterdir() if p.is_dir()):
        if d.name.startswith(TMP_PREFIX):
            if _mtime(d) <= cutoff:
                out.remove.append((d, "left by an interrupted preparation"))
        elif not (d / MANIFEST).exists():
            out.keep.append((d, "not a prepared corpus"))
        elif d.name in needed:
            out.keep.append((d, "used by a run that can be resumed"))
        elif max(_mtime(d / MANIFEST), last_run.get(d.name, 0.0)) > cutoff:
            out.keep.append((d, "prepared or used too recently"))
        else:
            out.remove.append((d, "a corpus no run needs"))


def _mtime(path: Path) -> float:
    return path.stat().st_mtime


def _remove(path: Path) -> None:
    """A prepared corpus goes under its lock (a run preparing the same corpus then waits and prepares anew),
    renamed aside first so no run ever sees half of it."""
    lock = lock_path(path.parent, path.name)
    if path.parent.name == "prepared" and not path.name.startswith(TMP_PREFIX):
        with FileLock(lock):
            aside = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{path.name}-gc-", dir=path.parent))
            path.rename(aside / path.name)
        shutil.rmtree(aside, ignore_errors=True)
        lock.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


def collect(config: PipelineConfig, older_than_days: float, dry_run: bool = False) -> Plan:
    """Prints one line per directory removed (or, with dry_run, that would be) and a count of those kept."""
    todo = plan(config, run_states(resolve_tracking_uri(config.tracking.uri)), older_than_days)
    for path, why in todo.remove:
        if not dry_run:
            _remove(path)
        print(f"{'would remove' if dry_run else 'removed'} {path} ({why})")
    for path, why in todo.keep:
        print(f"kept {path} ({why})")
    return todo
