"""Local parallel corpora: plain text (`train.de` + `train.en`, one sentence per line), TSV with a header row
naming the languages, JSON Lines (`{"de": .., "en": ..}` or `{"translation": {"de": .., "en": ..}}`) and Parquet
(flat language columns or a `translation` struct). Each split is a file named by the split (`val.tsv`) or a
subdirectory (`val/`) whose files are read in name order. Every error names the file and line."""

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from data_prep.errors import DataError
from data_prep.validate import RawSplit

EXTENSIONS = {"tsv": (".tsv",), "jsonl": (".jsonl",), "parquet": (".parquet",)}
LOCAL_FORMATS = ("text", "tsv", "jsonl", "parquet")


def _candidates(root: Path, name: str, suffix: str) -> list[Path]:
    single = root / f"{name}{suffix}"
    if single.is_file():
        return [single]
    sub = root / name
    return sorted(p for p in sub.glob(f"*{suffix}") if p.is_file()) if sub.is_dir() else []


def split_files(root: Path, name: str, fmt: str, src_lang: str, tgt_lang: str) -> list[Path]:
    """The files holding split `name` (for text: source and target files alternating); [] when there are none."""
    if fmt != "text":
        return [p for ext in EXTENSIONS[fmt] for p in _candidates(root, name, ext)]
    files = []
    for src in _candidates(root, name, f".{src_lang}"):
        tgt = src.with_suffix(f".{tgt_lang}")
        if not tgt.is_file():
            raise DataError(f"{tgt}: missing (its source side {src.name} exists)")
        files += [src, tgt]
    if not files and _candidates(root, name, f".{tgt_lang}"):
        raise DataError(f"{root / name}.{src_lang}: missing (the target side exists)")
    return files


def detect_format(root: Path, name: str, src_lang: str, tgt_lang: str) -> str | None:
    """The first of text/tsv/jsonl/parquet that has files for split `name` in `root`."""
    for fmt in LOCAL_FORMATS:
        if split_files(root, name, fmt, src_lang, tgt_lang):
            return fmt
    return None


def read_lines(path: Path) -> list[str]:
    """Lines split on \\n only (str.splitlines would also split on U+2028 etc. and misalign parallel files)."""
    data = path.read_bytes()
    if not data:
        raise DataError(f"{path}: file is empty")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise DataError(f"{path} line {line}: invalid UTF-8 (byte 0x{data[e.start]:02x} at column {col})") from None
    lines = text.removeprefix("\ufeff").split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def _concat(parts: list[tuple[Path, list[int], list[str | None], list[str | None]]], unit: str) -> RawSplit:
    """Joins per-file (path, line numbers, src, tgt) into one split that can name the file and line of a row."""
    src = [s for _, _, ss, _ in parts for s in ss]
    tgt = [t for _, _, _, ts in parts for t in ts]
    rows = [(path, n) for path, nums, _, _ in parts for n in nums]

    def where(i: int, side: str) -> str:
        path, n = rows[i]
        if isinstance(path, tuple):  # plain text: one file per side
            path = path[0] if side == "src" else path[1]
        return f"{path} {unit} {n}"

    files = [f for p, *_ in parts for f in (p if isinstance(p, tuple) else (p,))]
    return RawSplit(src, tgt, where, ", ".join(str(f) for f in files))


def read_text(files: list[Path]) -> RawSplit:
    parts = []
    for src_path, tgt_path in zip(files[::2], files[1::2], strict=True):
        src, tgt = read_lines(src_path), read_lines(tgt_path)
        if len(src) != len(tgt):
            raise DataError(f"{src_path} has {len(src)} lines but {tgt_path} has {len(tgt)}; "
                            "line i of one must translate line i of the other")
        parts.append(((src_path, tgt_path), list(range(1, len(src) + 1)), src, tgt))
    return _concat(parts, "line")


