"""Decoding with the model's own `decode_step`: greedy search, returning attention weights."""

import math

import torch
from torch import Tensor

from data_prep.specials import BOS_ID, EOS_ID, PAD_ID
from training.model import Seq2Seq


def max_output_len(x_len: Tensor, ratio: float) -> int:
    return int(math.ceil(float(x_len.max()) * ratio)) + 5


@torch.no_grad()
def greedy(model: Seq2Seq, x: Tensor, x_len: Tensor, max_len: int) -> tuple[Tensor, Tensor]:
    """x (B, n) -> token ids (B, T) padded with PAD after EOS, attention (B, T, n)."""
    enc = model.encode(x, x_len)
    B = x.size(0)
    y = torch.full((B,), BOS_ID, dtype=torch.long, device=x.device)
    state, ys, attn = enc.s0, [], []
    done = torch.zeros(B, dtype=torch.bool, device=x.device)
    for _ in range(max_len):
        logits, state, a = model.decode_step(y, state, enc)
        y = logits.argmax(dim=-1).masked_fill(done, PAD_ID)  # (B,)
        ys.append(y)
        attn.append(a)
        done |= y == EOS_ID
        if bool(done.all()):
            break
    return torch.stack(ys, dim=1), torch.stack(attn, dim=1)


def strip(ids: list[int]) -> list[int]:
    """Token ids up to (not including) the first EOS."""
    return ids[: ids.index(EOS_ID)] if EOS_ID in ids else ids
