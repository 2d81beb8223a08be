"""Training and decoding speed of alignflow on Multi30k de->en, against the fixed reference
(../shared/benchmarks/reference_bahdanau.py) measured in the same run with the same thread count.

    .venv/bin/python benchmarks/train_speed.py --config configs/multi30k.yaml --threads 2

alignflow's figures are for one process with --threads torch threads, stepping the same `train_step` that each Ray
worker runs, on the batches `configs/multi30k.yaml` trains with (token-budget buckets). Timing covers whole steps
(batch building, forward, backward, clipping, Adam) after --warmup steps, like the reference's.
"""

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

import torch
from datasets import load_from_disk
from tokenizers import Tokenizer

from data_prep.prepare import prepare
from flows.config import load_config
from training.batching import global_batches, padding_fraction
from training.data import load_encoded
from training.loop import train_step
from training.translator import Translator, build_model

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO.parent / "shared" / "benchmarks" / "reference_bahdanau.py"


def alignflow_training(config_path: str, threads: int, warmup: int, steps: int
                       ) -> tuple[dict[str, float], Translator, list[str]]:
    cfg = load_config(config_path)
    manifest = prepare(cfg.data, cfg.tokenizer, Path(cfg.work_dir) / "prepared")
    train = load_encoded(manifest["encoded"])["train"]
    src_tok, tgt_tok = Tokenizer.from_file(manifest["src_tokenizer"]), Tokenizer.from_file(manifest["tgt_tokenizer"])
    torch.set_num_threads(threads)
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model, src_tok, tgt_tok)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.train.lr)
    batches = global_batches(train.src_len, train.tgt_len, cfg.train.batch_tokens, cfg.train.seed, epoch=1)
    pad = padding_fraction(train.src_len, train.tgt_len, batches)
    print(f"alignflow: params={model.num_params():,} vocab src={src_tok.get_vocab_size()} "
          f"tgt={tgt_tok.get_vocab_size()} batches/epoch={len(batches)} "
          f"mean sents/batch={len(train) / len(batches):.1f} pad fraction={pad:.3f}", flush=True)
    model.train()
    elapsed = sents = tokens = 0.0
    for i, batch in enumerate(batches[: warmup + steps]):
        t0 = time.perf_counter()
        _, n = train_step(model, optimizer, train, batch, rank=0, world=1, device=torch.device("cpu"),
                          clip_norm=cfg.train.clip_norm)
        if i >= warmup:
            elapsed, sents, tokens = elapsed + time.perf_counter() - t0, sents + len(batch), tokens + n
    figures = {"sents/s": sents / elapsed, "tgt_tok/s": tokens / elapsed, "steps": steps}
    sources = load_from_disk(manifest["encoded"])["test"]["src"]
    return figures, Translator(model, src_tok, tgt_tok, cfg.train.max_output_ratio), sources


def reference_training(threads: int, warmup: int, steps: int) -> dict[str, float]:
    out = subprocess.run([sys.executable, str(REFERENCE), "--threads", str(threads), "--warmup", str(warmup),
                          "--steps", str(steps)], capture_output=True, text=True, check=True).stdout
    line = next(line for line in out.splitlines() if line.startswith("RESULT"))
    print(f"reference: {line}", flush=True)
    return {"sents/s": float(re.search(r"sents/s=([\d.]+)", line)[1]),
            "tgt_tok/s": float(re.search(r"tgt_tok/s=([\d.]+)", line)[1])}


def decoding(translator: Translator, sources: list[str], beam: int) -> float:
    translator.model.eval()
    t0 = time.perf_counter()
    translator.translate(sources, beam_size=beam)
    return len(sources) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(REPO / "configs" / "multi30k.yaml"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=10, help="alignflow warm-up steps (not timed)")
    ap.add_argument("--steps", type=int, default=60, help="alignflow timed steps")
    ap.add_argument("--ref-warmup", type=int, default=50)
    ap.add_argument("--ref-steps", type=int, default=300)
    ap.add_argument("--decode-sentences", type=int, default=300)
    args = ap.parse_args()

    ours, translator, sources = alignflow_training(args.config, args.threads, args.warmup, args.steps)
    print(f"alignflow: sents/s={ours['sents/s']:.1f} tgt_tok/s={ours['tgt_tok/s']:.0f}", flush=True)
    ref = reference_training(args.threads, args.ref_warmup, args.ref_steps)
    sample = sources[: args.decode_sentences]
    greedy_speed, beam_speed = decoding(translator, sample, 1), decoding(translator, sample, 5)
    print("\n| system | sents/s | tgt tok/s |\n|---|---|---|")
    print(f"| alignflow ({args.threads} threads) | {ours['sents/s']:.1f} | {ours['tgt_tok/s']:.0f} |")
    print(f"| reference ({args.threads} threads) | {ref['sents/s']:.1f} | {ref['tgt_tok/s']:.0f} |")
    print(f"\nratio alignflow/reference (sentence pairs per second): {ours['sents/s'] / ref['sents/s']:.2f}x")
    print(f"decoding ({len(sample)} test sentences, model after {args.warmup + args.steps} steps): "
          f"greedy {greedy_speed:.1f} sents/s, beam 5 {beam_speed:.1f} sents/s")


if __name__ == "__main__":
    main()
