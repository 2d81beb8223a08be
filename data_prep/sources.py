"""Corpus sources. Every source becomes a DatasetDict with `src`/`tgt` string columns and train/validation/test
splits, so everything downstream handles the embedded corpus and real ones alike.

`data.source` is "dates", a local directory (text/TSV/JSON Lines/Parquet files named by split, or a Hub-style
dataset repo with a README.md card), or a Hugging Face Hub id."""

import functools
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets import DatasetDict

from data_prep.config import DataConfig
from data_prep.dates import VERSION as DATES_VERSION
from data_prep.dates import dates_corpus
from data_prep.errors import ConfigError, DataError
from data_prep.hub import hub_splits, load_hub
from data_prep.localfiles import LOCAL_FORMATS, detect_format, read_split, split_files
from data_prep.validate import SPLITS, RawSplit, clean_split

__all__ = ["SPLITS", "Corpus", "Source", "load_corpus", "resolve_source", "source_fingerprint"]

HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


@dataclass(frozen=True)
class Source:
    """Where the corpus comes from, resolved: `format` is never "auto"; `files` are per split (local only)."""

    format: str
    location: str  # "dates", a resolved directory, or a Hub id
    files: dict[str, list[Path]] = field(default_factory=dict)


@dataclass
class Corpus:
    splits: DatasetDict
    skipped_blank: dict[str, int]  # pairs dropped because one side was blank
    lineage: dict[str, Any]  # source, format, revision, digest: what mlflow.log_input records


def _langs(cfg: DataConfig) -> tuple[str, str]:
    if not cfg.src_lang or not cfg.tgt_lang:
        missing = "data.src_lang" if not cfg.src_lang else "data.tgt_lang"
        raise ConfigError(f"{missing}: required for source {cfg.source!r} (a language code such as 'de')")
    if cfg.src_lang == cfg.tgt_lang:
        raise ConfigError(f"data.tgt_lang: same as data.src_lang ({cfg.src_lang!r})")
    return cfg.src_lang, cfg.tgt_lang


def _listing(root: Path) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())
    return ", ".join(names[:20]) + (f" (+{len(names) - 20} more)" if len(names) > 20 else "") or "nothing"


def resolve_source(cfg: DataConfig) -> Source:
    """Decides the format (when "auto") and finds each split's files, without reading them."""
    fmt = cfg.format
    if fmt == "dates" or (fmt == "auto" and cfg.source == "dates"):
        return Source("dates", "dates")
    src_lang, tgt_lang = _langs(cfg)
    root = Path(cfg.source).expanduser()
    if not root.exists():
        if fmt in LOCAL_FORMATS or not HUB_ID.fullmatch(cfg.source) or cfg.source.startswith("."):
            raise DataError(f"data.source {cfg.source!r}: no such directory")
        return Source("hub", cfg.source)
    if not root.is_dir():
        raise DataError(f"data.source {cfg.source!r}: expected a directory holding files named by split "
                        f"(train.{src_lang}, train.tsv, ...), got a file")
    root = root.resolve()
    if fmt == "auto":
        train_name = cfg.splits.train
        fmt = detect_format(root, train_name, src_lang, tgt_lang) or ("hub" if (root / "README.md").is_file() else "")
        if not fmt:
            raise DataError(f"{root}: no files for split 'train' (looked for {train_name}.{src_lang}/"
                            f"{train_name}.{tgt_lang}, {train_name}.tsv, .jsonl, .parquet or a {train_name}/ "
                            f"directory); found {_listing(root)}")
    if fmt == "hub":
        return Source("hub", str(root), {"all": sorted(p for p in root.rglob("*")
                                                       if p.is_file() and ".git" not in p.parts)})
    files = {}
    for split in SPLITS:
        name = getattr(cfg.splits, split)
        found = split_files(root, name, fmt, src_lang, tgt_lang)
        if not found:
            raise DataError(f"{root}: no {fmt} files for split {split!r} (named {name!r}; set data.splits.{split}); "
                            f"found {_listing(root)}")
        files[split] = found
    return Source(fmt, str(root), files)


@functools.lru_cache(maxsize=1024)
def _file_sha256(path: str, stat_key: tuple[int, ...]) -> str:
    """Memoised on the path and its stat (inode, size, mtime, ctime): the cache key, the task and the lineage
    each ask within one run, and a rewritten file changes at least its ctime."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _digest(paths: list[Path], root: str) -> str:
    """sha256 over the files' names (relative to the source) and contents: the same bytes anywhere, same digest."""
    h = hashlib.sha256()
    for p in paths:
        st = p.stat()
        sha = _file_sha256(str(p), (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
        h.update(f"{p.relative_to(root)}\0{sha}\0".encode())
    return h.hexdigest()


def source_fingerprint(cfg: DataConfig, source: Source | None = None) -> str:
    """What identifies the corpus content: the generator's settings, the local files' sha256, or the Hub id at a
    revision (an unpinned revision is keyed as "latest": pin a commit to notice upstream changes)."""
    source = source or resolve_source(cfg)
    if source.format == "dates":
        return f"dates:v{DATES_VERSION}:{cfg.sizes.model_dump_json()}:{cfg.seed}"
    if source.files:
        return f"{source.format}:sha256:{_digest([p for ps in source.files.values() for p in ps], source.location)}"
    return f"hub:{source.location}:{cfg.hub_config}:{cfg.revision or 'latest'}"


def load_corpus(cfg: DataConfig) -> Corpus:
    """Reads and checks every split; `lineage.digest` is the sha256 of the files read (or of the generator
    settings, or of the datasets fingerprints of what a Hub id loaded)."""
    source = resolve_source(cfg)
    identity = source_fingerprint(cfg, source)
    digest = identity.rsplit(":", 1)[-1] if source.files else hashlib.sha256(identity.encode()).hexdigest()
    lineage: dict[str, Any] = {"source": cfg.source, "location": source.location, "format": source.format,
                               "revision": cfg.revision, "digest": digest}
    if source.format == "dates":
        return Corpus(dates_corpus(cfg.sizes, cfg.seed), dict.fromkeys(SPLITS, 0), lineage)
    src_lang, tgt_lang = _langs(cfg)
    raw: dict[str, RawSplit]
    if source.format == "hub":
        loaded = load_hub(cfg)
        raw = hub_splits(loaded, cfg, src_lang, tgt_lang)
        if not source.files:  # a Hub id: the content identity is the datasets cache fingerprint of what loaded
            lineage["digest"] = hashlib.sha256("".join(loaded[s]._fingerprint for s in sorted(loaded)).encode()
                                               ).hexdigest()
    else:
        raw = {split: read_split(source.format, source.files[split], src_lang, tgt_lang) for split in SPLITS}
    cleaned = {split: clean_split(raw[split], split, cfg) for split in SPLITS}
    lineage.update({"src_lang": src_lang, "tgt_lang": tgt_lang, "hub_config": cfg.hub_config,
                    "read_from": {split: raw[split].origin for split in SPLITS}})
    return Corpus(DatasetDict({s: ds for s, (ds, _) in cleaned.items()}),
                  {s: n for s, (_, n) in cleaned.items()}, lineage)
