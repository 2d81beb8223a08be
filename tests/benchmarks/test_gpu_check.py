"""benchmarks/gpu_check.py on CPU: its --cpu-smoke mode trains the kinds of variant it measures on GPUs (1 and 2
workers) through Ray Train's TorchTrainer, and reports their figures."""

import os
import re
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO

pytestmark = pytest.mark.integration
SCRIPT = REPO / "benchmarks" / "gpu_check.py"


def _run(*args: str, timeout: int) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # its own local cluster
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=REPO)


def test_cpu_smoke_trains_every_variant_through_the_trainer_and_reports_figures():
    done = _run("--cpu-smoke", timeout=900)
    out = done.stdout
    assert done.returncode == 0, out[-3000:] + done.stderr[-3000:]
    rows = {m[1]: m for m in re.finditer(
        r"^(\d x \w+)\s+(cpu)\s+(\d+)\s+([\d.]+)\s+([\d,]+)\s+([\d,]+)\s+([\d,]+)\s+[\d.]+->[\d.]+\s+ok$", out, re.M)}
    assert set(rows) == {"1 x fp32", "2 x fp32"}, out[-3000:]
    for row in rows.values():
        steps, steps_per_s, peak_mib = int(row[3]), float(row[4]), int(row[7].replace(",", ""))
        assert steps >= 3 and steps_per_s > 0 and peak_mib > 100  # a worker process holds torch: >100 MiB
    assert re.search(r"^scaling fp32: 2 workers give [\d.]+x the tokens/s of 1", out, re.M), out[-2000:]
    assert "training on 2 workers (cpu)" in out  # rank 0's progress lines, relayed by the driver
    assert out.rstrip().endswith("gpu_check --cpu-smoke: 2/2 variants ok through Ray Train's TorchTrainer")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU host would run the real check")
def test_without_a_gpu_it_says_so_in_one_line():
    done = _run(timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("gpu_check: torch ") and "sees no CUDA GPU" in last and last.endswith("--cpu-smoke to "
                                                                                                 "check the wiring")
