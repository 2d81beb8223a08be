"""Logging the pyfunc model, registering it, and moving the `champion` alias only when it is better."""

from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature

import data_prep
import training
from training.translator import MODEL_CONFIG, WEIGHTS

PYFUNC = Path(__file__).with_name("pyfunc_model.py")
CHAMPION, CHALLENGER = "champion", "challenger"
SCORE_TAG = "test_bleu"
# Explicit requirements: MLflow would otherwise load the model in a subprocess to infer them.
REQUIREMENTS = ["torch==2.13.0", "tokenizers>=0.23,<0.24", "safetensors", "pydantic>=2", "numpy",
                "mlflow==3.17.2"]


def log_and_register(tracking_uri: str, run_id: str, checkpoint: str, src_tokenizer: str, tgt_tokenizer: str,
                     model_name: str, test_score: float, probe: str) -> dict[str, Any]:
    """Logs the model in `run_id`, checks it loads and translates, registers it, and updates aliases."""
    mlflow.set_tracking_uri(tracking_uri)
    artifacts = {"weights": str(Path(checkpoint) / WEIGHTS), "model_config": str(Path(checkpoint) / MODEL_CONFIG),
                 "src_tokenizer": src_tokenizer, "tgt_tokenizer": tgt_tokenizer}
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(
            name="model", python_model=str(PYFUNC), artifacts=artifacts,
            code_paths=[str(Path(training.__file__).parent), str(Path(data_prep.__file__).parent)],
            pip_requirements=REQUIREMENTS,
            # list[str] -> list[str]; beam_size is a per-request parameter (1 = greedy).
            signature=infer_signature([probe], ["translation"], params={"beam_size": 1}))
    # Round trip before registering: a model that cannot load and translate never gets a version.
    translation = mlflow.pyfunc.load_model(info.model_uri).predict([probe])
    mv = mlflow.register_model(info.model_uri, model_name)
    client = MlflowClient(tracking_uri)
    client.set_model_version_tag(model_name, mv.version, SCORE_TAG, f"{test_score:.4f}")
    client.set_registered_model_alias(model_name, CHALLENGER, mv.version)
    promoted = promote_if_better(client, model_name, mv.version, test_score)
    return {"model_uri": info.model_uri, "version": int(mv.version), "champion": promoted,
            "probe": probe, "probe_translation": translation[0]}


def promote_if_better(client: MlflowClient, name: str, version: str, score: float) -> bool:
    try:
        current = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:  # no champion yet
        current = None
    if current is not None and float(current.tags.get(SCORE_TAG, "-inf")) >= score:
        return False
    client.set_registered_model_alias(name, CHAMPION, version)
    return True
