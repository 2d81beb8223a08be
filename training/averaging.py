"""Checkpoint averaging, as OpenNMT-py's `average_models` and Joey NMT's `average_checkpoints` script offer: the
element-wise mean of the parameters of the last k epochs' checkpoints, which is usually a little better than any one
of them (the average sits nearer the middle of the region the last updates wander around).

Ray Train keeps only the best few checkpoints by the selection metric (plus the latest), so the last k epochs'
weights are carried forward inside every checkpoint instead: `previous/epoch_NNN.safetensors` for the k-1 epochs
before it (weights only, no optimizer state). The latest checkpoint then holds all k, whatever ended training
(epochs, early stopping, the time budget), and the window survives a restart or a resume like the rest of the
checkpoint."""

import json
import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from training.tracking import RunLogger
from training.translator import DECODING, MODEL_CONFIG, WEIGHTS

PREVIOUS = "previous"  # inside a checkpoint: the weights of the epochs before it
AVERAGED = "averaged.json"  # inside an averaged model: which epochs, from which checkpoint


class EpochWindow:
    """Rank 0's copies (on the CPU) of the weights of the last `size` epochs."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.weights: dict[int, dict[str, torch.Tensor]] = {}  # epoch -> state dict

    def push(self, epoch: int, model: nn.Module) -> None:
        if self.size == 0:
            return
        self.weights[epoch] = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        for old in sorted(self.weights)[: -self.size]:
            del self.weights[old]

    def save(self, checkpoint: Path) -> None:
        """Into a checkpoint being written: the window as it is before that checkpoint's own epoch is pushed."""
        if self.weights:
            (checkpoint / PREVIOUS).mkdir()
        for epoch, state in self.weights.items():
            save_file(state, checkpoint / PREVIOUS / f"epoch_{epoch:03d}.safetensors")

    @classmethod
    def load(cls, size: int, checkpoint: Path) -> "EpochWindow":
        """The last `size` epochs a checkpoint carries in previous/."""
        window = cls(size)
        paths = sorted((checkpoint / PREVIOUS).glob("epoch_*.safetensors"), key=_epoch)
        for path in paths[len(paths) - size :] if size else []:
            window.weights[_epoch(path)] = load_file(path)
        return window


def _epoch(path: Path) -> int:
    return int(path.stem.removeprefix("epoch_"))


def average_last(checkpoint: str | Path, epoch: int, k: int, out: Path) -> list[int]:
    """Writes to `out` a model directory (weights, model config, decoding settings) whose weights are the mean of
    the last `k` epochs a checkpoint holds: its own, `epoch`, and those in previous/. -> the epochs averaged."""
    ckpt = Path(checkpoint)
    with safe_open(ckpt / WEIGHTS, "pt") as f:
        metadata = f.metadata()  # save_model's record of tied weights stored once
    latest, window = load_file(ckpt / WEIGHTS), EpochWindow.load(k - 1, ckpt)
    states = [*window.weights.values(), latest]
    averaged = {name: torch.stack([s[name].float() for s in states]).mean(dim=0).to(t.dtype)
                for name, t in latest.items()}
    out.mkdir(parents=True, exist_ok=True)
    save_file(averaged, out / WEIGHTS, metadata=metadata)
    for name in (MODEL_CONFIG, DECODING):
        shutil.copy(ckpt / name, out / name)
    epochs = [*window.weights, epoch]
    (out / AVERAGED).write_text(json.dumps({"epochs": epochs, "checkpoint": str(ckpt)}))
    return epochs


def average_run(latest: str, epoch: int, k: int, out: Path, tracking_uri: str, run_id: str) -> str:
    """`average_last` into `out`, recorded in the run (tag `averaged_checkpoints`, and averaged.json). -> `out`."""
    epochs = average_last(latest, epoch, k, out)
    log = RunLogger(tracking_uri, run_id)
    log.client.set_tag(run_id, "averaged_checkpoints", f"epochs {', '.join(map(str, epochs))} (from {latest})")
    log.artifact(out / AVERAGED, "averaging")
    print(f"test and registration use the average of the checkpoints of epochs {', '.join(map(str, epochs))}")
    return str(out)
