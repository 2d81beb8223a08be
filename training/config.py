"""Configuration sections owned by training: model shape, optimisation, scaling and tracking."""

from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationInfo,
    field_validator,
)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelConfig(_Section):
    """Architecture only; stored beside the weights so a checkpoint rebuilds the same shapes."""

    emb_size: PositiveInt = 64  # E
    enc_hidden: PositiveInt = 128  # H, per direction
    dec_hidden: PositiveInt = 256  # D
    att_hidden: PositiveInt = 128  # A, hidden size of the scoring network a(s, h)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    dropout_hidden: bool = Field(
        True, description="also drop the annotations h_j and the readout's input [s_i; c_i; E y_{i-1}]; false: "
                          "dropout only on the embeddings and the readout t_i, as OpenNMT-py places it")
    param_init: float = Field(
        0.0, ge=0.0, description="0: PyTorch's default initialisation; x > 0: every weight uniform in [-x, x] "
                                 "(OpenNMT-py's param_init)")
    tied_softmax: bool = Field(
        False, description="share the output projection W_o with the target embeddings (Press & Wolf 2017; Joey "
                           "NMT's tied_softmax): the pre-output layer W_t then maps to E instead of D, which "
                           "halves the two largest per-token matrices")


class DecodingConfig(_Section):
    """How a model turns a source into a translation. Saved beside the weights (decoding.json, in every checkpoint
    and in the registered model) and the served model's defaults, so that what is served is what was scored."""

    beam_size: PositiveInt = Field(1, description="1 = greedy")
    length_penalty: float = Field(1.0, ge=0.0, description="GNMT length penalty alpha for beam search")
    max_output_ratio: PositiveFloat = Field(1.5, description="decode at most ratio * source length + 5 tokens")
    max_source_tokens: PositiveInt | None = Field(
        None, description="a longer source is cut to its first max_source_tokens tokens (the longest the model "
                          "was trained on, data.max_len); null = no limit")

    def override(self, **changes: float | int | None) -> "DecodingConfig":
        """These settings with `changes` (None values ignored), validated."""
        return DecodingConfig.model_validate({**self.model_dump(), **{k: v for k, v in changes.items()
                                                                      if v is not None}})


class TrainConfig(_Section):
    epochs: PositiveInt = 4
    max_minutes: PositiveFloat | None = Field(
        None, description="wall-clock budget for training (steps and per-epoch validation); when it runs out, "
                          "the epoch in progress ends early and is validated and checkpointed as the last one")
    batch_tokens: PositiveInt = Field(
        4096, description="global token budget per step (padded source+target), split across workers")
    lr: PositiveFloat = 2e-3
    lr_schedule: Literal["plateau", "anneal"] = Field(
        "plateau", description="plateau: multiply the LR by lr_decay when validation BLEU stalls; anneal: hold "
                               "it, then decay it linearly to 0 over the last lr_anneal of training (of "
                               "max_minutes when set, else of epochs), for a fixed budget")
    lr_decay: float = Field(0.5, gt=0.0, le=1.0, description="plateau: LR factor when validation BLEU stalls")
    lr_patience: NonNegativeInt = 1
    lr_anneal: float = Field(0.5, gt=0.0, le=1.0, description="anneal: the final fraction of training over which "
                                                              "the LR falls to 0")
    clip_norm: PositiveFloat = 5.0
    patience: PositiveInt = Field(3, description="stop after this many epochs without a better val BLEU")
    seed: int = 42
    max_output_ratio: PositiveFloat = Field(1.5, description="decode at most ratio * source length + 5 tokens")
    beam_size: PositiveInt = 1  # for test decoding, and validation unless val_beam_size is set (1 = greedy)
    val_beam_size: PositiveInt | None = Field(
        None, description="beam for the per-epoch validation decode; 1 (greedy) saves training time; null = beam_size")
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0, description="training loss only; validation reports NLL")
    length_penalty: float = Field(1.0, ge=0.0, description="GNMT length penalty alpha for beam search")
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="autocast dtype for forward passes (fp16 adds a GradScaler); GPU workers only "
                            "(scaling.use_gpu): on CPU workers PyTorch's LSTM lacks fp16/bf16 kernels on most CPUs")
    compile: bool = Field(False, description="torch.compile the decoder step, the body of the per-token loop; for "
                                             "GPUs (on 2 CPU cores it gained nothing and took ~50 s to compile)")
    heatmap_examples: NonNegativeInt = 3  # fixed validation sentences plotted each epoch
    average_checkpoints: PositiveInt = Field(
        1, description="test and register the average of the parameters of the last k epochs' checkpoints "
                       "(OpenNMT-py's average_models); 1 = off: the best checkpoint by tracking.select_metric")
    log_every: PositiveInt = Field(50, description="a progress line every this many steps (and at each epoch's end)")

    def decoding(self, max_source_tokens: int | None = None) -> DecodingConfig:
        """How the test split is decoded, and so how the registered model decodes by default."""
        return DecodingConfig(beam_size=self.beam_size, length_penalty=self.length_penalty,
                              max_output_ratio=self.max_output_ratio, max_source_tokens=max_source_tokens)


