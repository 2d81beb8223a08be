"""Two runs at once in one directory: the same config, work dir, MLflow sqlite store and Prefect home, all new.
Both prepare the same corpus, both create the stores; both must finish and register."""

import os
import subprocess
import sys

import pytest
from datasets import load_from_disk
from mlflow import MlflowClient

from data_prep.prepare import MANIFEST, TMP_PREFIX
from tests.conftest import REPO

pytestmark = pytest.mark.integration


def test_two_runs_with_the_same_config_and_work_dir_both_finish_and_register(tmp_path, tracking_uri):
    overrides = ["data.sizes.train=600", "data.sizes.validation=60", "data.sizes.test=60",
                 "model.emb_size=16", "model.enc_hidden=16", "model.dec_hidden=32", "model.att_hidden=16",
                 "train.epochs=1", "train.heatmap_examples=1", "scaling.num_workers=1",
                 f"work_dir={tmp_path / 'work'}", "tracking.model_name=twin"]
    # Prefect's own temporary server, as without PREFECT_API_URL, in a home both runs create at once
    env = {**{k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"},
           "PREFECT_HOME": str(tmp_path / "prefect"), "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "flows.cli", "run", *(a for o in overrides for a in ("--set", o))]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                              cwd=tmp_path) for _ in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    for p, out in zip(procs, outputs, strict=True):
        assert p.returncode == 0, out[-3000:]

    versions = MlflowClient(tracking_uri).search_model_versions("name = 'twin'")
    assert sorted(int(v.version) for v in versions) == [1, 2]
    assert len({v.run_id for v in versions}) == 2
    prepared = tmp_path / "work" / "prepared"
    corpora = [d for d in prepared.iterdir() if d.is_dir()]
    assert len(corpora) == 1 and not corpora[0].name.startswith(TMP_PREFIX), sorted(prepared.iterdir())
    assert (corpora[0] / MANIFEST).exists()
    assert len(load_from_disk(str(corpora[0] / "encoded"))["train"]) == 600
