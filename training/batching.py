"""Length-bucketed batches under a token budget, identical on every worker.

Every worker builds the same *global* batches from (seed, epoch) and takes its interleaved slice of each, so
all workers run the same number of steps (DDP needs that), each example is trained on exactly once per epoch
across the worker group, and the global batch -- hence the optimisation -- does not change with the number of
workers. `batch_tokens` is the global budget of padded source + target tokens per step.
"""

import numpy as np

POOL_BATCHES = 100  # sort by length inside pools of ~100 batches, then shuffle batches (like OpenNMT-py)


def global_batches(src_len: np.ndarray, tgt_len: np.ndarray, batch_tokens: int, seed: int, epoch: int,
                   min_size: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(src_len))
    cost = np.maximum(src_len, tgt_len) + 1  # padded width per sentence (+EOS/BOS)
    pool = max(1, int(POOL_BATCHES * batch_tokens / max(1.0, float(cost.mean()))))
    batches: list[np.ndarray] = []
    for start in range(0, len(order), pool):
        chunk = order[start : start + pool]
        chunk = chunk[np.lexsort((tgt_len[chunk], src_len[chunk]))]
        current: list[int] = []
        width = 0
        for i in chunk:
            w = max(width, int(cost[i]))
            if current and w * 2 * (len(current) + 1) > batch_tokens:
                batches.append(np.array(current))
                current, w = [], int(cost[i])
            current.append(int(i))
            width = w
        if current:
            batches.append(np.array(current))
    rng.shuffle(batches)
    # A batch smaller than the worker count would leave a worker without data: merge it into its neighbour.
    # Merging after the shuffle keeps the order of examples and every other batch the same for any world size.
    merged: list[np.ndarray] = []
    for b in batches:
        if merged and (len(b) < min_size or len(merged[-1]) < min_size):
            merged[-1] = np.concatenate([merged[-1], b])
        else:
            merged.append(b)
    return merged


def worker_slice(batch: np.ndarray, rank: int, world: int) -> np.ndarray:
    """Interleaved slice, so every worker gets sentences of the same length bucket."""
    return batch[rank::world]


def padding_fraction(src_len: np.ndarray, tgt_len: np.ndarray, batches: list[np.ndarray]) -> float:
    real = padded = 0
    for b in batches:
        real += int(src_len[b].sum() + tgt_len[b].sum()) + 2 * len(b)
        padded += (int(src_len[b].max()) + 1 + int(tgt_len[b].max()) + 1) * len(b)
    return 1.0 - real / max(1, padded)
