"""What MLflow's UI reads from the experiment and runs alignflow creates: the experiment's kind (model training,
not GenAI) and each run's source (entry point, git commit), in a real MLflow store."""

import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from data_prep.prepare import Manifest, prepare
from flows import provenance
from flows.config import load_config
from tests.data_prep.corpora import write_text
from training.tracking import EXPERIMENT_KIND_TAG, MODEL_TRAINING, start_run

pytestmark = pytest.mark.integration


def _prepared(tmp_path: Path) -> tuple[list[str], Manifest]:
    overrides = [f"data.source={write_text(tmp_path / 'corpus')}", "data.src_lang=de", "data.tgt_lang=en",
                 "data.splits.validation=val", "tokenizer.vocab_size=60", "tokenizer.min_frequency=1",
                 "tokenizer.num_proc=1", f"work_dir={tmp_path / 'work'}"]
    cfg = load_config(None, overrides)
    return overrides, prepare(cfg.data, cfg.tokenizer, tmp_path / "work" / "prepared")


def test_runs_carry_source_tags_and_experiments_the_model_training_kind(tmp_path, tracking_uri):
    overrides, manifest = _prepared(tmp_path)
    client = MlflowClient(tracking_uri)
    older = client.create_experiment("made-before")  # an experiment made before alignflow set the kind
    for experiment in ("alignflow-new", "made-before"):
        cfg = load_config(None, [*overrides, f"tracking.experiment={experiment}"])
        run = client.get_run(start_run(tracking_uri, provenance.run_spec(cfg, manifest.fingerprint), manifest).run_id)
        exp = client.get_experiment(run.info.experiment_id)
        assert exp.tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING == "custom_model_development"
        tags = run.data.tags
        assert tags["mlflow.source.name"] == provenance.entry_point() and tags["mlflow.source.type"] == "LOCAL"
        assert tags["mlflow.source.git.commit"] == tags["git_commit"].removesuffix("+dirty")
    assert exp.experiment_id == older
    client.set_experiment_tag(older, EXPERIMENT_KIND_TAG, "genai_development")  # a kind chosen in the UI stays
    start_run(tracking_uri, provenance.run_spec(cfg, manifest.fingerprint), manifest)
    assert client.get_experiment(older).tags[EXPERIMENT_KIND_TAG] == "genai_development"


def test_the_entry_point_names_the_command_or_the_deployment():
    assert provenance.entry_point(argv=["/r/.venv/bin/alignflow", "run", "--set", "x=1"]) == "alignflow run"
    assert provenance.entry_point(argv=["/r/flows/cli.py", "run"]) == "alignflow run"  # python -m flows.cli
    assert provenance.entry_point(argv=["/usr/bin/pytest", "tests/x.py::t"]) == "pytest"
    assert provenance.entry_point("nightly", argv=[sys.executable]) == "prefect deployment nightly"
