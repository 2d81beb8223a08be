"""A random encoded corpus for tests that need batches but no real text."""

import numpy as np

from data_prep.specials import EOS_ID
from training.data import EncodedSplit


def _offsets(lengths: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)


def random_split(n: int, vocab: int = 13, seed: int = 0) -> EncodedSplit:
    rng = np.random.default_rng(seed)
    src_len, tgt_len = rng.integers(2, 9, n), rng.integers(2, 7, n)
    src = rng.integers(EOS_ID + 1, vocab, int(src_len.sum())).astype(np.int32)
    tgt = rng.integers(EOS_ID + 1, vocab, int(tgt_len.sum())).astype(np.int32)
    return EncodedSplit(src, _offsets(src_len), tgt, _offsets(tgt_len))
