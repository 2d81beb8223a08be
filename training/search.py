"""Decoding with the model's own `decode_step`: greedy and batched beam search, both returning attention."""

import math
from typing import NamedTuple

import torch
from torch import Tensor

from data_prep.specials import BOS_ID, EOS_ID, PAD_ID
from training.model import Seq2Seq


class Hypothesis(NamedTuple):
    ids: list[int]  # output tokens, without EOS
    score: float  # log-probability (length-normalised when a length penalty is used)
    attention: Tensor  # (len(ids) + 1, n): one row per emitted token, EOS included
    finished: bool  # ended with EOS (else it hit max_len)


NEVER_EMITTED = [PAD_ID, BOS_ID]  # a live hypothesis never outputs these


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
        logits[:, NEVER_EMITTED] = -math.inf
        y = logits.argmax(dim=-1).masked_fill(done, PAD_ID)  # (B,)
        ys.append(y)
        attn.append(a)
        done |= y == EOS_ID
        if bool(done.all()):
            break
    return torch.stack(ys, dim=1), torch.stack(attn, dim=1)


def length_penalty(length: Tensor, alpha: float) -> Tensor:
    """GNMT's lp(Y) = ((5 + |Y|) / 6)^alpha; alpha = 0 ranks by plain log-probability."""
    return ((5.0 + length) / 6.0) ** alpha


@torch.no_grad()
def beam_search(model: Seq2Seq, x: Tensor, x_len: Tensor, beam_size: int, max_len: int, alpha: float = 0.0
                ) -> list[list[Hypothesis]]:
    """Batched beam search. Returns, per sentence, `beam_size` hypotheses sorted best first.

    All B*K beams advance together. A finished beam stays in the beam, extended only by PAD at no cost, so it
    keeps competing with the live ones; search ends when every beam has finished or at max_len.
    """
    B, K, device = x.size(0), beam_size, x.device
    enc = model.encode(x, x_len)

    def rep(t: Tensor) -> Tensor:  # (B, ...) -> (B*K, ...): row b*K + k is beam k of sentence b
        return t.repeat_interleave(K, dim=0)

    enc = enc._replace(h=rep(enc.h), keys=rep(enc.keys), mask=rep(enc.mask), s0=(rep(enc.s0[0]), rep(enc.s0[1])))
    scores = torch.full((B, K), -math.inf, device=device)
    scores[:, 0] = 0.0  # only one live beam at the start, or the K copies would fill the beam with duplicates
    y = torch.full((B * K,), BOS_ID, dtype=torch.long, device=device)
    finished = torch.zeros(B * K, dtype=torch.bool, device=device)
    lengths = torch.zeros(B * K, device=device)
    state, history, attn = enc.s0, [], []
    for _ in range(max_len):
        logits, state, a = model.decode_step(y, state, enc)
        logp = torch.log_softmax(logits.float(), dim=-1)  # (B*K, V)
        V = logp.size(-1)
        logp[:, NEVER_EMITTED] = -math.inf  # after the softmax, so scores stay the model's log-probabilities
        # A finished beam may only emit PAD, at log-probability 0.
        logp[finished] = -math.inf
        logp[finished, PAD_ID] = 0.0
        cand = (scores.view(-1, 1) + logp).view(B, K * V)  # (B, K*V)
        scores, flat = cand.topk(K, dim=-1)  # (B, K)
        origin = (flat // V + torch.arange(B, device=device).unsqueeze(1) * K).view(-1)  # (B*K,) source rows
        y = (flat % V).view(-1)  # (B*K,)
        state = (state[0][origin], state[1][origin])
        history = [h[origin] for h in history] + [y]
        attn = [t[origin] for t in attn] + [a[origin]]
        lengths = lengths[origin] + (~finished[origin]).float()
        finished = finished[origin] | (y == EOS_ID)
        if bool(finished.all()):
            break
    ys = torch.stack(history, dim=1).view(B, K, -1)  # (B, K, T)
    att = torch.stack(attn, dim=1).view(B, K, len(attn), -1)  # (B, K, T, n)
    final = scores / length_penalty(lengths.view(B, K), alpha)
    out: list[list[Hypothesis]] = []
    for b in range(B):
        order = final[b].argsort(descending=True).tolist()
        hyps = []
        for k in order:
            ids = strip(ys[b, k].tolist())
            done = bool(finished.view(B, K)[b, k])
            hyps.append(Hypothesis(ids, float(final[b, k]), att[b, k, : len(ids) + int(done)], done))
        out.append(hyps)
    return out


def strip(ids: list[int]) -> list[int]:
    """Token ids up to (not including) the first EOS."""
    return ids[: ids.index(EOS_ID)] if EOS_ID in ids else ids
