"""The whole pipeline on real parts: Prefect (ephemeral API) -> Ray Train (2 local workers) -> MLflow (sqlite),
then the registered model loaded in a fresh process."""

import re
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from flows.config import load_config
from flows.pipeline import train_pipeline
from tests.conftest import run_cli

pytestmark = pytest.mark.integration


def test_flow_trains_on_ray_records_in_mlflow_and_registers_a_usable_model(ray_cluster, tracking_uri,
                                                                           tiny_overrides):
    cfg = load_config(None, tiny_overrides)
    summary = train_pipeline(cfg)

    client = MlflowClient(tracking_uri)
    run = client.get_run(summary["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["train.epochs"] == "3" and run.data.params["model.dec_hidden"] == "128"
    assert run.data.tags["corpus"] == "dates"
    # per-epoch metrics, logged once per epoch by rank 0 with increasing global steps
    history = client.get_metric_history(run.info.run_id, "val_bleu")
    steps = [m.step for m in history]
    assert 1 <= len(history) <= 3 and steps == sorted(set(steps)) and steps[0] > 0
    for key in ("train_loss", "val_loss", "val_ppl", "val_exact_match", "train_tokens_per_s", "test_bleu"):
        assert key in run.data.metrics, key
    assert {d.dataset.name for d in run.inputs.dataset_inputs} == {"dates-train", "dates-validation", "dates-test"}
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"tokenizers", "attention", "config.json", "test_translations.tsv"} <= artifacts
    heatmaps = client.list_artifacts(run.info.run_id, "attention/epoch_001")
    assert [a.path.rsplit("/", 1)[-1] for a in heatmaps] == ["example_0.png"]

    # the Prefect run summary links the MLflow run and the registered version
    from prefect.artifacts import Artifact

    artifact = Artifact.get("alignflow-run-summary", _sync=True)
    assert artifact is not None and summary["run_id"] in artifact.data and "version 1" in artifact.data

    # registered, champion (first version), and the logged model translates in a brand-new process
    assert summary["version"] == 1 and summary["champion"] is True
    assert str(client.get_model_version_by_alias("tiny-dates", "champion").version) == "1"
    text = "the 3rd of March 1998"
    expected = mlflow.pyfunc.load_model("models:/tiny-dates/1").predict([text])[0]
    fresh = run_cli("translate", "--model", "models:/tiny-dates/1", text)
    assert fresh.returncode == 0, fresh.stderr
    assert fresh.stdout.strip() == expected
    assert re.fullmatch(r"[0-9-]+", expected), expected  # the tiny model already writes in ISO shape
    piped = run_cli("translate", "--model", "models:/tiny-dates@champion", stdin=f"{text}\n3 mar 98\n")
    assert piped.returncode == 0 and piped.stdout.splitlines()[0] == expected
    assert len(piped.stdout.splitlines()) == 2
    # the model carries the packages' sources, not this interpreter's bytecode
    code = Path(mlflow.artifacts.download_artifacts("models:/tiny-dates/1")) / "code"
    files = {p.relative_to(code).as_posix() for p in code.rglob("*") if p.is_file()}
    assert "training/model.py" in files and "data_prep/tokenize.py" in files
    assert not any("__pycache__" in f for f in files), sorted(files)


def test_translate_with_an_unknown_model_is_one_line(tracking_uri):
    result = run_cli("translate", "--model", "models:/no-such-model/1", "x", timeout=120)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "no-such-model" in result.stderr


def test_bad_data_inside_the_flow_is_one_error_line_without_traceback(tmp_path, monkeypatch):
    # A corpus whose directory and files exist (so the CLI's quick pre-check passes) but whose sides disagree:
    # the error is found inside the flow's prepare_data task.
    monkeypatch.chdir(tmp_path)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for split in ("train", "validation", "test"):
        (corpus / f"{split}.src").write_text("ein haus\nzwei\n", encoding="utf-8")
        (corpus / f"{split}.tgt").write_text("a house\n", encoding="utf-8")
    result = run_cli("run", "--set", f"data.source={corpus}", "--set", "data.src_lang=src", "--set",
                     "data.tgt_lang=tgt", "--set", f"work_dir={tmp_path}", timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("alignflow: error:")]
    assert len(errors) == 1 and "train.src" in errors[0], result.stderr[-2000:]
