"""Train HF `tokenizers` on the train split and encode every split with batched `Dataset.map`."""

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


def new_tokenizer(cfg: TokenizerConfig) -> tuple[Tokenizer, trainers.Trainer]:
    if cfg.kind == "char":
        # Every character is a token; Fuse() joins them back without spaces.
        tok = Tokenizer(models.WordLevel(unk_token=UNK))
        tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
        tok.decoder = decoders.Fuse()
        trainer: trainers.Trainer = trainers.WordLevelTrainer(special_tokens=SPECIALS)
    else:
        # Metaspace keeps word boundaries inside the tokens, so decoding restores the original spacing.
        tok = Tokenizer(models.BPE(unk_token=UNK))
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        trainer = trainers.BpeTrainer(vocab_size=cfg.vocab_size, special_tokens=SPECIALS)
    normalizer = _normalizer(cfg)
    if normalizer is not None:
        tok.normalizer = normalizer
    return tok, trainer


def _batches(texts: list[str], size: int = 1000) -> Iterator[list[str]]:
    for i in range(0, len(texts), size):
        yield texts[i : i + size]


def train_tokenizers(corpus: DatasetDict, cfg: TokenizerConfig) -> tuple[Tokenizer, Tokenizer]:
    """(source, target) tokenizers trained on the train split only; the same object twice when joint."""
    train = corpus["train"]
    if cfg.joint:
        tok, trainer = new_tokenizer(cfg)
        tok.train_from_iterator(_batches(train["src"] + train["tgt"]), trainer=trainer)
        return tok, tok
    src_tok, src_trainer = new_tokenizer(cfg)
    src_tok.train_from_iterator(_batches(train["src"]), trainer=src_trainer)
    tgt_tok, tgt_trainer = new_tokenizer(cfg)
    tgt_tok.train_from_iterator(_batches(train["tgt"]), trainer=tgt_trainer)
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
