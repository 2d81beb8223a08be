"""The whole pipeline on real parts: Prefect (the suite's API server) -> Ray Train (2 local workers) -> MLflow (sqlite),
then the registered model loaded in a fresh process."""

import re
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from data_prep.specials import EOS_ID
from tests.conftest import TrainedModel, run_cli
from training.config import DecodingConfig
from training.translator import DECODING, MODEL_CONFIG, WEIGHTS, Translator

pytestmark = pytest.mark.integration


def test_flow_trains_on_ray_records_in_mlflow_and_registers_a_usable_model(trained: TrainedModel):
    summary = trained.summary
    client = MlflowClient(trained.tracking_uri)
    run = client.get_run(summary["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["train.epochs"] == "3" and run.data.params["model.dec_hidden"] == "128"
    assert run.data.tags["corpus"] == "dates"
    # per-epoch metrics, logged once per epoch by rank 0 with increasing global steps
    history = client.get_metric_history(run.info.run_id, "val_bleu")
    steps = [m.step for m in history]
    assert 1 <= len(history) <= 3 and steps == sorted(set(steps)) and steps[0] > 0
    for key in ("train_loss", "val_loss", "val_ppl", "val_exact_match", "train_tokens_per_s", "test_bleu",
                "test_greedy_bleu"):
        assert key in run.data.metrics, key
    # every training pair once per epoch, all workers together
    assert [m.value for m in client.get_metric_history(run.info.run_id, "pairs_seen")] == [
        3000.0 * epoch for epoch in range(1, len(history) + 1)]
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
    # every checkpoint carries the decoding settings beside its weights
    checkpoints = list((trained.root / "work" / "ray").rglob(DECODING))
    assert checkpoints and all(DecodingConfig.model_validate_json(p.read_text()).beam_size == 3 for p in checkpoints)
    # train.average_checkpoints=2: test and registration used the mean of the last two epochs' weights, and the best
    # single checkpoint was scored alike, for comparison
    assert run.data.tags["averaged_checkpoints"].startswith("epochs 2, 3 (from ")
    assert "test_single_bleu" in run.data.metrics and "averaging" in artifacts
    # the model carries the packages' sources, not this interpreter's bytecode
    code = Path(mlflow.artifacts.download_artifacts("models:/tiny-dates/1")) / "code"
    files = {p.relative_to(code).as_posix() for p in code.rglob("*") if p.is_file()}
    assert "training/model.py" in files and "data_prep/tokenize.py" in files
    assert not any("__pycache__" in f for f in files), sorted(files)


def _translator(model_uri: str, decoding: DecodingConfig) -> Translator:
    """A Translator on the registered model's own files, with the given settings."""
    a = Path(mlflow.artifacts.download_artifacts(model_uri)) / "artifacts"
    return Translator.from_files(a / WEIGHTS, a / MODEL_CONFIG, a / "src_tokenizer.json", a / "tgt_tokenizer.json",
                                 decoding)


def test_the_registered_model_decodes_as_it_was_scored_and_translate_keeps_lines_aligned(trained: TrainedModel):
    # the run decoded its test set with beam 3: the registered model does the same unless a request says otherwise
    uri = "models:/tiny-dates/1"
    model = mlflow.pyfunc.load_model(uri)
    params = {p.name: p.default for p in model.metadata.get_params_schema().params}
    assert params["beam_size"] == 3 and params["length_penalty"] == 1.0 and params["max_output_ratio"] == 1.5
    texts = [f"{d} {m} {y}" for d, m, y in zip(range(1, 29), ["mar", "Dec", "july", "4", "oct"] * 6,
                                                 range(1990, 2018), strict=False)]
    beam3 = _translator(uri, DecodingConfig(beam_size=3)).translate(texts)
    assert list(model.predict(texts)) == beam3
    assert list(model.predict(texts, params={"beam_size": 1})) == _translator(uri, DecodingConfig()).translate(texts)

    # 200 lines, 17 of them blank (or only spaces), in; 200 lines out, blanks where they were, the rest exactly
    # the model's beam-3 translations
    blank = set(range(3, 200, 12))
    assert len(blank) == 17
    lines = ["" if i in blank else texts[i % len(texts)] for i in range(200)]
    lines[15] = "   "
    result = run_cli("translate", "--model", uri, "--batch-size", "16", stdin="\n".join(lines) + "\n")
    assert result.returncode == 0, result.stderr
    out = result.stdout.split("\n")[:-1]
    assert len(out) == 200
    assert [i for i, o in enumerate(out) if not o] == sorted(blank)
    assert [o for i, o in enumerate(out) if i not in blank] == [beam3[i % len(texts)] for i in range(200)
                                                                 if i not in blank]


def test_a_line_longer_than_the_model_was_trained_on_is_cut_with_a_warning_naming_it(trained: TrainedModel,
                                                                                       caplog):
    translator = _translator("models:/tiny-dates/1", DecodingConfig(max_source_tokens=8))
    long = "the 3rd of March 1998"
    out = translator.translate(["3 mar 98", "", long])
    assert len(out) == 3 and out[1] == ""
    ids = translator.encode([long])[0]  # uncut, ending in EOS
    cut, _ = translator.translate_ids([[*ids[:8], EOS_ID]])
    assert out[2] == translator.decode(cut[0])
    warned = [r.getMessage() for r in caplog.records if "source tokens" in r.getMessage()]
    assert warned == [f"input line 3: {len(ids) - 1} source tokens, only the first 8 are translated (the longest "
                      "source the model was trained on)"]


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
