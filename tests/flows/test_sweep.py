"""A real sweep: Ray Tune on the suite's local Ray cluster, a real MLflow store, Prefect's ephemeral API."""

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient

from flows.config import load_config
from tests.conftest import REPO

pytestmark = pytest.mark.integration

# configs/sweep-dates.yaml, smaller: its seed samples the absurd learning rate for the 3rd and 4th trials.
SMALL = ["data.sizes.train=2000", "data.sizes.validation=100", "data.sizes.test=100", "train.epochs=2",
         "tracking.model_name=sweep-dates", "tracking.experiment=sweeps"]


def test_a_4_trial_asha_sweep_gives_a_parent_4_children_and_registers_the_best(ray_cluster, tracking_uri: str,
                                                                                tmp_path: Path):
    from flows.sweep import sweep_pipeline

    config = load_config(REPO / "configs" / "sweep-dates.yaml", [*SMALL, f"work_dir={tmp_path / 'work'}"])
    summary = sweep_pipeline(config)

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name("sweeps").experiment_id
    runs = client.search_runs([exp])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == summary["parent_run_id"]]
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
        epochs = client.get_metric_history(run.info.run_id, "epoch")
        assert [m.value for m in epochs] == list(range(1, len(epochs) + 1)) and epochs[0].step > 0
        assert run.info.status == "FINISHED", statuses
    assert any(s.startswith("stopped early by ASHA at epoch") for s in statuses.values()), statuses
    assert statuses[summary["run_id"]] in ("completed",) or "ASHA" in statuses[summary["run_id"]]

    version = client.get_model_version_by_alias("sweep-dates", "champion")
    assert version.run_id == summary["run_id"] and summary["champion"]


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
