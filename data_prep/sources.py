"""Corpus sources. Every source returns a DatasetDict with `src`/`tgt` string columns and
train/validation/test splits, so everything downstream handles the embedded corpus and real ones alike."""

from datasets import DatasetDict

from data_prep.config import DataConfig
from data_prep.dates import dates_corpus
from data_prep.errors import DataError

SPLITS = ("train", "validation", "test")


def load_corpus(cfg: DataConfig) -> DatasetDict:
    if cfg.source == "dates":
        return dates_corpus(cfg.sizes, cfg.seed)
    raise DataError(f"data.source: unknown source {cfg.source!r} (expected 'dates')")


def source_fingerprint(cfg: DataConfig) -> str:
    """What identifies the corpus content; the generator's output is fixed by its settings."""
    return f"dates:{cfg.sizes.model_dump_json()}:{cfg.seed}"