class ScalingSettings(_Section):
    """Where and how wide to train. The same config runs on a laptop (local cluster, CPU workers) and on a Ray
    cluster of GPU machines (`address` + `use_gpu`): only this section changes, the global batch does not
    (see `TrainConfig.batch_tokens`)."""

    num_workers: PositiveInt = Field(2, description="data-parallel Ray Train workers; one per GPU with use_gpu")
    use_gpu: bool = Field(False, description="one GPU per worker and DDP over NCCL; CPU workers use gloo")
    resources_per_worker: dict[str, PositiveFloat] = Field(
        default_factory=lambda: {"CPU": 1.0},
        description="Ray resources reserved per worker, e.g. {CPU: 4, GPU: 1}; GPU defaults to 1 with use_gpu")
    threads_per_worker: PositiveInt | None = Field(
        None, description="torch intra-op threads per worker; default: the worker's CPU reservation, so "
                          "workers on one node never oversubscribe its cores")
    address: str | None = Field(None, description="Ray cluster to join; RAY_ADDRESS or a new local cluster if unset")
    storage_path: str | None = Field(
        None, description="where Ray Train keeps checkpoints; shared by all nodes on a multi-node cluster "
                          "(an NFS mount, s3://bucket/prefix, gs://...); default: work_dir/ray")
    autoscaling: bool = Field(
        False, description="the cluster adds nodes on demand (Ray autoscaler, KubeRay autoscaling): wait for "
                           "them; false: a job the cluster's nodes can never hold fails at once, naming both")
    max_failures: NonNegativeInt = Field(
        2, description="restarts of the worker group from the latest checkpoint after a worker or node dies")
    grad_compression: Literal["none", "fp16"] = Field(
        "none", description="all-reduce gradients in fp16 (PyTorch's DDP fp16_compress_hook): half the bytes; "
                            "helps where the all-reduce, not compute, limits (CPU workers, slow interconnects)")

    @field_validator("resources_per_worker")
    @classmethod
    def _gpu_needs_use_gpu(cls, value: dict[str, float], info: ValidationInfo) -> dict[str, float]:
        if value.get("GPU") and not info.data.get("use_gpu"):
            raise ValueError("GPU reserved per worker but use_gpu is false")
        return value

    @property
    def resources(self) -> dict[str, float]:
        """Resources per worker as Ray wants them: one GPU with use_gpu unless more are given."""
        return {**({"GPU": 1.0} if self.use_gpu else {}), **self.resources_per_worker}

    @property
    def threads(self) -> int:
        return self.threads_per_worker or max(1, int(self.resources_per_worker.get("CPU", 1)))


class TrackingConfig(_Section):
    uri: str | None = Field(None, description="MLflow tracking URI; MLFLOW_TRACKING_URI or sqlite:///mlflow.db")
    experiment: str = "alignflow"
    run_name: str | None = None
    model_name: str = "alignflow-dates"
    select_metric: Literal["val_bleu", "val_exact_match"] = "val_bleu"
    keep_checkpoints: PositiveInt = 2
    outage_wait_minutes: NonNegativeFloat = Field(
        30.0, description="after training, how long to wait for an unreachable MLflow server to take the metrics "
                          "it missed before the run ends with an error naming the checkpoint to resume from")
