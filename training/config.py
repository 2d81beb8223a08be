"""Configuration sections owned by training: model shape, optimisation, scaling and tracking."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveFloat, PositiveInt


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelConfig(_Section):
    """Architecture only; stored beside the weights so a checkpoint rebuilds the same shapes."""

    emb_size: PositiveInt = 64  # E
    enc_hidden: PositiveInt = 128  # H, per direction
    dec_hidden: PositiveInt = 256  # D
    att_hidden: PositiveInt = 128  # A, hidden size of the scoring network a(s, h)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)


class TrainConfig(_Section):
    epochs: PositiveInt = 4
    batch_tokens: PositiveInt = Field(
        4096, description="global token budget per step (padded source+target), split across workers")
    lr: PositiveFloat = 2e-3
    lr_decay: float = Field(0.5, gt=0.0, le=1.0, description="LR factor when validation BLEU plateaus")
    lr_patience: NonNegativeInt = 1
    clip_norm: PositiveFloat = 5.0
    patience: PositiveInt = Field(3, description="stop after this many epochs without a better val BLEU")
    seed: int = 42
    max_output_ratio: PositiveFloat = Field(1.5, description="decode at most ratio * source length + 5 tokens")
    beam_size: PositiveInt = 1  # for validation and test decoding (1 = greedy)
    length_penalty: float = Field(1.0, ge=0.0, description="GNMT length penalty alpha for beam search")
    heatmap_examples: NonNegativeInt = 3  # fixed validation sentences plotted each epoch


class ScalingSettings(_Section):
    num_workers: PositiveInt = 2
    use_gpu: bool = False
    cpus_per_worker: PositiveInt = 1  # also the torch thread count per worker
    address: str | None = Field(None, description="Ray cluster address; RAY_ADDRESS or a local cluster if unset")


class TrackingConfig(_Section):
    uri: str | None = Field(None, description="MLflow tracking URI; MLFLOW_TRACKING_URI or sqlite:///mlflow.db")
    experiment: str = "alignflow"
    run_name: str | None = None
    model_name: str = "alignflow-dates"
    select_metric: Literal["val_bleu", "val_exact_match"] = "val_bleu"
    keep_checkpoints: PositiveInt = 2
