"""One evaluation path: `alignflow evaluate` reproduces a run's test scores from the registered model, records
itself beside the training run, and the champion gate scores champion and challenger alike."""

import re
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from data_prep.prepare import prepare
from flows.config import load_config
from tests.conftest import TrainedModel, run_cli
from training import registry
from training.evaluate import eval_set, evaluate_model, evaluate_translator
from training.translator import Translator

pytestmark = pytest.mark.integration

# Another dates corpus (another seed): a test set the champion was never scored on.
OTHER = ["data.seed=7", "data.sizes.train=300", "data.sizes.validation=20", "data.sizes.test=60"]


def _printed(stdout: str) -> dict[str, str]:
    """`alignflow evaluate`'s score lines -> {metric: figure as printed}."""
    return {m["name"]: m["value"] for m in re.finditer(r"^(?P<name>BLEU -lc|BLEU|chrF|exact match) +(?P<value>[\d.]+)",
                                                        stdout, re.M)}


def test_evaluate_reproduces_the_runs_test_scores_and_is_recorded_beside_the_run(trained: TrainedModel, tmp_path):
    client = MlflowClient(trained.tracking_uri)
    run = client.get_run(trained.summary["run_id"])
    hyps = tmp_path / "hyps.txt"
    result = run_cli("evaluate", "--model", "models:/tiny-dates/1", "--output", str(hyps))
    assert result.returncode == 0, result.stderr[-3000:]
    printed = _printed(result.stdout)
    assert printed["BLEU"] == f"{run.data.metrics['test_bleu']:.2f}", result.stdout
    assert printed["BLEU -lc"] == f"{run.data.metrics['test_bleu_lc']:.2f}"
    assert printed["chrF"] == f"{run.data.metrics['test_chrf']:.2f}"
    assert "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:" in result.stdout  # the signature
    assert "beam_size=3" in result.stdout  # the model's own settings, those the run was scored with
    assert len(hyps.read_text().splitlines()) == 200

    # an evaluation run nested under the training run, linked to the version's model
    [evaluation] = client.search_runs([run.info.experiment_id], "tags.`alignflow.evaluation` = 'true'")
    assert evaluation.data.tags["mlflow.parentRunId"] == run.info.run_id
    assert evaluation.data.params["decoding.beam_size"] == "3" and evaluation.data.params["test_set"] == "dates test"
    assert evaluation.data.metrics["bleu"] == pytest.approx(run.data.metrics["test_bleu"], abs=1e-9)
    assert evaluation.data.tags["bleu_signature"].startswith("nrefs:1|case:mixed")


def test_the_champion_gate_on_another_test_set_scores_both_versions_with_the_challengers_settings(
        trained: TrainedModel):
    client = MlflowClient(trained.tracking_uri)
    a = Path(mlflow.artifacts.download_artifacts("models:/tiny-dates/1")) / "artifacts"
    src_tok, tgt_tok = str(a / "src_tokenizer.json"), str(a / "tgt_tokenizer.json")
    cfg = load_config(None, trained.overrides)
    own = cfg.decoding  # beam 3, as the shared run
    first = eval_set(prepare(cfg.data, cfg.tokenizer, Path(cfg.work_dir) / "prepared"))
    other_cfg = load_config(None, [*trained.overrides, *OTHER])
    other = eval_set(prepare(other_cfg.data, other_cfg.tokenizer, Path(other_cfg.work_dir) / "prepared"))
    assert other.fingerprint != first.fingerprint

    # version 1 of `gate`: the shared model, scored on the first test set with its own settings
    translator = Translator.from_files(a / "model.safetensors", a / "model_config.json", src_tok, tgt_tok, own)
    v1 = registry.log_and_register(trained.tracking_uri, trained.summary["run_id"], str(a), src_tok, tgt_tok, own,
                                   "gate", evaluate_translator(translator, first).scores["bleu"], first)
    assert v1["version"] == 1 and v1["champion"]
    # version 2 (the same weights) from a run of its own (a retry from the same run would find version 1),
    # scored on the other test set with settings that cut every output short
    challenger = own.override(beam_size=1, max_output_ratio=0.01)  # at most 6 tokens: no whole date
    score = evaluate_translator(translator, other, challenger).scores["bleu"]
    experiment_id = client.get_run(trained.summary["run_id"]).info.experiment_id
    challenger_run = client.create_run(experiment_id, run_name="gate-challenger").info.run_id
    # the run's config is the lineage `alignflow evaluate` reads the model's corpus from
    client.log_artifact(challenger_run, mlflow.artifacts.download_artifacts(
        run_id=trained.summary["run_id"], artifact_path="config.json", tracking_uri=trained.tracking_uri))
    v2 = registry.log_and_register(trained.tracking_uri, challenger_run, str(a), src_tok, tgt_tok,
                                   challenger, "gate", score, other)
    client.set_terminated(challenger_run)
    tags = client.get_model_version("gate", "2").tags
    # the champion was re-scored with the challenger's settings: the same weights give the same score (a tie
    # keeps the champion), not the one its own beam-3 settings give on that set
    assert float(tags["champion_test_bleu"]) == pytest.approx(score, abs=1e-4) and not v2["champion"]
    assert evaluate_model("models:/gate/1", other).scores["bleu"] != pytest.approx(score, abs=0.01)
    assert "beam_size=1 length_penalty=1.0 max_output_ratio=0.01" in tags["decision"], tags["decision"]

    # what `alignflow evaluate` prints for each version on that set, with those settings, is what was recorded
    flags = [arg for s in OTHER for arg in ("--set", s)] + ["--beam", "1", "--max-output-ratio", "0.01"]
    for version, recorded in (("1", tags["champion_test_bleu"]), ("2", tags["test_bleu"])):
        result = run_cli("evaluate", "--model", f"models:/gate/{version}", *flags)
        assert result.returncode == 0, result.stderr[-3000:]
        assert _printed(result.stdout)["BLEU"] == f"{float(recorded):.2f}", (version, result.stdout)


def test_evaluate_names_a_bad_model_or_split_in_one_line(trained: TrainedModel):
    for args, words in ((["--model", "models:/no-such-model/1"], "no-such-model"),
                        (["--model", "models:/tiny-dates/1", "--split", "dev"], "--split dev")):
        result = run_cli("evaluate", *args, timeout=180)
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr[-2000:]
        assert words in result.stderr
