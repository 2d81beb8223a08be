"""Every source kind becomes train/validation/test with src/tgt, including the real Multi30k files."""

import shutil
import subprocess
import sys

import datasets
import pytest

from data_prep.config import DataConfig, SplitNames, TokenizerConfig
from data_prep.errors import ConfigError, DataError
from data_prep.prepare import fingerprint
from data_prep.sources import load_corpus, resolve_source, source_fingerprint
from tests.conftest import REPO, SHARED_DATA
from tests.data_prep.corpora import DE, EN, write_hub_repo, write_jsonl, write_parquet, write_text, write_tsv


def cfg(root, **kw) -> DataConfig:
    return DataConfig(source=str(root), src_lang="de", tgt_lang="en", splits=SplitNames(validation="val"), **kw)


@pytest.fixture
def hf_offline(tmp_path, monkeypatch):
    """The Hub is unreachable here: datasets runs offline, with its cache in the test's temp dir."""
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")


@pytest.mark.parametrize("writer, fmt", [
    (write_text, "text"),
    (write_tsv, "tsv"),
    (lambda p: write_jsonl(p, nested=False), "jsonl"),
    (lambda p: write_jsonl(p, nested=True), "jsonl"),
    (lambda p: write_parquet(p, nested=False), "parquet"),
    (lambda p: write_parquet(p, nested=True), "parquet"),
], ids=["text", "tsv", "jsonl-flat", "jsonl-translation", "parquet-flat", "parquet-translation"])
def test_local_formats_are_detected_and_read_in_order(tmp_path, writer, fmt):
    root = writer(tmp_path / "corpus")
    assert resolve_source(cfg(root)).format == fmt
    corpus = load_corpus(cfg(root))
    assert corpus.lineage["format"] == fmt
    for split in ("train", "validation", "test"):
        assert corpus.splits[split]["src"][:] == DE and corpus.splits[split]["tgt"][:] == EN
    # the other direction is a config switch, not a different file
    flipped = load_corpus(cfg(root).model_copy(update={"src_lang": "en", "tgt_lang": "de"}))
    assert flipped.splits["train"]["src"][:] == EN


def test_hub_layouts_load_through_load_dataset_offline(tmp_path, hf_offline):
    for nested in (False, True):
        root = write_hub_repo(tmp_path / f"repo-{nested}", nested=nested)
        c = DataConfig(source=str(root), src_lang="de", tgt_lang="en")
        assert resolve_source(c).format == "hub"
        corpus = load_corpus(c)
        assert corpus.splits["test"]["src"][:] == DE and corpus.splits["test"]["tgt"][:] == EN
        assert corpus.lineage["read_from"]["validation"].endswith("split 'validation'")


def test_hub_split_aliases_and_explicit_format(tmp_path, hf_offline):
    root = write_hub_repo(tmp_path / "repo", nested=False, splits=("train", "dev", "test"))
    corpus = load_corpus(cfg(root, format="hub"))  # splits.validation is "val": falls back to dev
    assert len(corpus.splits["validation"]) == len(DE)
    assert "'dev'" in corpus.lineage["read_from"]["validation"]


def test_hub_errors_list_what_exists(tmp_path, hf_offline):
    root = write_hub_repo(tmp_path / "repo", nested=True, splits=("train", "test"))
    with pytest.raises(DataError,
                       match=r"no split 'validation' \(data.splits.validation\); it has \['test', 'train'\]"):
        load_corpus(DataConfig(source=str(root), src_lang="de", tgt_lang="en"))
    root = write_hub_repo(tmp_path / "repo2", nested=True)
    with pytest.raises(DataError, match=r"no language 'fr'; columns/languages are \['de', 'en'\]"):
        load_corpus(DataConfig(source=str(root), src_lang="fr", tgt_lang="en"))
    with pytest.raises(DataError, match=r"config 'nope'.*BuilderConfig 'nope' not found. Available: \['default'\]"):
        load_corpus(DataConfig(source=str(root), src_lang="de", tgt_lang="en", hub_config="nope"))


def test_unreachable_uncached_hub_id_is_one_line(tmp_path):
    """A fresh process with HF_DATASETS_OFFLINE=1 and an empty cache, as on a machine without the Hub."""
    code = ("from data_prep.config import DataConfig; from data_prep.sources import load_corpus\n"
            "from data_prep.errors import DataError\n"
            "try: load_corpus(DataConfig(source='bentrevett/multi30k', src_lang='de', tgt_lang='en'))\n"
            "except DataError as e: print(e)\n")
    env = {"HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO,
                         timeout=120)
    message = out.stdout.strip()
    assert len(message.splitlines()) == 1, out.stdout + out.stderr
    assert "'bentrevett/multi30k': not in the local datasets cache and the Hub is not reachable" in message


def test_source_resolution_errors(tmp_path):
    assert resolve_source(DataConfig(source="bentrevett/multi30k", src_lang="de", tgt_lang="en")).format == "hub"
    with pytest.raises(DataError, match="no such directory"):
        resolve_source(cfg(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="data.src_lang: required"):
        resolve_source(DataConfig(source=str(tmp_path)))
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match=r"no files for split 'train' .*found notes.txt"):
        resolve_source(cfg(tmp_path))


def test_fingerprint_follows_file_content_not_path(tmp_path):
    a = write_text(tmp_path / "a")
    b = shutil.copytree(a, tmp_path / "b")
    tok = TokenizerConfig()
    assert fingerprint(cfg(a), tok) == fingerprint(cfg(b), tok)  # same bytes elsewhere: same prepared data
    (b / "test.en").write_bytes((b / "test.en").read_bytes().replace(b"dog", b"cat"))
    assert fingerprint(cfg(a), tok) != fingerprint(cfg(b), tok)
    hub = DataConfig(source="org/corpus", src_lang="de", tgt_lang="en")
    assert source_fingerprint(hub) != source_fingerprint(hub.model_copy(update={"revision": "abc123"}))


def test_real_multi30k_loads_with_its_file_names():
    c = DataConfig(source=str(SHARED_DATA), src_lang="de", tgt_lang="en",
                   splits=SplitNames(validation="val", test="test2016"))
    corpus = load_corpus(c)
    assert {s: len(d) for s, d in corpus.splits.items()} == {"train": 29000, "validation": 1014, "test": 1000}
    assert corpus.skipped_blank == {"train": 0, "validation": 0, "test": 0}
    first_de = (SHARED_DATA / "train.de").read_text(encoding="utf-8").split("\n", 1)[0]
    assert corpus.splits["train"][0]["src"] == first_de.strip()
    assert corpus.lineage["format"] == "text" and len(corpus.lineage["digest"]) == 64
