"""`alignflow run` fails at once, one line per problem, on what can never work: a server named in the config or
environment that does not answer, a job the Ray cluster can never hold."""

import os
import time

import pytest

from data_prep.errors import UnavailableError
from tests.conftest import run_cli
from tests.ops.servers import free_port
from training.config import ScalingSettings
from training.trainer import check_fits, local_node


def _errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("alignflow: error:")]


def test_servers_that_do_not_answer_are_one_line_each_before_any_work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    prefect, mlflow, ray = free_port(), free_port(), free_port()  # bound once, then closed: nothing listens
    result = run_cli("run", "--set", f"work_dir={tmp_path / 'work'}", env={
        "PREFECT_API_URL": f"http://127.0.0.1:{prefect}/api",
        "MLFLOW_TRACKING_URI": f"http://user:secret@127.0.0.1:{mlflow}",
        "RAY_ADDRESS": f"127.0.0.1:{ray}"}, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    errors = _errors(result.stderr)
    assert len(errors) == 3, result.stderr[-2000:]
    assert f"PREFECT_API_URL=http://127.0.0.1:{prefect}/api: unreachable" in errors[0]
    assert f"MLflow tracking server http://***@127.0.0.1:{mlflow}: unreachable" in errors[1]
    assert f"Ray cluster 127.0.0.1:{ray}: unreachable" in errors[2]
    assert "secret" not in result.stderr
    assert not (tmp_path / "work").exists() and not (tmp_path / "mlflow.db").exists()


@pytest.mark.integration
def test_more_workers_than_the_cluster_has_is_one_line_within_seconds(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    workers = 4 * (os.cpu_count() or 1)  # 8 on a 2-core machine: a new local cluster has one CPU per core
    t0 = time.monotonic()
    result = run_cli("run", "--set", f"scaling.num_workers={workers}", "--set", f"work_dir={tmp_path / 'work'}",
                     timeout=120)
    elapsed = time.monotonic() - t0
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    [error] = _errors(result.stderr)
    assert f"{workers} workers x {{CPU: 1}} ask for {workers} CPU" in error
    assert f"has {os.cpu_count()} CPU on 1 node(s)" in error
    assert not (tmp_path / "work").exists()  # nothing was prepared
    assert elapsed < 30, f"took {elapsed:.0f}s"  # the bound: it used to wait for resources for ever


def test_check_fits_counts_whole_workers_per_node(ray_cluster):  # 2 CPUs, one node
    check_fits(ScalingSettings(num_workers=2))
    check_fits(ScalingSettings(num_workers=4, resources_per_worker={"CPU": 0.5}))
    with pytest.raises(UnavailableError, match=r"3 workers x \{CPU: 1\} ask for 3 CPU; .* has 2 CPU on 1 node"):
        check_fits(ScalingSettings(num_workers=3))
    with pytest.raises(UnavailableError, match=r"room for 0 worker\(s\)"):
        check_fits(ScalingSettings(num_workers=1, resources_per_worker={"CPU": 3}))
    with pytest.raises(UnavailableError, match=r"ask for 1 GPU, 1 CPU; .* has 0 GPU, 2 CPU"):
        check_fits(ScalingSettings(num_workers=1, use_gpu=True))
    check_fits(ScalingSettings(num_workers=64, autoscaling=True))  # nodes may yet come


def test_a_new_local_cluster_is_judged_by_what_ray_would_give_it():
    node = local_node()
    assert node["CPU"] >= 1 and node.get("GPU", 0.0) >= 0
    check_fits(ScalingSettings(num_workers=1), [node])
    with pytest.raises(UnavailableError, match=rf"has {node['CPU']:g} CPU on 1 node"):
        check_fits(ScalingSettings(num_workers=int(node["CPU"]) + 1), [node])
