"""Train HF `tokenizers` on the train split and encode every split with batched `Dataset.map`.

Real text gets subword BPE; the dates corpus gets characters (its "words" are digits and month names)."""

from collections.abc import Iterator

from datasets import DatasetDict
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from data_prep.config import TokenizerConfig
from data_prep.specials import SPECIALS, UNK


def _normalizer(cfg: TokenizerConfig) -> normalizers.Normalizer | None:
    steps = [] if cfg.normalization == "none" else [getattr(normalizers, cfg.normalization)()]
    if cfg.lowercase:
        steps.append(normalizers.Lowercase())
    return normalizers.Sequence(steps) if steps else None


def resolved_kind(cfg: TokenizerConfig, source_format: str) -> str:
    """"auto" means char for the embedded dates corpus and BPE for everything else."""
    if cfg.kind != "auto":
        return cfg.kind
    return "char" if source_format == "dates" else "bpe"


def new_tokenizer(cfg: TokenizerConfig, kind: str, vocab_size: int | None = None) -> tuple[Tokenizer, trainers.Trainer]:
    if kind == "char":
        # Every character is a token; Fuse() joins them back without spaces.
        tok = Tokenizer(models.WordLevel(unk_token=UNK))
        tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
        tok.decoder = decoders.Fuse()
        trainer: trainers.Trainer = trainers.WordLevelTrainer(special_tokens=SPECIALS)
    else:
        # Metaspace keeps word boundaries inside the tokens (▁word), so decoding restores the original spacing;
        # splitting punctuation off after it keeps "Büsche." from becoming its own merge and still round-trips.
        tok = Tokenizer(models.BPE(unk_token=UNK))
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Metaspace(), pre_tokenizers.Punctuation()])
        tok.decoder = decoders.Metaspace()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size or cfg.vocab_size, min_frequency=cfg.min_frequency,
                                      special_tokens=SPECIALS)
    normalizer = _normalizer(cfg)
    if normalizer is not None:
        tok.normalizer = normalizer
    return tok, trainer


def _batches(texts: list[str], size: int = 1000) -> Iterator[list[str]]:
    for i in range(0, len(texts), size):
        yield texts[i : i + size]


def train_tokenizers(corpus: DatasetDict, cfg: TokenizerConfig, source_format: str = "dates"
                     ) -> tuple[Tokenizer, Tokenizer]:
    """(source, target) tokenizers trained on the train split only; the same object twice when joint."""
    kind = resolved_kind(cfg, source_format)
    src, tgt = corpus["train"]["src"][:], corpus["train"]["tgt"][:]
    if cfg.joint:
        tok, trainer = new_tokenizer(cfg, kind)
        tok.train_from_iterator(_batches(src + tgt), trainer=trainer, length=len(src) + len(tgt))
        return tok, tok
    src_tok, src_trainer = new_tokenizer(cfg, kind)
    src_tok.train_from_iterator(_batches(src), trainer=src_trainer, length=len(src))
    tgt_tok, tgt_trainer = new_tokenizer(cfg, kind, cfg.tgt_vocab_size)
    tgt_tok.train_from_iterator(_batches(tgt), trainer=tgt_trainer, length=len(tgt))
    return src_tok, tgt_tok


def encode_corpus(corpus: DatasetDict, src_tok: Tokenizer, tgt_tok: Tokenizer, num_proc: int) -> DatasetDict:
    """Adds `src_ids`/`tgt_ids` (no BOS/EOS: the training batcher adds them)."""

    def encode(batch: dict[str, list[str]]) -> dict[str, list[list[int]]]:
        return {
            "src_ids": [e.ids for e in src_tok.encode_batch(batch["src"], add_special_tokens=False)],
            "tgt_ids": [e.ids for e in tgt_tok.encode_batch(batch["tgt"], add_special_tokens=False)],
        }

    return corpus.map(encode, batched=True, batch_size=1000, num_proc=num_proc if num_proc > 1 else None,
                      desc="encode")
