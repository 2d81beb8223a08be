"""The one evaluation path: decode a test set with given settings, score the detokenized output with sacrebleu.

The pipeline's evaluate task (a checkpoint, before registration), the champion gate (the champion re-scored with
the challenger's settings) and `alignflow evaluate` (any registered version, on any corpus alignflow reads) all
score here, so two numbers computed for the same model, settings and test set are the same number. An evaluation
of a registered version is recorded as an MLflow run nested under the run that trained it."""

import hashlib
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
from datasets import load_from_disk
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion

from data_prep.errors import ConfigError
from data_prep.prepare import Manifest
from training.config import DecodingConfig
from training.metrics import score, signatures
from training.tracking import RunLogger
from training.translator import Translator

PREDICT_SETTINGS = ("beam_size", "length_penalty", "max_output_ratio")  # what a request to the pyfunc may set
TRANSLATIONS = "translations.tsv"


@dataclass(frozen=True)
class EvalSet:
    """Raw source sentences and their references: a split of a prepared corpus."""

    sources: list[str]
    references: list[str]
    name: str = "test"  # e.g. `dates test`, for people reading the results

    def __post_init__(self) -> None:  # plain lists: a datasets Column is not a list to a pyfunc's type hints
        object.__setattr__(self, "sources", [str(s) for s in self.sources])
        object.__setattr__(self, "references", [str(r) for r in self.references])

    @property
    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for s, r in zip(self.sources, self.references, strict=True):
            h.update(f"{s}\t{r}\n".encode())
        return h.hexdigest()[:16]


def eval_set(manifest: Manifest, split: str = "test") -> EvalSet:
    """A split of a prepared corpus, as raw text: exactly the pairs a run trained on that corpus was tested on."""
    splits = load_from_disk(manifest.encoded)
    if split not in splits:
        raise ConfigError(f"--split {split}: the corpus has {', '.join(splits)}")
    ds = splits[split]
    return EvalSet(list(ds["src"]), list(ds["tgt"]), f"{Path(manifest.source).name or manifest.source} {split}")


def settings_tag(decoding: DecodingConfig) -> str:
    """The settings a score depends on, as one string: `beam_size=5 length_penalty=1.0 max_output_ratio=1.5`."""
    return " ".join(f"{k}={getattr(decoding, k)}" for k in PREDICT_SETTINGS)


@dataclass(frozen=True)
class Evaluation:
    scores: dict[str, float]  # bleu (cased), bleu_lc (sacrebleu -lc), chrf, exact_match
    signatures: dict[str, str]  # sacrebleu's, one per metric
    hypotheses: list[str]
    decoding: DecodingConfig
    test_set: EvalSet

    def metrics(self, prefix: str) -> dict[str, float]:
        return {f"{prefix}{k}": v for k, v in self.scores.items()}

    def translations_tsv(self) -> str:
        rows = zip(self.test_set.sources, self.hypotheses, self.test_set.references, strict=True)
        return "\n".join(f"{s}\t{h}\t{r}" for s, h, r in rows)


def _scored(hypotheses: list[str], test_set: EvalSet, decoding: DecodingConfig) -> Evaluation:
    return Evaluation(score(hypotheses, test_set.references), signatures(), hypotheses, decoding, test_set)


def evaluate_translator(translator: Translator, test_set: EvalSet,
                        decoding: DecodingConfig | None = None) -> Evaluation:
    """Decodes with `decoding` (default: the translator's own settings) and scores."""
    d = decoding or translator.decoding
    return _scored(translator.translate(test_set.sources, d), test_set, d)


def evaluate_checkpoint(checkpoint: str, manifest: Manifest, decoding: DecodingConfig, tracking_uri: str,
                        run_id: str, prefix: str = "test_") -> dict[str, float]:
    """The pipeline's test scores: the checkpoint on the prepared test split with the run's decoding settings
    (and greedy too, when that is a beam: what the beam adds), logged into the run as `{prefix}bleu`, ... with the
    translations (`{prefix}translations.tsv`)."""
    translator = Translator.from_checkpoint(checkpoint, manifest.src_tokenizer, manifest.tgt_tokenizer, decoding)
    test = eval_set(manifest, "test")
    result = evaluate_translator(translator, test)
    metrics = result.metrics(prefix)
    if decoding.beam_size > 1:  # greedy too: what beam search adds, and the figure peers usually quote
        metrics |= evaluate_translator(translator, test, decoding.override(beam_size=1)).metrics(f"{prefix}greedy_")
    log = RunLogger(tracking_uri, run_id)
    log.metrics(metrics, step=0)
    log.text(result.translations_tsv(), f"{prefix}translations.tsv")
    return metrics


def model_decoding(model: mlflow.pyfunc.PyFuncModel) -> DecodingConfig:
    """A registered model's own decoding settings: the defaults of its signature's params."""
    schema = model.metadata.get_params_schema()
    defaults = {p.name: p.default for p in (schema.params if schema else []) if p.name in PREDICT_SETTINGS}
    return DecodingConfig(**defaults)


def evaluate_model(model_uri: str, test_set: EvalSet, overrides: dict[str, Any] | None = None) -> Evaluation:
    """A registered model scored as it is served: its pyfunc's predict, with its own decoding settings except
    where `overrides` (beam_size, length_penalty, max_output_ratio) say otherwise."""
    model = mlflow.pyfunc.load_model(model_uri)
    decoding = model_decoding(model).override(**(overrides or {}))
    params = {k: getattr(decoding, k) for k in PREDICT_SETTINGS}
    return _scored([str(h) for h in model.predict(test_set.sources, params=params)], test_set, decoding)


_MODEL_URI = re.compile(r"models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[\w-]+))")


def model_version(client: MlflowClient, model_uri: str) -> ModelVersion:
    """The registry entry of `models:/NAME/VERSION` or `models:/NAME@ALIAS`."""
    m = _MODEL_URI.fullmatch(model_uri)
    if not m:
        raise ConfigError(f"--model {model_uri}: expected models:/NAME/VERSION or models:/NAME@ALIAS")
    if m["version"]:
        return client.get_model_version(m["name"], m["version"])
    return client.get_model_version_by_alias(m["name"], m["alias"])


def record(tracking_uri: str, version: ModelVersion, result: Evaluation, corpus: str) -> str:
    """Records an evaluation of a registered version as a run nested under the run that trained it (so the MLflow
    UI lists it beside that run), with its metrics also attached to the version's logged model. -> run id."""
    client = MlflowClient(tracking_uri)
    experiment = client.get_run(version.run_id).info.experiment_id
    run = client.create_run(experiment, run_name=f"evaluate v{version.version} on {result.test_set.name}",
                            tags={"mlflow.parentRunId": version.run_id, "alignflow.evaluation": "true",
                                  "model_name": version.name, "model_version": str(version.version),
                                  **result.signatures})
    mlflow.set_tracking_uri(tracking_uri)
    with mlflow.start_run(run_id=run.info.run_id), tempfile.TemporaryDirectory() as tmp:
        mlflow.log_params({"model_uri": f"models:/{version.name}/{version.version}", "corpus": corpus,
                           "test_set": result.test_set.name, "test_set_fingerprint": result.test_set.fingerprint,
                           "sentences": len(result.test_set.sources),
                           **{f"decoding.{k}": v for k, v in result.decoding.model_dump().items()}})
        mlflow.log_metrics(result.scores, model_id=version.model_id)
        path = Path(tmp) / TRANSLATIONS
        path.write_text(result.translations_tsv(), encoding="utf-8")
        mlflow.log_artifact(str(path))
    return run.info.run_id
