import json
from concurrent.futures import ThreadPoolExecutor

import pytest
from datasets import Dataset, DatasetDict

from data_prep.config import DataConfig, SplitSizes, TokenizerConfig
from data_prep.errors import DataError
from data_prep.prepare import MANIFEST, TMP_PREFIX, fingerprint, prepare
from data_prep.tokenize import train_tokenizers
from data_prep.validate import validate_corpus

SMALL = DataConfig(sizes=SplitSizes(train=300, validation=20, test=20))


def test_char_tokenizer_round_trips_text():
    corpus = DatasetDict({"train": Dataset.from_dict({"src": ["3 mar 98", "Tue, May 1"], "tgt": ["1998-03-03",
                                                                                                  "x"]})})
    src_tok, _ = train_tokenizers(corpus, TokenizerConfig(kind="char"))
    ids = src_tok.encode("3 mar 98", add_special_tokens=False).ids
    assert len(ids) == len("3 mar 98")
    assert src_tok.decode(ids) == "3 mar 98"


def test_prepare_writes_then_reuses_and_settings_change_the_fingerprint(tmp_path):
    first = prepare(SMALL, TokenizerConfig(), tmp_path)
    assert first.reused is False
    assert first.splits == {"train": 300, "validation": 20, "test": 20}
    assert json.loads((tmp_path / first.fingerprint / "manifest.json").read_text())["fingerprint"]
    second = prepare(SMALL, TokenizerConfig(), tmp_path)
    assert second.reused is True and second.fingerprint == first.fingerprint
    assert fingerprint(SMALL, TokenizerConfig(lowercase=True)) != first.fingerprint
    assert fingerprint(SMALL.model_copy(update={"seed": 9}), TokenizerConfig()) != first.fingerprint
    assert fingerprint(SMALL, TokenizerConfig(num_proc=2)) == first.fingerprint  # speed only


def test_validation_names_split_row_and_column():
    good = Dataset.from_dict({"src": ["a", "b"], "tgt": ["c", "d"]})
    bad = Dataset.from_dict({"src": ["a", " "], "tgt": ["c", "d"]})
    with pytest.raises(DataError, match=r"split 'test' row 2: empty 'src'"):
        validate_corpus(DatasetDict({"train": good, "validation": good, "test": bad}), "corpus")
    with pytest.raises(DataError, match="missing split"):
        validate_corpus(DatasetDict({"train": good}), "corpus")


def test_local_corpus_length_filter_counts_and_content_invalidation(tmp_path):
    from data_prep.config import SplitNames
    from tests.data_prep.corpora import lines, write_text

    root = write_text(tmp_path / "corpus")
    (root / "train.de").write_bytes(lines(["Ein Hund läuft.", "Zwei Männer sitzen.", "", "Kinder spielen " * 8]))
    data = DataConfig(source=str(root), src_lang="de", tgt_lang="en", splits=SplitNames(validation="val"),
                      max_len=12)
    tok = TokenizerConfig(vocab_size=60, min_frequency=1)
    first = prepare(data, tok, tmp_path / "prepared")
    assert first.tokenizer_kind == "bpe" and first.lineage["format"] == "text"
    assert first.skipped_blank == {"train": 1, "validation": 0, "test": 0}
    assert first.dropped_too_long["train"] == 1  # "Kinder spielen" x8 is far over 12 subwords
    assert first.splits["train"] == 2
    assert prepare(data, tok, tmp_path / "prepared").reused is True
    (root / "val.en").write_bytes(lines(["A cat runs.", "x", "y", "z"]))  # same path, new content
    again = prepare(data, tok, tmp_path / "prepared")
    assert again.reused is False and again.fingerprint != first.fingerprint
    with pytest.raises(DataError, match=r"data.max_len=1: every pair of split 'train' is longer"):
        prepare(data.model_copy(update={"max_len": 1}), tok, tmp_path / "prepared")


def test_concurrent_preparations_publish_one_complete_directory(tmp_path):
    with ThreadPoolExecutor(2) as pool:  # the same corpus, prepared twice at once into one root
        first, second = pool.map(lambda _: prepare(SMALL, TokenizerConfig(), tmp_path), range(2))
    assert first.dir == second.dir and first.fingerprint == second.fingerprint
    dirs = [p.name for p in tmp_path.iterdir() if p.is_dir()]
    assert dirs == [first.fingerprint], dirs  # the loser's temp dir is gone, nothing half-written is left
    assert not any(p.name.startswith(TMP_PREFIX) for p in tmp_path.iterdir())
    assert json.loads((tmp_path / first.fingerprint / MANIFEST).read_text())["splits"] == first.splits


def test_a_prepared_directory_without_its_manifest_is_rebuilt(tmp_path):
    first = prepare(SMALL, TokenizerConfig(), tmp_path)
    (tmp_path / first.fingerprint / MANIFEST).unlink()  # e.g. a copy interrupted half-way
    again = prepare(SMALL, TokenizerConfig(), tmp_path)
    assert again.reused is False and (tmp_path / first.fingerprint / MANIFEST).exists()
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == [first.fingerprint]
