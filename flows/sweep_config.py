"""The `sweep:` section of the pipeline config: a search space over config keys, the number of trials, the metric,
the scheduler and how many trials run at once. Checked before anything starts: a space key no run accepts, a
value no run accepts, bounds that cannot be sampled, trials the cluster cannot hold are each one error line."""

import itertools
import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_validator

# Keys a trial may not change: where the trials run and are recorded is the sweep's, the same for all of them.
NOT_SEARCHABLE = ("sweep", "scaling", "tracking", "work_dir")
# Changing these changes the prepared corpus, which is prepared once per value before the trials start.
DATA_KEYS = ("data.", "tokenizer.")


class Domain(BaseModel):
    """One key's values: exactly one of `choice: [a, b, ...]`, `uniform: [low, high]`, `loguniform: [low, high]`
    (both > 0) or `randint: [low, high]` (integers, both included)."""

    model_config = ConfigDict(extra="forbid")
    choice: list[Any] | None = Field(None, min_length=1)
    uniform: tuple[float, float] | None = None
    loguniform: tuple[float, float] | None = None
    randint: tuple[int, int] | None = None

    @model_validator(mode="after")
    def _one_valid_kind(self) -> "Domain":
        given = [k for k in ("choice", "uniform", "loguniform", "randint") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of choice, uniform, loguniform, randint")
        if self.kind != "choice":
            low, high = getattr(self, self.kind)
            if low >= high:
                raise ValueError(f"{self.kind}: low {low} must be below high {high}")
            if self.kind == "loguniform" and low <= 0:
                raise ValueError("loguniform: bounds must be above 0")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ("choice", "uniform", "loguniform", "randint") if getattr(self, k) is not None)

    def extremes(self) -> list[Any]:
        """Values a run must accept for the whole domain to be valid: every choice, or both bounds."""
        return list(getattr(self, self.kind))


class SweepConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    space: dict[str, Domain] = Field(
        default_factory=dict, description="dotted config key -> domain, e.g. train.lr: {loguniform: [3e-4, 3e-3]}")
    num_trials: PositiveInt = Field(4, description="trials sampled from the space")
    metric: Literal["val_bleu", "val_exact_match", "val_loss"] = Field(
        "val_bleu", description="what ranks trials and what ASHA stops them by (each epoch's value)")
    mode: Literal["max", "min"] | None = Field(None, description="default: min for val_loss, else max")
    scheduler: Literal["asha", "fifo"] = Field("asha", description="asha stops poor trials early; fifo never does")
    grace_period: PositiveInt = Field(1, description="asha: epochs every trial runs before it may be stopped")
    reduction_factor: float = Field(2.0, gt=1.0, description="asha: 1/reduction_factor of trials go on at a rung")
    max_concurrent_trials: PositiveInt | None = Field(
        None, description="trials at once; default: as many as the cluster holds (scaling's workers each)")
    seed: int | None = Field(None, description="seed of the random search; null: a different sample each time")

    @property
    def order(self) -> Literal["max", "min"]:
        return self.mode or ("min" if self.metric == "val_loss" else "max")


def check_space(sweep: SweepConfig, validate: Any) -> str | None:
    """The first problem with the space, as `sweep.space.KEY: why`, or None. `validate(values)` builds a trial's
    config from {dotted key: value} and raises with the reason when a run would refuse it."""
    if not sweep.space:
        return "sweep.space: empty; give at least one key, e.g. train.lr: {loguniform: [3e-4, 3e-3]}"
    for key, domain in sweep.space.items():
        where = f"sweep.space.{key}"
        if key.split(".")[0] in NOT_SEARCHABLE:
            return f"{where}: not searchable ({', '.join(NOT_SEARCHABLE)} are the same for every trial)"
        if key.startswith(DATA_KEYS) and domain.kind != "choice":
            return f"{where}: data and tokenizer keys take `choice` only (each corpus is prepared before the trials)"
        for value in domain.extremes():
            try:
                validate({key: value})
            except Exception as e:  # the config's own error, e.g. "train.lrr: unknown key"
                return f"{where}: {value!r} is refused: {str(e).partition(': ')[2] or e}"
    return None


def data_variants(sweep: SweepConfig) -> list[dict[str, Any]]:
    """Every combination of the data and tokenizer choices (one corpus each), [{}] when the space has none."""
    keys = [k for k in sweep.space if k.startswith(DATA_KEYS)]
    choices = [sweep.space[k].choice or [] for k in keys]
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*choices)]


def trials_at_once(sweep: SweepConfig, per_trial: dict[str, float], cluster: dict[str, float]) -> int:
    """How many trials run at once: each trial's Ray Train workers (`per_trial`, all workers together) must fit
    beside the others' on `cluster` (its total resources), so no trial waits for workers another one holds.
    ValueError when one trial alone does not fit, or when max_concurrent_trials asks for more than fit."""
    need = {r: v for r, v in per_trial.items() if v > 0}
    fits = min(math.floor(cluster.get(r, 0.0) / v + 1e-9) for r, v in need.items())
    asked = ", ".join(f"{v:g} {r}" for r, v in need.items())
    has = ", ".join(f"{cluster.get(r, 0.0):g} {r}" for r in need)
    if fits < 1:
        raise ValueError(f"sweep: one trial's workers ask for {asked}; the Ray cluster has {has}: lower "
                         "scaling.num_workers or scaling.resources_per_worker")
    if sweep.max_concurrent_trials and sweep.max_concurrent_trials > fits:
        raise ValueError(f"sweep.max_concurrent_trials: {sweep.max_concurrent_trials} trials of {asked} each do "
                         f"not fit on the Ray cluster's {has} (room for {fits}); lower it or scaling's workers")
    return min(sweep.max_concurrent_trials or fits, sweep.num_trials)
