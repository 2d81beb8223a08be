"""Writers for the small corpora the data_prep tests build in temp dirs, in every supported layout."""

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

DE = ["Ein Hund läuft.", "Zwei Männer sitzen.", "Eine Frau liest ein Buch.", "Kinder spielen im Park."]
EN = ["A dog runs.", "Two men are sitting.", "A woman reads a book.", "Children play in the park."]
SPLIT_FILES = {"train": "train", "validation": "val", "test": "test"}  # stems; val exercises data.splits


def lines(texts: list[str]) -> bytes:
    return ("\n".join(texts) + "\n").encode()


def write_text(root: Path, de: list[str] = DE, en: list[str] = EN) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for stem in SPLIT_FILES.values():
        (root / f"{stem}.de").write_bytes(lines(de))
        (root / f"{stem}.en").write_bytes(lines(en))
    return root


def write_tsv(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for stem in SPLIT_FILES.values():
        rows = ["id\ten\tde"] + [f"{i}\t{e}\t{d}" for i, (d, e) in enumerate(zip(DE, EN, strict=True))]
        (root / f"{stem}.tsv").write_bytes(lines(rows))
    return root


def write_jsonl(root: Path, nested: bool) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for stem in SPLIT_FILES.values():
        recs = [{"translation": {"de": d, "en": e}} if nested else {"de": d, "en": e, "id": i}
                for i, (d, e) in enumerate(zip(DE, EN, strict=True))]
        (root / f"{stem}.jsonl").write_bytes(lines([json.dumps(r, ensure_ascii=False) for r in recs]))
    return root


def parquet_table(nested: bool) -> pa.Table:
    if nested:
        return pa.table({"translation": [{"de": d, "en": e} for d, e in zip(DE, EN, strict=True)]})
    return pa.table({"de": DE, "en": EN, "id": list(range(len(DE)))})


def write_parquet(root: Path, nested: bool) -> Path:
    """One subdirectory per split holding two shards, so shard order and concatenation are exercised too."""
    table = parquet_table(nested)
    for stem in SPLIT_FILES.values():
        (root / stem).mkdir(parents=True, exist_ok=True)
        pq.write_table(table.slice(0, 2), root / stem / "part-0.parquet")
        pq.write_table(table.slice(2), root / stem / "part-1.parquet")
    return root


def write_hub_repo(root: Path, nested: bool, splits: tuple[str, ...] = ("train", "validation", "test")) -> Path:
    """A directory laid out like a Hub dataset repo: a README.md card and data/<split>-00000-of-00001.parquet."""
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "README.md").write_text("---\nlicense: cc-by-4.0\n---\n# test corpus\n")
    for split in splits:
        pq.write_table(parquet_table(nested), root / "data" / f"{split}-00000-of-00001.parquet")
    return root
