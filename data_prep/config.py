"""Configuration sections owned by data_prep: where the corpus comes from and how it is tokenized."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt


class _Section(BaseModel):
    # extra="forbid": a misspelt key is an error that names the key, never a silent default.
    model_config = ConfigDict(extra="forbid")


class SplitSizes(_Section):
    train: PositiveInt = 20_000
    validation: PositiveInt = 1_000
    test: PositiveInt = 1_000


class DataConfig(_Section):
    source: str = Field("dates", description="'dates' (embedded generator), a Hub dataset id, or a local path")
    sizes: SplitSizes = SplitSizes()  # only for source=dates
    seed: int = 1234
    max_len: PositiveInt = Field(100, description="drop pairs whose source or target exceeds this many tokens")


class TokenizerConfig(_Section):
    kind: Literal["char", "bpe"] = "char"
    vocab_size: PositiveInt = 8000  # bpe only
    joint: bool = False  # one vocabulary for both sides (bpe)
    lowercase: bool = False
    normalization: Literal["NFC", "NFKC", "none"] = "NFC"
    num_proc: PositiveInt = 1  # processes for Dataset.map encoding
