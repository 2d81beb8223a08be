"""Logging the pyfunc model, registering it, and the champion/challenger aliases.

Every new version becomes `challenger`. It takes `champion` only if its test BLEU beats the champion's on the
same test set with the same decoding settings: when the champion was scored on other data (a different corpus or
split) or with other settings, the registered champion is scored again (training/evaluate.py) on this test set
with the challenger's settings first. Both scores and the decision are version tags, so the
registry page says why a version is or is not the champion. Aliases move only after the new model has been
logged, loaded back and has translated, so a run that fails anywhere before that leaves them untouched.

Retries (Prefect retries `register`) never add a version: a version is found by its MLflow run id before a new
one is created, a model already logged in the run is registered instead of logged again, and a version whose
decision is already recorded returns it instead of deciding again.

Concurrent runs: MLflow has no transactions, so reading the champion, comparing and moving the alias are three
requests another run can interleave with (both read champion 10; the 30 sets the alias, then the 20 does). What
orders them is the one atomic thing the registry does: it numbers versions, each number once, in increasing
order. Every version is created with `decision=pending`, and a version makes its decision (read the champion,
compare, move the aliases, then write the decision tag, last) only when no lower-numbered version is still
pending. Decisions are so made one at a time, in version order, each against the champion the previous one left.
A pending version older than `STALE_AFTER_S` (its run died between registering and deciding) stops holding the
others back; its retry, if one comes, then decides against whatever champion it finds."""

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities import LoggedModelStatus
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

import data_prep
import training
from training.config import DecodingConfig
from training.evaluate import PREDICT_SETTINGS, EvalSet, evaluate_model, settings_tag
from training.translator import DECODING, MODEL_CONFIG, WEIGHTS

PYFUNC = Path(__file__).with_name("pyfunc_model.py")
MODEL_ARTIFACT = "model"  # the logged model's name in its run
CHAMPION, CHALLENGER = "champion", "challenger"
SCORE_TAG, TEST_SET_TAG, DECODING_TAG = "test_bleu", "test_set", "test_decoding"
CHAMPION_SCORE_TAG, DECISION_TAG = "champion_test_bleu", "decision"
CHAMPION_VERSION_TAG, PENDING = "champion_version", "pending"
STALE_AFTER_S = 30 * 60.0  # longer than any decision takes (it may re-score the champion on the test set)
# Explicit requirements: MLflow would otherwise load the model in a subprocess to infer them.
REQUIREMENTS = ["torch==2.13.0", "tokenizers>=0.23,<0.24", "safetensors", "pydantic>=2", "numpy",
                "mlflow==3.17.2"]


def log_and_register(tracking_uri: str, run_id: str, checkpoint: str, src_tokenizer: str, tgt_tokenizer: str,
                     decoding: DecodingConfig, model_name: str, test_score: float, test_set: EvalSet
                     ) -> dict[str, Any]:
    """Logs the model in `run_id` with the decoding settings it was scored with, checks it loads and translates,
    registers it, and updates aliases. Called again for the same run (a retry), it continues where the first
    call stopped and returns the same version."""
    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri)
    probe = test_set.sources[0]
    mv = registered_version(client, model_name, run_id)
    if mv is None:
        model_uri = logged_model_uri(client, run_id) or _log_model(run_id, checkpoint, src_tokenizer,
                                                                   tgt_tokenizer, decoding, probe)
        # Round trip before registering: a model that cannot load and translate never gets a version.
        translation = mlflow.pyfunc.load_model(model_uri).predict([probe])
        mv = mlflow.register_model(model_uri, model_name, tags={
            SCORE_TAG: f"{test_score:.4f}", TEST_SET_TAG: test_set.fingerprint,
            DECODING_TAG: settings_tag(decoding), DECISION_TAG: PENDING})
    else:
        model_uri = mv.source
        translation = mlflow.pyfunc.load_model(f"models:/{model_name}/{mv.version}").predict([probe])
    decision = promote_if_better(client, model_name, mv.version, test_score, test_set, decoding)
    return {"model_uri": model_uri, "version": int(mv.version), "champion": decision["promoted"],
            "champion_version": decision["champion_version"], "champion_test_bleu": decision["champion_score"],
            "probe": probe, "probe_translation": translation[0]}


def _log_model(run_id: str, checkpoint: str, src_tokenizer: str, tgt_tokenizer: str, decoding: DecodingConfig,
               probe: str) -> str:
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
            name=MODEL_ARTIFACT, python_model=str(PYFUNC), artifacts=artifacts, code_paths=code_paths,
            pip_requirements=REQUIREMENTS,
            # The signature: list[str] -> list[str] from predict's type hints; the per-request params, which
            # default to the settings the model was scored with, from this example's.
            input_example=([probe], request_params(decoding)))
    return info.model_uri


