"""`register` retried after a partial success (Prefect retries it): the same version, never a second one."""

from pathlib import Path

import mlflow
import pytest
from datasets import Dataset, DatasetDict
from mlflow import MlflowClient
from safetensors.torch import save_model

from data_prep.config import TokenizerConfig
from data_prep.tokenize import train_tokenizers
from training import registry
from training.config import DecodingConfig, ModelConfig
from training.translator import MODEL_CONFIG, WEIGHTS, build_model

pytestmark = pytest.mark.integration

TEST = registry.EvalSet(["3 mar 98", "12/25/2001"], ["1998-03-03", "2001-12-25"])


@pytest.fixture
def trained(tmp_path: Path, tracking_uri: str) -> dict[str, str]:
    """An untrained tiny model saved as a checkpoint, its tokenizers, and an MLflow run to register it from."""
    corpus = DatasetDict({"train": Dataset.from_dict({"src": TEST.sources, "tgt": TEST.references})})
    src_tok, tgt_tok = train_tokenizers(corpus, TokenizerConfig(kind="char"))
    cfg = ModelConfig(emb_size=3, enc_hidden=5, dec_hidden=7, att_hidden=5)
    ckpt = tmp_path / "checkpoint"
    ckpt.mkdir()
    save_model(build_model(cfg, src_tok, tgt_tok), str(ckpt / WEIGHTS))
    (ckpt / MODEL_CONFIG).write_text(cfg.model_dump_json())
    src_tok.save(str(tmp_path / "src.json"))
    tgt_tok.save(str(tmp_path / "tgt.json"))
    client = MlflowClient(tracking_uri)
    exp = client.create_experiment("e", artifact_location=(tmp_path / "mlartifacts").as_uri())
    run = client.create_run(exp)
    return {"tracking_uri": tracking_uri, "run_id": run.info.run_id, "checkpoint": str(ckpt),
            "src_tokenizer": str(tmp_path / "src.json"), "tgt_tokenizer": str(tmp_path / "tgt.json"),
            "decoding": DecodingConfig(), "model_name": "retried", "test_score": 12.5, "test_set": TEST}


def _logged_models(client: MlflowClient, run_id: str) -> list:
    run = client.get_run(run_id)
    return client.search_logged_models([run.info.experiment_id], filter_string=f"source_run_id = '{run_id}'")


def test_register_twice_for_the_same_run_is_one_version(trained):
    first = registry.log_and_register(**trained)
    again = registry.log_and_register(**trained)
    client = MlflowClient(trained["tracking_uri"])
    assert [v.version for v in client.search_model_versions("name = 'retried'")] == [1]
    assert first == again and first["version"] == 1 and first["champion"]
    assert len(_logged_models(client, trained["run_id"])) == 1  # the retry did not log the model again


def test_a_retry_after_a_lost_registry_reply_finds_the_version_and_decides(trained, monkeypatch):
    register = mlflow.register_model

    def lost_reply(*args, **kwargs):  # the version is created, the reply never arrives
        register(*args, **kwargs)
        raise mlflow.exceptions.MlflowException("read timed out")

    monkeypatch.setattr(mlflow, "register_model", lost_reply)
    with pytest.raises(mlflow.exceptions.MlflowException, match="timed out"):
        registry.log_and_register(**trained)
    monkeypatch.setattr(mlflow, "register_model", register)
    result = registry.log_and_register(**trained)
    client = MlflowClient(trained["tracking_uri"])
    assert result["version"] == 1 and len(client.search_model_versions("name = 'retried'")) == 1
    assert client.get_model_version("retried", "1").tags[registry.DECISION_TAG] == "promoted: first version"


def test_a_retry_after_logging_reuses_the_logged_model(trained, monkeypatch):
    def refused(*args, **kwargs):
        raise mlflow.exceptions.MlflowException("503 Service Unavailable")

    monkeypatch.setattr(mlflow, "register_model", refused)
    with pytest.raises(mlflow.exceptions.MlflowException):
        registry.log_and_register(**trained)
    monkeypatch.undo()
    result = registry.log_and_register(**trained)
    client = MlflowClient(trained["tracking_uri"])
    assert result["version"] == 1 and len(_logged_models(client, trained["run_id"])) == 1
