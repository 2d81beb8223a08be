"""Configuration sections owned by data_prep: where the corpus comes from and how it is tokenized."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_validator


class _Section(BaseModel):
    # extra="forbid": a misspelt key is an error that names the key, never a silent default.
    model_config = ConfigDict(extra="forbid")


class SplitSizes(_Section):
    train: PositiveInt = 20_000
    validation: PositiveInt = 1_000
    test: PositiveInt = 1_000


class SplitNames(_Section):
    """What each split is called in the source: a Hub split name, a file stem (`val.de`) or a subdirectory."""

    train: str = "train"
    validation: str = "validation"
    test: str = "test"


SourceFormat = Literal["auto", "dates", "hub", "text", "tsv", "jsonl", "parquet"]


class DataConfig(_Section):
    source: str = Field("dates", description="'dates' (embedded generator), a Hub dataset id, or a local directory")
    format: SourceFormat = Field(
        "auto", description="auto: 'dates', a local directory's files (text/tsv/jsonl/parquet; a directory with a "
        "README.md dataset card goes through datasets.load_dataset), else a Hub id")
    src_lang: str | None = Field(None, description="source language code: file suffix, column or translation key")
    tgt_lang: str | None = Field(None, description="target language code")
    hub_config: str | None = Field(None, description="Hub dataset configuration (load_dataset's `name`)")
    revision: str | None = Field(None, description="Hub branch, tag or commit; pin a commit for reproducible caches")
    splits: SplitNames = SplitNames()
    sizes: SplitSizes = SplitSizes()  # only for source=dates
    seed: int = 1234
    blank_lines: Literal["skip", "error"] = Field(
        "skip", description="pairs with a blank side: skipped and counted, or an error naming file and line")
    max_chars: PositiveInt = Field(2000, description="a line longer than this is an error (a missing newline?)")
    max_len: PositiveInt = Field(100, description="drop pairs whose source or target exceeds this many tokens")


class TokenizerConfig(_Section):
    kind: Literal["auto", "char", "bpe"] = "auto"  # auto: char for the dates corpus, bpe for real text
    vocab_size: PositiveInt = 8000  # bpe only; per side unless joint
    # The target vocabulary sizes the output softmax, the largest layer of the model: it may be set smaller.
    tgt_vocab_size: PositiveInt | None = None  # bpe only, not with joint; default: vocab_size
    min_frequency: PositiveInt = 2  # bpe only: merges seen fewer times are not learned
    joint: bool = False  # one vocabulary for both sides (bpe)
    lowercase: bool = False
    normalization: Literal["NFC", "NFKC", "none"] = "NFC"
    num_proc: PositiveInt = 1  # processes for Dataset.map encoding

    @model_validator(mode="after")
    def _one_size_when_joint(self) -> "TokenizerConfig":
        if self.joint and self.tgt_vocab_size is not None:
            raise ValueError("tgt_vocab_size needs joint: false (a joint vocabulary has one size, vocab_size)")
        return self
