"""Each kind of bad input gets one DataError line naming the file and line (or a documented, counted skip)."""

import json
import re
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_prep.config import DataConfig, SplitNames
from data_prep.errors import DataError
from data_prep.sources import load_corpus
from tests.conftest import SHARED_DATA, run_cli
from tests.data_prep.corpora import DE, EN, lines, write_jsonl, write_text, write_tsv


def cfg(root, **kw) -> DataConfig:
    return DataConfig(**{"source": str(root), "src_lang": "de", "tgt_lang": "en",
                         "splits": SplitNames(validation="val"), **kw})


def fails(c: DataConfig, pattern: str) -> str:
    with pytest.raises(DataError) as err:
        load_corpus(c)
    message = str(err.value)
    assert len(message.splitlines()) == 1, message
    assert re.search(pattern, message), message
    return message


def test_mismatched_line_counts(tmp_path):
    root = write_text(tmp_path)
    (root / "train.en").write_bytes(lines(EN[:3]))
    fails(cfg(root), r"train.de has 4 lines but .*train.en has 3")


def test_empty_file_and_empty_split(tmp_path):
    root = write_text(tmp_path)
    (root / "val.de").write_bytes(b"")
    fails(cfg(root), r"/val.de: file is empty")
    (root / "val.de").write_bytes(b"\n \n")
    (root / "val.en").write_bytes(b"\n\n")
    fails(cfg(root), r"split 'validation' has no pairs \(2 with a blank side skipped\)")


def test_invalid_utf8_names_file_line_and_column(tmp_path):
    root = write_text(tmp_path)
    (root / "test.en").write_bytes(lines(EN[:2]) + "Caf\xe9 au lait.\n".encode("latin-1"))
    fails(cfg(root), r"/test.en line 3: invalid UTF-8 \(byte 0xe9 at column 4\)")


def test_blank_line_on_one_side_is_skipped_and_counted_or_refused(tmp_path):
    root = write_text(tmp_path)
    (root / "train.en").write_bytes(lines([EN[0], "  ", EN[2], EN[3]]))
    corpus = load_corpus(cfg(root))
    assert corpus.skipped_blank == {"train": 1, "validation": 0, "test": 0}
    assert corpus.splits["train"]["src"][:] == [DE[0], DE[2], DE[3]]  # alignment kept after the skip
    assert corpus.splits["train"]["tgt"][:] == [EN[0], EN[2], EN[3]]
    fails(cfg(root, blank_lines="error"), r"/train.en line 2: blank, but its translation is not")


def test_absurdly_long_line(tmp_path):
    root = write_text(tmp_path)
    (root / "train.de").write_bytes(lines([DE[0], "Wort " * 1000, DE[2], DE[3]]))
    fails(cfg(root), r"/train.de line 2: 4999 characters, over data.max_chars=2000")


def test_missing_split_and_missing_side(tmp_path):
    root = write_text(tmp_path)
    (root / "test.en").unlink()
    fails(cfg(root), r"test.en: missing \(its source side test.de exists\)")
    (root / "test.de").unlink()
    fails(cfg(root), r"no text files for split 'test' \(named 'test'; set data.splits.test\); found train.de")


def test_broken_json_lines_and_missing_language(tmp_path):
    root = write_jsonl(tmp_path / "a", nested=False)
    good = (root / "train.jsonl").read_text().splitlines()
    (root / "train.jsonl").write_text("\n".join([good[0], '{"de": "Hallo", "en": ', *good[2:]]) + "\n")
    fails(cfg(root), r"/train.jsonl line 2: broken JSON \(Expecting value at column 23\)")
    (root / "train.jsonl").write_text("\n".join([*good[:2], json.dumps({"de": "Hallo", "fr": "Salut"})]) + "\n")
    fails(cfg(root), r"/train.jsonl line 3: record has no 'en'; it has \['de', 'fr'\]")
    (root / "train.jsonl").write_text("\n".join([*good[:2], "[1, 2]"]) + "\n")
    fails(cfg(root), r"/train.jsonl line 3: expected a JSON object, got list")
    nested = write_jsonl(tmp_path / "b", nested=True)
    fails(cfg(nested, src_lang="cs"), r"/train.jsonl line 1: record has no 'cs'; it has \['de', 'en'\]")


def test_tsv_header_and_field_count(tmp_path):
    root = write_tsv(tmp_path)
    fails(cfg(root, src_lang="fr"),
          r"/train.tsv line 1: no column 'fr' in the header; columns are \['id', 'en', 'de'\]")
    rows = (root / "val.tsv").read_text().splitlines()
    (root / "val.tsv").write_text("\n".join([*rows[:3], "7\tonly two"]) + "\n")
    fails(cfg(root), r"/val.tsv line 4: 2 tab-separated fields, the header has 3")


def test_parquet_wrong_columns(tmp_path):
    root = tmp_path / "pq"
    root.mkdir()
    for stem in ("train", "val", "test"):
        pq.write_table(pa.table({"german": DE, "en": EN}), root / f"{stem}.parquet")
    fails(cfg(root), r"/train.parquet: no language 'de'; columns/languages are \['en', 'german'\]")
    for stem in ("train", "val", "test"):
        pq.write_table(pa.table({"de": [1, 2], "en": ["a", "b"]}), root / f"{stem}.parquet")
    fails(cfg(root), r"/train.parquet: column 'de' holds int64, not strings")


def multi30k_copy(tmp_path):
    """The real Multi30k validation/test files (and a small train) copied so one of them can be damaged."""
    root = tmp_path / "multi30k"
    root.mkdir()
    for name in ("val.de", "val.en", "test2016.de", "test2016.en"):
        shutil.copy(SHARED_DATA / name, root / name)
    for lang in ("de", "en"):
        (root / f"train.{lang}").write_bytes(b"\n".join((SHARED_DATA / f"train.{lang}").read_bytes()
                                                        .split(b"\n")[:500]) + b"\n")
    return root, DataConfig(source=str(root), src_lang="de", tgt_lang="en",
                            splits=SplitNames(validation="val", test="test2016"))


def test_damaged_real_multi30k(tmp_path):
    root, c = multi30k_copy(tmp_path)
    assert {s: len(d) for s, d in load_corpus(c).splits.items()} == {"train": 500, "validation": 1014, "test": 1000}
    val = (root / "val.de").read_bytes().split(b"\n")
    val[700] = val[700].replace("ü".encode(), b"\xfc", 1) if "ü".encode() in val[700] else val[700] + b"\xfc"
    (root / "val.de").write_bytes(b"\n".join(val))
    fails(c, r"/val.de line 701: invalid UTF-8 \(byte 0xfc")
    shutil.copy(SHARED_DATA / "val.de", root / "val.de")
    (root / "test2016.en").write_bytes(b"\n".join((SHARED_DATA / "test2016.en").read_bytes().split(b"\n")[1:]))
    fails(c, r"/test2016.de has 1000 lines but .*/test2016.en has 999")


def test_cli_reports_a_bad_source_in_one_line_before_starting_the_flow(tmp_path):
    root = write_text(tmp_path / "c")
    (root / "val.en").unlink()
    (root / "val.de").unlink()
    result = run_cli("run", "--set", f"data.source={root}", "--set", "data.src_lang=de", "--set", "data.tgt_lang=en",
                     "--set", "data.splits.validation=val", "--set", f"work_dir={tmp_path / 'w'}", timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"alignflow: error: {root}: no text files for split 'validation' (named 'val'; set data.splits.validation); "
        "found test.de, test.en, train.de, train.en"]
