"""What the integration tests need to watch and signal real processes: waiting on a condition, the Ray Train
workers of this test's own process tree only, and which checkpoint Ray has registered for a run."""

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float, what: str, proc: subprocess.Popen | None = None,
             every: float = 0.2) -> T:
    """Polls until `predicate()` is truthy and returns it; fails naming `what` on timeout, or as soon as `proc`
    (the process expected to make it true) has exited."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the pipeline exited ({proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILLs whatever is left of a CLI started in its own session (its local Ray cluster with it)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def _stat_fields(pid: str) -> list[str]:
    """/proc/PID/stat after the command name: [state, ppid, pgrp, ...]."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int(_stat_fields(entry.name)[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        kids = children.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def train_workers(root: int = 0) -> list[int]:
    """Ray Train worker processes under `root` (default: this process; Ray titles them `ray::RayTrainWorker`)."""
    return [p for p in descendants(root or os.getpid()) if "RayTrainWorker" in cmdline(p)]


def group_workers(pgid: int) -> list[int]:
    """Ray Train worker processes left in process group `pgid`, whoever their parent is now."""
    out = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int(_stat_fields(entry.name)[2]) == pgid:
                out.append(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue
    return [p for p in out if "RayTrainWorker" in cmdline(p)]


def worker_run_name(pid: int) -> str | None:
    """The Ray Train run a worker trains for: Ray Train V2 runs each worker in a working directory named after
    its run (RunConfig.name)."""
    try:
        return Path(os.readlink(f"/proc/{pid}/cwd")).name
    except OSError:
        return None


def registered_checkpoints(ray_storage: Path) -> dict[str, Path]:
    """The latest checkpoint Ray's controller has registered (what a restart resumes from), by run name
    (RunConfig.name), for every run under `ray_storage` that has one."""
    out = {}
    for snapshot in ray_storage.glob("*/checkpoint_manager_snapshot.json"):
        try:
            latest = json.loads(snapshot.read_text()).get("latest_checkpoint_result")
            out[snapshot.parent.name] = snapshot.parent / latest["checkpoint_dir_name"]
        except (OSError, ValueError, TypeError, KeyError):
            continue
    return out


def registered_epochs(ray_storage: Path) -> dict[str, int]:
    """The epoch of each run's latest registered checkpoint (see `registered_checkpoints`)."""
    out = {}
    for name, checkpoint in registered_checkpoints(ray_storage).items():
        try:
            out[name] = int(json.loads((checkpoint / "progress.json").read_text())["epoch"])
        except (OSError, ValueError, TypeError, KeyError):
            continue
    return out


def registered_epoch(ray_storage: Path) -> int | None:
    """The same for the one run under `ray_storage` (a single `alignflow run`)."""
    epochs = registered_epochs(ray_storage)
    return max(epochs.values()) if epochs else None
