"""The pipeline's one config: sections owned by data_prep and training, composed here, read from YAML and
`--set key=value` overrides. Unknown keys and bad values become a ConfigError naming the key."""

import copy
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from data_prep.config import DataConfig, TokenizerConfig
from data_prep.errors import ConfigError
from flows.sweep_config import SweepConfig, check_space
from training.config import DecodingConfig, ModelConfig, ScalingSettings, TrackingConfig, TrainConfig


class PipelineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    data: DataConfig = DataConfig()
    tokenizer: TokenizerConfig = TokenizerConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    scaling: ScalingSettings = ScalingSettings()
    tracking: TrackingConfig = TrackingConfig()
    work_dir: str = Field("alignflow-work", description="prepared corpora and Ray checkpoints live here")
    sweep: SweepConfig | None = Field(None, description="`alignflow sweep` only: the search; `run` ignores it")

    @model_validator(mode="after")
    def _autocast_needs_gpus(self) -> "PipelineConfig":
        # Seen on this AVX2 CPU with torch 2.13: oneDNN has no fp16 or bf16 LSTM kernel, and the encoder's LSTM
        # fails as soon as a batch's sources are all one length ("could not create a primitive descriptor").
        if self.train.precision != "fp32" and not self.scaling.use_gpu:
            raise ValueError(f"train.precision: {self.train.precision} autocast is for GPU workers (scaling.use_gpu: "
                             "true); on CPU workers PyTorch's LSTM has no reduced-precision kernel on most CPUs: "
                             "use fp32")
        return self

    @property
    def decoding(self) -> DecodingConfig:
        """How the test split is decoded, and so how the registered model decodes by default; a source longer
        than any the model was trained on is cut to data.max_len tokens."""
        return self.train.decoding(max_source_tokens=self.data.max_len)


def _describe(err: ValidationError, origin: str) -> str:
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "(top level)"
    why = first["msg"].removeprefix("Value error, ")  # a validator's own message needs no label
    msg = "unknown key" if first["type"] == "extra_forbidden" else f"{why} (got {first.get('input')!r})"
    more = f" (+{len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    if not first["loc"]:  # a check across sections names its keys itself
        return f"{origin}: {why}{more}"
    return f"{origin}: {key}: {msg}{more}"


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for p in parents:
        child = node.setdefault(p, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: {p!r} is not a section")
        node = child
    node[leaf] = value


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                base: dict[str, Any] | None = None) -> PipelineConfig:
    """The YAML file at `path` (else `base`, e.g. a run's recorded config.json, else the defaults), with
    `overrides` (`key=value`) applied."""
    tree: dict[str, Any] = copy.deepcopy(base) if base else {}
    origin = "config"
    if path is not None:
        origin = str(path)
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            tree = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark else ""
            raise ConfigError(f"{path}:{where} invalid YAML: {getattr(e, 'problem', e)}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not valid UTF-8") from None
        if not isinstance(tree, dict):
            raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. train.epochs=3")
        _set(tree, key.strip(), yaml.safe_load(raw) if raw.strip() else raw)
    try:
        config = PipelineConfig.model_validate(tree)
    except ValidationError as e:
        raise ConfigError(_describe(e, origin)) from None
    if config.sweep is not None and (problem := check_space(config.sweep, lambda v: trial_config(config, v))):
        raise ConfigError(f"{origin}: {problem}")
    return config


def trial_config(config: PipelineConfig, values: dict[str, Any]) -> PipelineConfig:
    """A sweep trial's config: `config` with the sampled {dotted key: value} set, and no sweep section."""
    tree = config.model_dump(mode="json", exclude={"sweep"})
    for key, value in values.items():
        _set(tree, key, value)
    try:
        return PipelineConfig.model_validate(tree)
    except ValidationError as e:
        raise ConfigError(_describe(e, "trial")) from None


def flatten(cfg: BaseModel) -> dict[str, Any]:
    """Dotted keys for MLflow params: {'train.epochs': 8, ...}; a sweep section is the sweep's, not a run's."""
    out: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        else:
            out[prefix] = node

    walk("", cfg.model_dump(mode="json", exclude={"sweep"} if "sweep" in type(cfg).model_fields else None))
    return out
