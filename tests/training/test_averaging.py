"""Checkpoint averaging: every checkpoint carries the weights of the epochs before it, and the last k are averaged
element-wise, tied weights included."""

from pathlib import Path

import torch
from safetensors.torch import load_model, save_model

from data_prep.specials import PAD_ID
from training.averaging import PREVIOUS, EpochWindow, average_last
from training.config import DecodingConfig, ModelConfig
from training.model import Seq2Seq
from training.translator import DECODING, MODEL_CONFIG, WEIGHTS

CFG = ModelConfig(emb_size=6, enc_hidden=5, dec_hidden=7, att_hidden=3, tied_softmax=True)


def _model(seed: int) -> Seq2Seq:
    torch.manual_seed(seed)
    return Seq2Seq(CFG, 11, 13, PAD_ID)


def _checkpoints(tmp_path: Path, epochs: int, window: EpochWindow) -> dict[int, Seq2Seq]:
    """Checkpoints written as the training loop writes them: weights, then the window, then this epoch joins it."""
    models = {}
    for epoch in range(1, epochs + 1):
        models[epoch] = _model(epoch)
        ckpt = tmp_path / f"epoch{epoch}"
        ckpt.mkdir()
        save_model(models[epoch], str(ckpt / WEIGHTS))
        (ckpt / MODEL_CONFIG).write_text(CFG.model_dump_json())
        (ckpt / DECODING).write_text(DecodingConfig(beam_size=3).model_dump_json())
        window.save(ckpt)
        window.push(epoch, models[epoch])
    return models


def test_the_last_k_epochs_are_averaged_from_the_latest_checkpoint(tmp_path):
    models = _checkpoints(tmp_path, 4, EpochWindow(2))
    latest = tmp_path / "epoch4"
    assert sorted(p.name for p in (latest / PREVIOUS).iterdir()) == ["epoch_002.safetensors", "epoch_003.safetensors"]
    assert average_last(latest, 4, 3, tmp_path / "avg") == [2, 3, 4]
    averaged = _model(0)
    load_model(averaged, tmp_path / "avg" / WEIGHTS)
    for name, p in averaged.state_dict().items():
        expected = torch.stack([models[e].state_dict()[name] for e in (2, 3, 4)]).mean(dim=0)
        torch.testing.assert_close(p, expected, msg=name)
    assert (tmp_path / "avg" / DECODING).read_text() == (latest / DECODING).read_text()
    # fewer than k available, or k = 1: what there is
    assert average_last(tmp_path / "epoch2", 2, 3, tmp_path / "avg2") == [1, 2]
    assert average_last(latest, 4, 1, tmp_path / "avg1") == [4]
    one = _model(0)
    load_model(one, tmp_path / "avg1" / WEIGHTS)
    for name, p in one.state_dict().items():
        torch.testing.assert_close(p, models[4].state_dict()[name], msg=name)


def test_a_resumed_window_holds_what_the_checkpoint_carried(tmp_path):
    _checkpoints(tmp_path, 3, EpochWindow(2))
    assert list(EpochWindow.load(2, tmp_path / "epoch3").weights) == [1, 2]
    assert list(EpochWindow.load(1, tmp_path / "epoch3").weights) == [2]  # a smaller k after the resume
    assert not EpochWindow.load(0, tmp_path / "epoch3").weights
    off = EpochWindow(0)
    off.push(1, _model(1))
    off.save(tmp_path)  # k = 1: nothing kept, nothing written
    assert not off.weights and not (tmp_path / PREVIOUS).exists()
