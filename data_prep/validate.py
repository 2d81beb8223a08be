"""Checks every pair before any tokenizer sees it. Errors name the file and line (or split and row) at fault;
pairs with a blank side are skipped and counted, or refused when `data.blank_lines` is "error"."""

from collections.abc import Callable
from dataclasses import dataclass

from datasets import Dataset, DatasetDict

from data_prep.config import DataConfig
from data_prep.errors import DataError

SPLITS = ("train", "validation", "test")

# (row index, "src" | "tgt") -> where that text came from, e.g. "data/train.de line 17".
Locator = Callable[[int, str], str]


@dataclass
class RawSplit:
    """One split as read from its files: parallel lists plus a way to name the origin of each row."""

    src: list[str | None]
    tgt: list[str | None]
    where: Locator
    origin: str  # the split's files, for errors about the split as a whole


def clean_split(raw: RawSplit, split: str, cfg: DataConfig) -> tuple[Dataset, int]:
    """-> (Dataset with stripped `src`/`tgt`, pairs skipped for a blank side)."""
    if len(raw.src) != len(raw.tgt):  # readers check this with file names; this guards new readers
        raise DataError(f"{raw.origin}: {len(raw.src)} source texts but {len(raw.tgt)} target texts")
    if not raw.src:
        raise DataError(f"{raw.origin}: split {split!r} is empty")
    src, tgt, skipped = [], [], 0
    for i, (s, t) in enumerate(zip(raw.src, raw.tgt, strict=True)):
        s, t = (s or "").strip(), (t or "").strip()
        for side, text in (("src", s), ("tgt", t)):
            if len(text) > cfg.max_chars:
                raise DataError(f"{raw.where(i, side)}: {len(text)} characters, over data.max_chars="
                                f"{cfg.max_chars} (a missing line break?)")
        if not s or not t:
            if cfg.blank_lines == "error" and (s or t):
                side = "src" if not s else "tgt"
                raise DataError(f"{raw.where(i, side)}: blank, but its translation is not "
                                "(set data.blank_lines=skip to drop such pairs)")
            skipped += 1
            continue
        src.append(s)
        tgt.append(t)
    if not src:
        raise DataError(f"{raw.origin}: split {split!r} has no pairs ({skipped} with a blank side skipped)")
    return Dataset.from_dict({"src": src, "tgt": tgt}), skipped


def validate_corpus(corpus: DatasetDict, origin: str) -> None:
    """The contract every source meets: three splits, `src`/`tgt` columns, no empty split or text."""
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
