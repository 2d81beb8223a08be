"""What "batch size" means under data parallelism, without Ray: the global batch is the same for any number of
workers, and the per-worker loss scaling in training/loop.py makes DDP's gradient average equal the
single-worker gradient of that global batch."""

import numpy as np
import torch

from data_prep.specials import PAD_ID
from tests.training.synthetic import random_split
from training.batching import global_batches, worker_slice
from training.config import ModelConfig
from training.data import collate
from training.model import Seq2Seq

CFG = ModelConfig(emb_size=5, enc_hidden=7, dec_hidden=11, att_hidden=3, dropout=0.0)


def _boundaries(batches: list[np.ndarray]) -> set[int]:
    return set(np.cumsum([len(b) for b in batches]).tolist())


def test_the_global_batches_do_not_depend_on_the_number_of_workers():
    split = random_split(301)
    ref = global_batches(split.src_len, split.tgt_len, batch_tokens=300, seed=3, epoch=1, min_size=1)
    ref_order = np.concatenate(ref)
    for world in (2, 3, 5):
        batches = global_batches(split.src_len, split.tgt_len, batch_tokens=300, seed=3, epoch=1, min_size=world)
        # the same examples in the same order, cut at the same places -- except that a batch with fewer
        # sentences than workers is merged into its neighbour
        assert np.array_equal(np.concatenate(batches), ref_order)
        assert _boundaries(batches) <= _boundaries(ref)
        small = sum(len(b) < world for b in ref)
        assert len(ref) - small <= len(batches) <= len(ref)
        for batch in batches:
            shards = [worker_slice(batch, r, world) for r in range(world)]
            assert all(len(s) > 0 for s in shards)
            assert sorted(np.concatenate(shards).tolist()) == sorted(batch.tolist())  # disjoint, complete


def _grads(model: Seq2Seq) -> list[torch.Tensor]:
    return [p.grad.clone() for p in model.parameters()]


def test_scaled_worker_losses_average_to_the_single_worker_gradient():
    torch.manual_seed(0)
    model = Seq2Seq(CFG, 13, 13, PAD_ID)
    split = random_split(11, seed=1)
    batch = np.arange(len(split))
    global_tokens = int(split.tgt_len[batch].sum()) + len(batch)  # as in loop.py: targets + EOS

    model.zero_grad()
    loss, n = model(*collate(split, batch.tolist()))
    assert int(n) == global_tokens
    (loss * 1 / global_tokens).backward()
    single = _grads(model)

    for world in (2, 3):
        per_worker = []
        for rank in range(world):
            model.zero_grad()
            loss, _ = model(*collate(split, worker_slice(batch, rank, world).tolist()))
            (loss * world / global_tokens).backward()  # what each worker does before DDP averages
            per_worker.append(_grads(model))
        averaged = [torch.stack(gs).mean(0) for gs in zip(*per_worker, strict=True)]  # DDP's allreduce-mean
        for a, b in zip(averaged, single, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
