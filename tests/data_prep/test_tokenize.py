"""BPE tokenizers on real German/English text: round trips, vocab options, parallel encoding."""

import pytest
from datasets import Dataset, DatasetDict

from data_prep.config import TokenizerConfig
from data_prep.specials import SPECIALS
from data_prep.tokenize import encode_corpus, resolved_kind, train_tokenizers
from tests.conftest import SHARED_DATA


@pytest.fixture(scope="module")
def multi30k_sample() -> DatasetDict:
    de = (SHARED_DATA / "train.de").read_text(encoding="utf-8").split("\n")[:3000]
    en = (SHARED_DATA / "train.en").read_text(encoding="utf-8").split("\n")[:3000]
    ds = Dataset.from_dict({"src": de, "tgt": en})
    return DatasetDict({"train": ds, "validation": ds.select(range(50)), "test": ds.select(range(50, 99))})


def test_bpe_is_the_default_for_real_text_and_round_trips(multi30k_sample):
    cfg = TokenizerConfig(vocab_size=1500)
    assert resolved_kind(cfg, "text") == "bpe" and resolved_kind(cfg, "dates") == "char"
    src_tok, tgt_tok = train_tokenizers(multi30k_sample, cfg, "text")
    assert src_tok.get_vocab_size() == 1500 and tgt_tok.get_vocab_size() == 1500
    assert [src_tok.token_to_id(s) for s in SPECIALS] == [0, 1, 2, 3]
    for text in multi30k_sample["train"]["src"][:200]:
        ids = src_tok.encode(text, add_special_tokens=False).ids
        assert src_tok.decode(ids) == text
        assert len(ids) < len(text)  # subwords, not characters
    # punctuation is its own token, so "Büsche." does not need a merge of its own
    assert src_tok.encode("Büsche.", add_special_tokens=False).tokens[-1] == "."


def test_joint_vocabulary_lowercase_and_normalization(multi30k_sample):
    joint_src, joint_tgt = train_tokenizers(multi30k_sample, TokenizerConfig(vocab_size=1200, joint=True), "text")
    assert joint_src is joint_tgt
    assert joint_src.token_to_id("▁Mann") is not None and joint_src.token_to_id("▁man") is not None
    lower, _ = train_tokenizers(multi30k_sample, TokenizerConfig(vocab_size=800, lowercase=True), "text")
    assert lower.encode("EIN HUND").ids == lower.encode("ein hund").ids
    nfkc, _ = train_tokenizers(multi30k_sample, TokenizerConfig(vocab_size=800, normalization="NFKC"), "text")
    nfc, _ = train_tokenizers(multi30k_sample, TokenizerConfig(vocab_size=800, normalization="NFC"), "text")
    assert nfkc.normalizer.normalize_str("ﬁ ①") == "fi 1" and nfc.normalizer.normalize_str("ﬁ") == "ﬁ"
    assert nfc.normalizer.normalize_str("Mu\u0308ller") == "Müller"  # combining diaeresis composed


def test_encoding_with_two_processes_matches_one(multi30k_sample):
    src_tok, tgt_tok = train_tokenizers(multi30k_sample, TokenizerConfig(vocab_size=1000), "text")
    one = encode_corpus(multi30k_sample, src_tok, tgt_tok, num_proc=1)
    two = encode_corpus(multi30k_sample, src_tok, tgt_tok, num_proc=2)
    for split in one:
        assert one[split]["src_ids"][:] == two[split]["src_ids"][:]
        assert one[split]["tgt_ids"][:] == two[split]["tgt_ids"][:]
    assert one["train"][0]["src"] == multi30k_sample["train"][0]["src"]  # text kept beside the ids