def registered_version(client: MlflowClient, name: str, run_id: str) -> ModelVersion | None:
    """The version this run already registered (a retry after a partial success), if any."""
    found = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    return min(found, key=lambda v: int(v.version)) if found else None


def logged_model_uri(client: MlflowClient, run_id: str) -> str | None:
    """The model this run already logged completely (a retry after logging succeeded and registering failed)."""
    run = client.get_run(run_id)
    models = client.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"source_run_id = '{run_id}' AND name = '{MODEL_ARTIFACT}'")
    ready = [m for m in models if m.status == LoggedModelStatus.READY]
    return ready[0].model_uri if ready else None


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


def promote_if_better(client: MlflowClient, name: str, version: str | int, new_score: float, test_set: EvalSet,
                      decoding: DecodingConfig, stale_after_s: float = STALE_AFTER_S, poll_s: float = 2.0
                      ) -> dict[str, Any]:
    """Makes `version` the challenger, and the champion only if `new_score` (on `test_set`, decoded with
    `decoding`) beats the champion's on the same test set with the same settings; records both scores and the
    decision on the version. Waits for lower-numbered versions still deciding (see the module docstring); a
    version already decided returns its recorded decision and moves nothing."""
    version = str(version)
    mv = client.get_model_version(name, version)
    if mv.tags.get(DECISION_TAG, PENDING) != PENDING:
        return _recorded(mv)
    _wait_for_earlier_decisions(client, mv, stale_after_s, poll_s)
    client.set_registered_model_alias(name, CHALLENGER, version)
    champion = current_champion(client, name)
    if champion is not None and str(champion.version) == version:  # an interrupted call had moved the alias
        recorded = mv.tags.get(CHAMPION_SCORE_TAG, "none")
        old, against = (None if recorded == "none" else float(recorded)), mv.tags.get(CHAMPION_VERSION_TAG)
        promoted = True
    elif champion is None:
        old, against, promoted = None, None, True
    else:
        old, against = champion_score(client, champion, test_set, decoding), str(champion.version)
        promoted = new_score > old
    client.set_model_version_tag(name, version, CHAMPION_SCORE_TAG, "none" if old is None else f"{old:.4f}")
    client.set_model_version_tag(name, version, CHAMPION_VERSION_TAG, against or version)
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, version)
    why = ("first version" if old is None else
           f"{new_score:.2f} {'>' if promoted else '<='} {old:.2f} of champion version {against} on the same test "
           f"set, both decoded with {settings_tag(decoding)}")
    # Last: later versions waiting in _wait_for_earlier_decisions go on once this tag is no longer pending.
    client.set_model_version_tag(name, version, DECISION_TAG, ("promoted: " if promoted else "kept champion: ")
                                 + why)
    return {"promoted": promoted, "champion_version": int(version if promoted else against),
            "champion_score": new_score if promoted else old}


def _wait_for_earlier_decisions(client: MlflowClient, mv: ModelVersion, stale_after_s: float,
                                poll_s: float) -> None:
    """Returns once no version numbered below `mv` is pending, apart from those pending for longer than
    `stale_after_s`. Ages are measured on the registry's clock (creation timestamps) plus the time waited here,
    so a skewed client clock changes nothing."""
    t0, said = time.monotonic(), False
    while True:
        waited = time.monotonic() - t0
        pending = sorted(int(v.version) for v in client.search_model_versions(
            f"name = '{mv.name}' and tags.{DECISION_TAG} = '{PENDING}'")
            if int(v.version) < int(mv.version)
            and (mv.creation_timestamp - v.creation_timestamp) / 1000 + waited < stale_after_s)
        if not pending:
            return
        if not said:
            print(f"{mv.name} version {mv.version}: waiting for the champion decision of version(s) {pending}")
            said = True
        time.sleep(poll_s)


def _recorded(mv: ModelVersion) -> dict[str, Any]:
    """The decision a retried call made before; the champion it was compared with, or itself if promoted."""
    promoted = mv.tags[DECISION_TAG].startswith("promoted")
    old = mv.tags.get(CHAMPION_SCORE_TAG, "none")
    return {"promoted": promoted,
            "champion_version": int(mv.version if promoted else mv.tags.get(CHAMPION_VERSION_TAG, mv.version)),
            "champion_score": float(mv.tags[SCORE_TAG]) if promoted or old == "none" else float(old)}
