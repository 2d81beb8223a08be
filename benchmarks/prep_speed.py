"""Data-preparation throughput on Multi30k (de->en): sentence pairs per second for BPE tokenizer training and
for encoding the training split with batched Dataset.map in 1 process (the baseline) and in 2.

    .venv/bin/python benchmarks/prep_speed.py [--data ../shared/data/multi30k] [--repeat 3] [--vocab 8000]

Each figure is the best of --repeat runs (least disturbed by other work on the machine)."""

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")  # the library's own threads, as in a real run

import datasets

from data_prep.config import DataConfig, SplitNames, TokenizerConfig
from data_prep.sources import load_corpus
from data_prep.tokenize import encode_corpus, train_tokenizers

REPO = Path(__file__).resolve().parents[1]


def best_of(repeat: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "multi30k"))
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--vocab", type=int, default=8000)
    args = p.parse_args()
    datasets.disable_progress_bars()

    t0 = time.perf_counter()
    corpus = load_corpus(DataConfig(source=args.data, src_lang="de", tgt_lang="en",
                                    splits=SplitNames(validation="val", test="test2016"))).splits
    load_s = time.perf_counter() - t0
    train = datasets.DatasetDict({"train": corpus["train"]})
    n = len(train["train"])
    cfg = TokenizerConfig(kind="bpe", vocab_size=args.vocab)
    print(f"Multi30k train: {n} pairs; read + validated all 3 splits in {load_s:.2f}s; cpus={os.cpu_count()}")

    tok_s = best_of(args.repeat, lambda: train_tokenizers(train, cfg, "text"))
    src_tok, tgt_tok = train_tokenizers(train, cfg, "text")
    direct = best_of(args.repeat, lambda: (src_tok.encode_batch(train["train"]["src"][:], add_special_tokens=False),
                                           tgt_tok.encode_batch(train["train"]["tgt"][:], add_special_tokens=False)))
    one = best_of(args.repeat, lambda: encode_corpus(train, src_tok, tgt_tok, num_proc=1))
    two = best_of(args.repeat, lambda: encode_corpus(train, src_tok, tgt_tok, num_proc=2))

    print(f"{'stage':<46}{'seconds':>9}{'pairs/s':>11}{'vs 1 proc':>11}")
    rows = [(f"BPE training (src+tgt, vocab {args.vocab} each)", tok_s, None),
            ("encode_batch, no Dataset.map (reference)", direct, None),
            ("encode train, Dataset.map num_proc=1 (baseline)", one, 1.0),
            ("encode train, Dataset.map num_proc=2", two, one / two)]
    for name, secs, ratio in rows:
        print(f"{name:<46}{secs:>9.2f}{n / secs:>11,.0f}{'' if ratio is None else f'{ratio:>10.2f}x':>11}")
    print(f"RESULT tokenizer_train_pairs_per_s={n / tok_s:.0f} encode_1proc_pairs_per_s={n / one:.0f} "
          f"encode_2proc_pairs_per_s={n / two:.0f} speedup_2_vs_1={one / two:.2f}")


if __name__ == "__main__":
    main()
