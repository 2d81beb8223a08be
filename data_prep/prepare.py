"""Load -> validate -> tokenize -> encode -> save, into a directory named by a fingerprint of the inputs,
so an unchanged corpus with unchanged settings is never prepared twice."""

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from data_prep.config import DataConfig, TokenizerConfig
from data_prep.sources import SPLITS, load_corpus, source_fingerprint
from data_prep.tokenize import encode_corpus, train_tokenizers
from data_prep.validate import validate_corpus

# Bump when the on-disk layout or the preparation logic changes, so old caches are not reused.
PREP_VERSION = 1
MANIFEST = "manifest.json"


def fingerprint(data: DataConfig, tokenizer: TokenizerConfig) -> str:
    key = {
        "version": PREP_VERSION,
        "source": source_fingerprint(data),
        "data": data.model_dump(mode="json"),
        # num_proc changes speed, not the result.
        "tokenizer": tokenizer.model_dump(mode="json", exclude={"num_proc"}),
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def _filter_long(corpus, max_len: int):
    kept = corpus.filter(lambda r: len(r["src_ids"]) <= max_len and len(r["tgt_ids"]) <= max_len,
                         desc="length filter")
    dropped = {s: len(corpus[s]) - len(kept[s]) for s in corpus}
    return kept, dropped


def prepare(data: DataConfig, tokenizer: TokenizerConfig, root: Path) -> dict[str, Any]:
    """Prepares the corpus under `root/<fingerprint>` (or reuses it) and returns its manifest."""
    fp = fingerprint(data, tokenizer)
    out = Path(root).resolve() / fp
    if (out / MANIFEST).exists():
        manifest = json.loads((out / MANIFEST).read_text())
        return {**manifest, "reused": True}

    corpus = load_corpus(data)
    validate_corpus(corpus, data.source)
    src_tok, tgt_tok = train_tokenizers(corpus, tokenizer)
    encoded, dropped = _filter_long(encode_corpus(corpus, src_tok, tgt_tok, tokenizer.num_proc), data.max_len)

    # Write to a temp dir and rename, so an interrupted run never leaves a half-written cache behind.
    tmp = out.with_name(fp + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    src_tok.save(str(tmp / "src_tokenizer.json"))
    tgt_tok.save(str(tmp / "tgt_tokenizer.json"))
    encoded.save_to_disk(str(tmp / "encoded"))
    manifest = {
        "fingerprint": fp,
        "source": data.source,
        "dir": str(out),
        "encoded": str(out / "encoded"),
        "src_tokenizer": str(out / "src_tokenizer.json"),
        "tgt_tokenizer": str(out / "tgt_tokenizer.json"),
        "splits": {s: len(encoded[s]) for s in SPLITS},
        "dropped_too_long": dropped,
        "src_vocab": src_tok.get_vocab_size(),
        "tgt_vocab": tgt_tok.get_vocab_size(),
    }
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return {**manifest, "reused": False}
