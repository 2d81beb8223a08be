"""Load -> validate -> tokenize -> encode -> length-filter -> save, into a directory named by a fingerprint of
the corpus content and the settings, so an unchanged corpus with unchanged settings is never prepared twice.

Safe for concurrent runs in one work dir: each writes into its own temporary directory and publishes it with one
rename under a lock file, so `<fingerprint>/` is either absent or complete. A run that loses the race finds the
winner's complete directory, uses it and discards its own copy; nobody deletes a directory another run reads."""

import dataclasses
import hashlib
import json
import logging
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from datasets import DatasetDict
from filelock import FileLock

from data_prep.config import DataConfig, TokenizerConfig
from data_prep.errors import DataError
from data_prep.sources import SPLITS, load_corpus, source_fingerprint
from data_prep.tokenize import encode_corpus, resolved_kind, train_tokenizers
from data_prep.validate import validate_corpus

log = logging.getLogger(__name__)

# Bump when the on-disk layout or the preparation logic changes, so old caches are not reused.
PREP_VERSION = 2
MANIFEST = "manifest.json"
TMP_PREFIX = ".tmp-"  # unfinished preparations: <root>/.tmp-<fingerprint>-<random>/ (`alignflow gc` removes stale ones)


def lock_path(root: Path, fp: str) -> Path:
    return Path(root) / f".{fp}.lock"


@dataclass(frozen=True)
class Manifest:
    """What `prepare` made: where the tokenizers and encoded splits are, and what went into them. Written beside
    them as manifest.json; `reused` and `cached` say how this run got it and are not part of that file."""

    fingerprint: str
    source: str
    lineage: dict[str, Any]  # format, location, revision, digest of the corpus
    dir: str
    encoded: str  # datasets DatasetDict on disk: src, tgt, src_ids, tgt_ids per split
    src_tokenizer: str  # tokenizer.json paths
    tgt_tokenizer: str
    tokenizer_kind: str
    splits: dict[str, int]  # pairs kept per split
    skipped_blank: dict[str, int]
    dropped_too_long: dict[str, int]
    src_vocab: int
    tgt_vocab: int
    timings: dict[str, float]  # seconds per build stage
    reused: bool = False  # found on disk rather than built
    cached: bool = False  # the Prefect task was skipped (flows/pipeline.py)

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k not in ("reused", "cached")}

    @classmethod
    def read(cls, directory: Path) -> "Manifest":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in json.loads((directory / MANIFEST).read_text()).items() if k in known})


def fingerprint(data: DataConfig, tokenizer: TokenizerConfig) -> str:
    """Content identity of the corpus (local files are hashed) + every setting that changes the prepared data."""
    key = {
        "version": PREP_VERSION,
        "source": source_fingerprint(data),
        # The path and the spelling of the format do not change the result once the content is hashed.
        "data": data.model_dump(mode="json", exclude={"source", "format"}),
        # num_proc changes speed, not the result.
        "tokenizer": tokenizer.model_dump(mode="json", exclude={"num_proc"}),
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def _filter_long(corpus: DatasetDict, max_len: int, num_proc: int) -> tuple[DatasetDict, dict[str, int]]:
    kept = corpus.filter(lambda r: [len(s) <= max_len and len(t) <= max_len
                                    for s, t in zip(r["src_ids"], r["tgt_ids"], strict=True)],
                         batched=True, batch_size=1000, num_proc=num_proc if num_proc > 1 else None,
                         desc="length filter")
    dropped = {s: len(corpus[s]) - len(kept[s]) for s in corpus}
    return kept, dropped


def prepare(data: DataConfig, tokenizer: TokenizerConfig, root: Path) -> Manifest:
    """Prepares the corpus under `root/<fingerprint>` (or reuses it) and returns its manifest."""
    fp = fingerprint(data, tokenizer)
    out = Path(root).resolve() / fp
    if (done := _reuse(out)) is not None:
        return done

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    corpus = load_corpus(data)
    validate_corpus(corpus.splits, data.source)
    timings["load_s"] = time.perf_counter() - t0
    kind = resolved_kind(tokenizer, corpus.lineage["format"])
    t0 = time.perf_counter()
    src_tok, tgt_tok = train_tokenizers(corpus.splits, tokenizer, corpus.lineage["format"])
    timings["tokenizer_train_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    encoded = encode_corpus(corpus.splits, src_tok, tgt_tok, tokenizer.num_proc)
    encoded, dropped = _filter_long(encoded, data.max_len, tokenizer.num_proc)
    timings["encode_s"] = time.perf_counter() - t0
    for split in SPLITS:
        if len(encoded[split]) == 0:
            raise DataError(f"data.max_len={data.max_len}: every pair of split {split!r} is longer; raise it")
    log.info("prepared %s: kept %s, dropped as longer than %d tokens %s, skipped for a blank side %s",
             data.source, {s: len(encoded[s]) for s in SPLITS}, data.max_len, dropped, corpus.skipped_blank)

    manifest = Manifest(
        fingerprint=fp,
        source=data.source,
        lineage=corpus.lineage,
        dir=str(out),
        encoded=str(out / "encoded"),
        src_tokenizer=str(out / "src_tokenizer.json"),
        tgt_tokenizer=str(out / "tgt_tokenizer.json"),
        tokenizer_kind=kind,
        splits={s: len(encoded[s]) for s in SPLITS},
        skipped_blank=corpus.skipped_blank,
        dropped_too_long=dropped,
        src_vocab=src_tok.get_vocab_size(),
        tgt_vocab=tgt_tok.get_vocab_size(),
        timings={k: round(v, 3) for k, v in timings.items()},
    )
    # A temp dir of this run's own, renamed into place: an interrupted run never leaves a half-written cache
    # behind, and two runs preparing the same corpus never write into (or delete) each other's files.
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{fp}-", dir=out.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp's 0700 would hide the published corpus from other users of a shared work dir
        src_tok.save(str(tmp / "src_tokenizer.json"))
        tgt_tok.save(str(tmp / "tgt_tokenizer.json"))
        encoded.save_to_disk(str(tmp / "encoded"))
        (tmp / MANIFEST).write_text(json.dumps(manifest.to_json(), indent=2))  # last: its presence means complete
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _publish(tmp, out, manifest)


def _reuse(out: Path) -> Manifest | None:
    return dataclasses.replace(Manifest.read(out), reused=True) if (out / MANIFEST).exists() else None


def _publish(tmp: Path, out: Path, manifest: Manifest) -> Manifest:
    """Renames `tmp` to `out` unless another run got there first. The lock makes check-and-rename one step, so
    a complete `out` is never replaced; an incomplete one (files deleted by hand) is moved aside first."""
    with FileLock(lock_path(out.parent, out.name)):
        if (done := _reuse(out)) is not None:
            shutil.rmtree(tmp, ignore_errors=True)
            return done
        if out.exists():
            stale = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{out.name}-stale-", dir=out.parent))
            out.rename(stale / "old")
            shutil.rmtree(stale, ignore_errors=True)
        tmp.rename(out)
    return manifest
