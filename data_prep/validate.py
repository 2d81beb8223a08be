"""Checks a loaded corpus before any tokenizer sees it; failures name the split, row and column."""

from datasets import DatasetDict

from data_prep.errors import DataError
from data_prep.sources import SPLITS


def validate_corpus(corpus: DatasetDict, origin: str) -> None:
    missing = [s for s in SPLITS if s not in corpus]
    if missing:
        raise DataError(f"{origin}: missing split(s) {missing}; found {sorted(corpus)}")
    for split in SPLITS:
        ds = corpus[split]
        cols = set(ds.column_names)
        if not {"src", "tgt"} <= cols:
            raise DataError(f"{origin}: split {split!r} needs columns 'src' and 'tgt'; found {sorted(cols)}")
        if len(ds) == 0:
            raise DataError(f"{origin}: split {split!r} is empty")
        for col in ("src", "tgt"):
            for row, text in enumerate(ds[col]):
                if not isinstance(text, str) or not text.strip():
                    raise DataError(f"{origin}: split {split!r} row {row + 1}: empty {col!r} text")
