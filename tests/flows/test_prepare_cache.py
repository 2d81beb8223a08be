"""The prepare_data task is reused across flow runs while corpus and settings are unchanged (Prefect cache
keyed on the data fingerprint), and the MLflow run records the corpus lineage."""

import shutil

import pytest
from mlflow import MlflowClient
from prefect import flow

from data_prep.prepare import Manifest
from flows import provenance
from flows.config import load_config
from flows.pipeline import prepared
from tests.data_prep.corpora import lines, write_text
from training.tracking import start_run

pytestmark = pytest.mark.integration


@flow(name="prepare-only")
def prepare_only(config) -> tuple[str, Manifest]:
    manifest = prepared(config)
    return ("Cached" if manifest.cached else "Completed"), manifest


def test_second_flow_run_reuses_prepared_data_and_a_changed_setting_invalidates_it(tmp_path, caplog):
    root = write_text(tmp_path / "corpus")
    overrides = [f"data.source={root}", "data.src_lang=de", "data.tgt_lang=en", "data.splits.validation=val",
                 "tokenizer.vocab_size=60", "tokenizer.min_frequency=1", "tokenizer.num_proc=2",
                 f"work_dir={tmp_path / 'work'}"]
    cfg = load_config(None, overrides)
    first_state, first = prepare_only(cfg)
    second_state, second = prepare_only(cfg)
    assert (first_state, second_state) == ("Completed", "Cached")
    assert second.fingerprint == first.fingerprint
    assert "LOAD_GLOBAL" not in caplog.text  # dill's dis.dis capture stays out of the flow's log (num_proc=2)
    assert "prepared " in caplog.text and "dropped as longer than" in caplog.text

    changed_state, changed = prepare_only(load_config(None, [*overrides, "tokenizer.lowercase=true"]))
    assert changed_state == "Completed" and changed.fingerprint != first.fingerprint
    (root / "train.en").write_bytes(lines(["A dog runs!", "Two men sit.", "A woman reads.", "Kids play."]))
    edited_state, edited = prepare_only(cfg)  # same settings, new file content
    assert edited_state == "Completed" and edited.fingerprint != first.fingerprint

    shutil.rmtree(tmp_path / "work" / "prepared" / edited.fingerprint)  # cache entry without its files
    rebuilt_state, rebuilt = prepare_only(cfg)
    assert rebuilt_state == "Completed" and rebuilt.reused is False


def test_run_records_source_digest_split_sizes_and_skips(tmp_path, tracking_uri):
    root = write_text(tmp_path / "corpus")
    (root / "test.en").write_bytes(lines(["A dog runs.", "", "A woman reads a book.", "Children play."]))
    cfg = load_config(None, [f"data.source={root}", "data.src_lang=de", "data.tgt_lang=en",
                             "data.splits.validation=val", "tokenizer.vocab_size=60", "tokenizer.min_frequency=1",
                             f"work_dir={tmp_path / 'work'}"])
    manifest = prepare_only(cfg)[1]
    run_id = start_run(tracking_uri, provenance.run_spec(cfg, manifest.fingerprint), manifest).run_id
    run = MlflowClient(tracking_uri).get_run(run_id)
    inputs = {d.dataset.name: d.dataset for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"corpus-train", "corpus-validation", "corpus-test"}
    assert all(d.digest == manifest.lineage["digest"][:16] for d in inputs.values())
    assert str(root) in inputs["corpus-test"].source and run.data.tags["data.location"] == str(root)
    assert run.data.tags["data.digest"] == manifest.lineage["digest"] and run.data.tags["data.format"] == "text"
    assert run.data.params["data.size.test"] == "3" and run.data.metrics["data.skipped_blank.test"] == 1
    assert run.data.metrics["data.dropped_too_long.train"] == 0
