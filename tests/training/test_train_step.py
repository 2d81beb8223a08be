"""The GPU-oriented step options (mixed precision, torch.compile) run the same `train_step` on CPU here: each
must still take a real optimizer step, and compile must not change the numbers."""

import numpy as np
import pytest
import torch

from data_prep.specials import PAD_ID
from tests.training.synthetic import random_split
from training.config import ModelConfig
from training.loop import train_step
from training.model import Seq2Seq

CFG = ModelConfig(emb_size=8, enc_hidden=8, dec_hidden=16, att_hidden=8, dropout=0.0)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_steps_lower_the_loss(precision: str):
    torch.manual_seed(0)
    model, split = Seq2Seq(CFG, 17, 17, PAD_ID), random_split(12, vocab=17)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0) if precision == "fp16" else None
    batch = np.arange(len(split))
    losses = [train_step(model, optimizer, split, batch, 0, 1, torch.device("cpu"), 5.0, 0.0, precision, scaler)[0]
              for _ in range(30)]
    assert all(np.isfinite(losses))
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast: fp32 master weights
    assert losses[-1] < 0.7 * losses[0]


def test_compiled_decoder_step_gives_the_eager_loss_and_gradients():
    torch.manual_seed(0)
    eager, split = Seq2Seq(CFG, 17, 17, PAD_ID), random_split(12, vocab=17)
    compiled = Seq2Seq(CFG, 17, 17, PAD_ID)
    compiled.load_state_dict(eager.state_dict())
    compiled.decoder.step = torch.compile(compiled.decoder.step, dynamic=True)
    compiled.decoder.defer_step_grads = False
    batch = np.arange(len(split))
    loss = {}
    for name, model in (("eager", eager), ("compiled", compiled)):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # keep the gradients, leave the weights
        loss[name] = train_step(model, optimizer, split, batch, 0, 1, torch.device("cpu"), 5.0)[0]
    assert loss["compiled"] == pytest.approx(loss["eager"], rel=1e-4)
    for (name, p), q in zip(eager.named_parameters(), compiled.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-3, atol=1e-5, msg=name)