def read_tsv(files: list[Path], src_lang: str, tgt_lang: str) -> RawSplit:
    parts = []
    for path in files:
        lines = read_lines(path)
        header = lines[0].split("\t")
        for lang in (src_lang, tgt_lang):
            if lang not in header:
                raise DataError(f"{path} line 1: no column {lang!r} in the header; columns are {header}")
        si, ti = header.index(src_lang), header.index(tgt_lang)
        src, tgt, nums = [], [], []
        for n, line in enumerate(lines[1:], start=2):
            fields = line.split("\t")
            if len(fields) != len(header):
                if not line.strip():
                    continue  # a blank line is not a pair
                raise DataError(f"{path} line {n}: {len(fields)} tab-separated fields, the header has "
                                f"{len(header)}")
            src.append(fields[si])
            tgt.append(fields[ti])
            nums.append(n)
        parts.append((path, nums, src, tgt))
    return _concat(parts, "line")


def _pair(record: dict, src_lang: str, tgt_lang: str, where: str) -> tuple[str, str]:
    inner = record.get("translation", record)
    if not isinstance(inner, dict):
        raise DataError(f"{where}: 'translation' is not an object")
    out = []
    for lang in (src_lang, tgt_lang):
        if lang not in inner:
            raise DataError(f"{where}: record has no {lang!r}; it has {sorted(inner)}")
        text = inner[lang]
        if text is not None and not isinstance(text, str):
            raise DataError(f"{where}: {lang!r} is {type(text).__name__}, not a string")
        out.append(text)
    return out[0], out[1]


def read_jsonl(files: list[Path], src_lang: str, tgt_lang: str) -> RawSplit:
    parts = []
    for path in files:
        src, tgt, nums = [], [], []
        for n, line in enumerate(read_lines(path), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path} line {n}: broken JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(record, dict):
                raise DataError(f"{path} line {n}: expected a JSON object, got {type(record).__name__}")
            s, t = _pair(record, src_lang, tgt_lang, f"{path} line {n}")
            src.append(s)
            tgt.append(t)
            nums.append(n)
        if not nums:
            raise DataError(f"{path}: no records")
        parts.append((path, nums, src, tgt))
    return _concat(parts, "line")


def columns_for(columns: list[str], src_lang: str, tgt_lang: str, origin: str) -> tuple[str, str]:
    """The column names holding each language, in flat (`de`) or flattened nested (`translation.de`) layout."""
    picked = []
    for lang in (src_lang, tgt_lang):
        for name in (lang, f"translation.{lang}"):
            if name in columns:
                picked.append(name)
                break
        else:
            langs = sorted(c.removeprefix("translation.") for c in columns)
            raise DataError(f"{origin}: no language {lang!r}; columns/languages are {langs}")
    return picked[0], picked[1]


def read_parquet(files: list[Path], src_lang: str, tgt_lang: str) -> RawSplit:
    parts = []
    for path in files:
        try:
            table = pq.read_table(path).flatten()  # a `translation` struct becomes translation.de, translation.en
        except Exception as e:  # pyarrow raises several types for a corrupt file
            raise DataError(f"{path}: not a readable Parquet file ({str(e).splitlines()[0]})") from None
        scol, tcol = columns_for(table.column_names, src_lang, tgt_lang, str(path))
        for col in (scol, tcol):
            kind = table.schema.field(col).type
            if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
                raise DataError(f"{path}: column {col!r} holds {kind}, not strings")
        src, tgt = table.column(scol).to_pylist(), table.column(tcol).to_pylist()
        parts.append((path, list(range(1, len(src) + 1)), src, tgt))
    return _concat(parts, "row")


def read_split(fmt: str, files: list[Path], src_lang: str, tgt_lang: str) -> RawSplit:
    if fmt == "text":
        return read_text(files)
    if fmt == "tsv":
        return read_tsv(files, src_lang, tgt_lang)
    if fmt == "jsonl":
        return read_jsonl(files, src_lang, tgt_lang)
    return read_parquet(files, src_lang, tgt_lang)
