"""Logging the pyfunc model, registering it, and the champion/challenger aliases.

Every new version becomes `challenger`. It takes `champion` only if its test BLEU beats the champion's on the
same test set with the same decoding settings: when the champion was scored on other data (a different corpus or
split) or with other settings, the registered champion is scored again (training/evaluate.py) on this test set
with the challenger's settings first. Both scores and the decision are version tags, so the
registry page says why a version is or is not the champion. Aliases move only after the new model has been
logged, loaded back and has translated, so a run that fails anywhere before that leaves them untouched."""

import shutil
import tempfile
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

import data_prep
import training
from training.config import DecodingConfig
from training.evaluate import PREDICT_SETTINGS, EvalSet, evaluate_model, settings_tag
from training.translator import DECODING, MODEL_CONFIG, WEIGHTS

PYFUNC = Path(__file__).with_name("pyfunc_model.py")
CHAMPION, CHALLENGER = "champion", "challenger"
SCORE_TAG, TEST_SET_TAG, DECODING_TAG = "test_bleu", "test_set", "test_decoding"
CHAMPION_SCORE_TAG, DECISION_TAG = "champion_test_bleu", "decision"
# Explicit requirements: MLflow would otherwise load the model in a subprocess to infer them.
REQUIREMENTS = ["torch==2.13.0", "tokenizers>=0.23,<0.24", "safetensors", "pydantic>=2", "numpy",
                "mlflow==3.17.2"]


def log_and_register(tracking_uri: str, run_id: str, checkpoint: str, src_tokenizer: str, tgt_tokenizer: str,
                     decoding: DecodingConfig, model_name: str, test_score: float, test_set: EvalSet
                     ) -> dict[str, Any]:
    """Logs the model in `run_id` with the decoding settings it was scored with, checks it loads and translates,
    registers it, and updates aliases."""
    mlflow.set_tracking_uri(tracking_uri)
    probe = test_set.sources[0]
    with mlflow.start_run(run_id=run_id), tempfile.TemporaryDirectory() as code:
        (Path(code) / DECODING).write_text(decoding.model_dump_json())
        artifacts = {"weights": str(Path(checkpoint) / WEIGHTS),
                     "model_config": str(Path(checkpoint) / MODEL_CONFIG), "decoding": str(Path(code) / DECODING),
                     "src_tokenizer": src_tokenizer, "tgt_tokenizer": tgt_tokenizer}
        # The packages' sources only: __pycache__ is bytecode for this interpreter, and every file is one more
        # upload to (and download from) the tracking server.
        code_paths = [str(shutil.copytree(Path(pkg.__file__).parent, Path(code) / pkg.__name__,
                                          ignore=shutil.ignore_patterns("__pycache__")))
                      for pkg in (training, data_prep)]
        info = mlflow.pyfunc.log_model(
            name="model", python_model=str(PYFUNC), artifacts=artifacts, code_paths=code_paths,
            pip_requirements=REQUIREMENTS,
            # The signature: list[str] -> list[str] from predict's type hints; the per-request params, which
            # default to the settings the model was scored with, from this example's.
            input_example=([probe], request_params(decoding)))
    # Round trip before registering: a model that cannot load and translate never gets a version.
    translation = mlflow.pyfunc.load_model(info.model_uri).predict([probe])
    mv = mlflow.register_model(info.model_uri, model_name, tags={
        SCORE_TAG: f"{test_score:.4f}", TEST_SET_TAG: test_set.fingerprint, DECODING_TAG: settings_tag(decoding)})
    client = MlflowClient(tracking_uri)
    client.set_registered_model_alias(model_name, CHALLENGER, mv.version)
    decision = promote_if_better(client, model_name, mv.version, test_score, test_set, decoding)
    return {"model_uri": info.model_uri, "version": int(mv.version), "champion": decision["promoted"],
            "champion_version": decision["champion_version"], "champion_test_bleu": decision["champion_score"],
            "probe": probe, "probe_translation": translation[0]}


def request_params(decoding: DecodingConfig) -> dict[str, Any]:
    """The served model's per-request params and their defaults: its decoding settings, and the batch size."""
    return {"beam_size": decoding.beam_size, "length_penalty": float(decoding.length_penalty),
            "max_output_ratio": float(decoding.max_output_ratio), "batch_size": 64}


def current_champion(client: MlflowClient, name: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:  # no champion yet (or no such model)
        return None


def champion_score(client: MlflowClient, champion: ModelVersion, test_set: EvalSet, decoding: DecodingConfig
                   ) -> float:
    """The champion's BLEU on `test_set` decoded with `decoding`: its recorded score when it was scored on the same
    data with the same settings, otherwise a fresh evaluation of the registered model (loaded from code and
    safetensors, nothing unpickled) with those settings."""
    if (champion.tags.get(TEST_SET_TAG) == test_set.fingerprint and champion.tags.get(DECODING_TAG) == settings_tag(
            decoding) and SCORE_TAG in champion.tags):
        return float(champion.tags[SCORE_TAG])
    overrides = {k: getattr(decoding, k) for k in PREDICT_SETTINGS}
    return evaluate_model(f"models:/{champion.name}/{champion.version}", test_set, overrides).scores["bleu"]


def promote_if_better(client: MlflowClient, name: str, version: str, new_score: float, test_set: EvalSet,
                      decoding: DecodingConfig) -> dict[str, Any]:
    """Moves `champion` to `version` only if `new_score` (on `test_set`, decoded with `decoding`) beats the
    champion's on the same test set with the same settings; records both scores and the decision on the new
    version."""
    champion = current_champion(client, name)
    if champion is None:
        old, promoted, why = None, True, "first version"
    else:
        old = champion_score(client, champion, test_set, decoding)
        promoted = new_score > old
        why = (f"{new_score:.2f} {'>' if promoted else '<='} {old:.2f} of champion version {champion.version}"
               f" on the same test set, both decoded with {settings_tag(decoding)}")
    client.set_model_version_tag(name, version, CHAMPION_SCORE_TAG, "none" if old is None else f"{old:.4f}")
    client.set_model_version_tag(name, version, DECISION_TAG, ("promoted: " if promoted else "kept champion: ")
                                 + why)
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, version)
    return {"promoted": promoted, "champion_version": int(version if promoted else champion.version),
            "champion_score": new_score if promoted else old}
