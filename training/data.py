"""Encoded splits as flat numpy arrays (ids + offsets): cheap to put in Ray's object store, where workers on
the same node read them zero-copy and workers on other nodes receive them without a shared disk."""

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch
from datasets import load_from_disk
from torch import Tensor

from data_prep.specials import BOS_ID, EOS_ID, PAD_ID


@dataclass(frozen=True)
class EncodedSplit:
    src_ids: np.ndarray  # all source ids, concatenated
    src_off: np.ndarray  # (N + 1,) offsets into src_ids
    tgt_ids: np.ndarray
    tgt_off: np.ndarray

    def __len__(self) -> int:
        return len(self.src_off) - 1

    @property
    def src_len(self) -> np.ndarray:
        return np.diff(self.src_off)

    @property
    def tgt_len(self) -> np.ndarray:
        return np.diff(self.tgt_off)

    def src(self, i: int) -> np.ndarray:
        return self.src_ids[self.src_off[i] : self.src_off[i + 1]]

    def tgt(self, i: int) -> np.ndarray:
        return self.tgt_ids[self.tgt_off[i] : self.tgt_off[i + 1]]


@dataclass(frozen=True)
class TrainData:
    """What every training worker receives through Ray's object store."""

    train: EncodedSplit
    validation: EncodedSplit
    val_refs: list[str]  # raw validation references, for BLEU


def _flat(col: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    arr = col.combine_chunks()
    offsets = arr.offsets.to_numpy().astype(np.int64)
    values = arr.values.to_numpy(zero_copy_only=False).astype(np.int32)
    return values[offsets[0] : offsets[-1]], offsets - offsets[0]


def load_encoded(path: str) -> dict[str, EncodedSplit]:
    out = {}
    for split, ds in load_from_disk(path).items():
        table = ds.data.table
        src_ids, src_off = _flat(table.column("src_ids"))
        tgt_ids, tgt_off = _flat(table.column("tgt_ids"))
        out[split] = EncodedSplit(src_ids, src_off, tgt_ids, tgt_off)
    return out


def collate(split: EncodedSplit, idx: list[int], device: torch.device | str = "cpu"
            ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """-> x (B, n) source + EOS, x_len (B,), y_in = BOS y (B, m), y_out = y EOS (B, m); all PAD-padded."""
    srcs = [split.src(i) for i in idx]
    tgts = [split.tgt(i) for i in idx]
    B, n, m = len(idx), max(len(s) for s in srcs) + 1, max(len(t) for t in tgts) + 1
    x = np.full((B, n), PAD_ID, dtype=np.int64)
    y_in = np.full((B, m), PAD_ID, dtype=np.int64)
    y_out = np.full((B, m), PAD_ID, dtype=np.int64)
    for b, (s, t) in enumerate(zip(srcs, tgts, strict=True)):
        x[b, : len(s)] = s
        x[b, len(s)] = EOS_ID
        y_in[b, 0] = BOS_ID
        y_in[b, 1 : len(t) + 1] = t
        y_out[b, : len(t)] = t
        y_out[b, len(t)] = EOS_ID
    x_len = torch.tensor([len(s) + 1 for s in srcs])
    return (torch.from_numpy(x).to(device), x_len, torch.from_numpy(y_in).to(device),
            torch.from_numpy(y_out).to(device))


def encode_source(ids: list[int]) -> list[int]:
    return [*ids, EOS_ID]


def load_train_data(encoded: str) -> TrainData:
    """The training and validation splits of a prepared corpus, and the validation references."""
    splits = load_encoded(encoded)
    return TrainData(splits["train"], splits["validation"], list(load_from_disk(encoded)["validation"]["tgt"]))
