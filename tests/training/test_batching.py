import numpy as np

from training.batching import global_batches, padding_fraction, worker_slice


def _lengths(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(3, 40, n), rng.integers(3, 40, n)


def test_every_example_once_per_epoch_across_workers_and_equal_step_counts():
    src, tgt = _lengths(1001)
    for world in (1, 2, 3):
        batches = global_batches(src, tgt, batch_tokens=600, seed=1, epoch=2, min_size=world)
        per_worker = [[worker_slice(b, r, world) for b in batches] for r in range(world)]
        seen = np.concatenate([s for shards in per_worker for s in shards])
        assert sorted(seen.tolist()) == list(range(1001))
        assert all(len(shards) == len(batches) for shards in per_worker)  # DDP: same number of steps
        assert all(len(s) > 0 for shards in per_worker for s in shards)


def test_batches_respect_the_token_budget_and_change_with_the_epoch():
    src, tgt = _lengths(2000)
    batches = global_batches(src, tgt, batch_tokens=800, seed=1, epoch=1)
    widths = [(max(src[b].max(), tgt[b].max()) + 1) * 2 * len(b) for b in batches if len(b) > 1]
    assert max(widths) <= 800
    again = global_batches(src, tgt, batch_tokens=800, seed=1, epoch=1)
    assert all(np.array_equal(a, b) for a, b in zip(batches, again, strict=True))
    other = global_batches(src, tgt, batch_tokens=800, seed=1, epoch=2)
    assert not all(np.array_equal(a, b) for a, b in zip(batches, other, strict=False))


def test_bucketing_keeps_padding_low():
    src, tgt = _lengths(3000)
    bucketed = global_batches(src, tgt, batch_tokens=1500, seed=0, epoch=1)
    random_batches = np.array_split(np.random.default_rng(0).permutation(3000), len(bucketed))
    assert padding_fraction(src, tgt, bucketed) < 0.5 * padding_fraction(src, tgt, random_batches)
