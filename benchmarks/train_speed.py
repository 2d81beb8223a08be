"""Training and decoding speed of alignflow on Multi30k de->en, against the fixed reference
(../shared/benchmarks/reference_bahdanau.py) measured in the same run on the same cores.

    .venv/bin/python benchmarks/train_speed.py --config configs/multi30k.yaml [--set key=value ...]

alignflow is measured the way the config trains: `scaling.num_workers` data-parallel processes (DDP over gloo, as
Ray Train's prepare_model sets up) with `scaling.threads_per_worker` torch threads each, stepping the same
`train_step` every Ray worker runs on the same global token-budget batches. The reference gets the same total
number of threads (--threads, default workers x threads). Timing covers whole steps (batch building, forward,
backward, gradient all-reduce, clipping, Adam) after warm-up steps, like the reference's own timing.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from datasets import load_from_disk
from safetensors.torch import load_model, save_model
from tokenizers import Tokenizer
from torch.nn.parallel import DistributedDataParallel

from data_prep.prepare import prepare
from flows.config import PipelineConfig, load_config
from training.batching import global_batches, padding_fraction
from training.data import load_encoded
from training.loop import _allreduce, compress_gradients, train_step
from training.translator import Translator, build_model

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO.parent / "shared" / "benchmarks" / "reference_bahdanau.py"


def _worker(rank: int, world: int, cfg: PipelineConfig, manifest: dict, warmup: int, steps: int, out: str) -> None:
    torch.set_num_threads(cfg.scaling.threads)
    train = load_encoded(manifest["encoded"])["train"]
    src_tok, tgt_tok = Tokenizer.from_file(manifest["src_tokenizer"]), Tokenizer.from_file(manifest["tgt_tokenizer"])
    torch.manual_seed(cfg.train.seed)
    model: torch.nn.Module = build_model(cfg.model, src_tok, tgt_tok)
    if world > 1:
        dist.init_process_group("gloo", rank=rank, world_size=world)
        model = DistributedDataParallel(model)
        compress_gradients(model, cfg.scaling.grad_compression)  # as the Ray workers do
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.train.lr, fused=True)
    torch.manual_seed(cfg.train.seed + 1 + rank)
    batches = global_batches(train.src_len, train.tgt_len, cfg.train.batch_tokens, cfg.train.seed, 1, min_size=world)
    model.train()
    elapsed = sents = tokens = 0.0
    for i, batch in enumerate(batches[: warmup + steps]):
        if world > 1:
            dist.barrier()  # time the group, as fast as its slowest worker
        t0 = time.perf_counter()
        _, n = train_step(model, optimizer, train, batch, rank, world, torch.device("cpu"), cfg.train.clip_norm,
                          cfg.train.label_smoothing)
        if i >= warmup:
            elapsed, sents, tokens = elapsed + time.perf_counter() - t0, sents + len(batch), tokens + n
    [tokens], [elapsed] = _allreduce([tokens]), _allreduce([elapsed], dist.ReduceOp.MAX)  # no-op for 1 worker
    if rank == 0:
        net = getattr(model, "module", model)
        save_model(net, f"{out}/model.safetensors")
        Path(f"{out}/figures").write_text(f"{sents / elapsed} {tokens / elapsed}")
    if world > 1:
        dist.destroy_process_group()


def alignflow_training(cfg: PipelineConfig, warmup: int, steps: int) -> tuple[dict[str, float], Translator, list]:
    manifest = prepare(cfg.data, cfg.tokenizer, Path(cfg.work_dir) / "prepared")
    train = load_encoded(manifest["encoded"])["train"]
    src_tok, tgt_tok = Tokenizer.from_file(manifest["src_tokenizer"]), Tokenizer.from_file(manifest["tgt_tokenizer"])
    model = build_model(cfg.model, src_tok, tgt_tok)
    world = cfg.scaling.num_workers
    batches = global_batches(train.src_len, train.tgt_len, cfg.train.batch_tokens, cfg.train.seed, 1, min_size=world)
    print(f"alignflow: {world} worker(s) x {cfg.scaling.threads} thread(s), params={model.num_params():,} "
          f"vocab src={src_tok.get_vocab_size()} tgt={tgt_tok.get_vocab_size()} batches/epoch={len(batches)} "
          f"mean sents/batch={len(train) / len(batches):.1f} "
          f"pad fraction={padding_fraction(train.src_len, train.tgt_len, batches):.3f}", flush=True)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ.get("MASTER_PORT", "29533"))
    with tempfile.TemporaryDirectory() as out:
        mp.spawn(_worker, args=(world, cfg, manifest, warmup, steps, out), nprocs=world)
        sents_s, tok_s = map(float, Path(f"{out}/figures").read_text().split())
        load_model(model, f"{out}/model.safetensors")
    torch.set_num_threads(cfg.scaling.num_workers * cfg.scaling.threads)
    sources = load_from_disk(manifest["encoded"])["test"]["src"]
    return {"sents/s": sents_s, "tgt_tok/s": tok_s}, Translator(model, src_tok, tgt_tok,
                                                                  cfg.train.max_output_ratio), sources


def reference_training(threads: int, warmup: int, steps: int) -> dict[str, float]:
    out = subprocess.run([sys.executable, str(REFERENCE), "--threads", str(threads), "--warmup", str(warmup),
                          "--steps", str(steps)], capture_output=True, text=True, check=True).stdout
    print("reference: " + " | ".join(line for line in out.splitlines() if line.startswith(("torch", "RESULT"))),
          flush=True)
    line = next(line for line in out.splitlines() if line.startswith("RESULT"))
    return {"sents/s": float(re.search(r"sents/s=([\d.]+)", line)[1]),
            "tgt_tok/s": float(re.search(r"tgt_tok/s=([\d.]+)", line)[1])}


def decoding(translator: Translator, sources: list[str], beam: int) -> float:
    t0 = time.perf_counter()
    translator.translate(sources, beam_size=beam)
    return len(sources) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(REPO / "configs" / "multi30k.yaml"))
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--threads", type=int, help="reference threads (default: alignflow's workers x threads)")
    ap.add_argument("--warmup", type=int, default=5, help="alignflow warm-up steps (not timed)")
    ap.add_argument("--steps", type=int, default=40, help="alignflow timed steps")
    ap.add_argument("--ref-warmup", type=int, default=50)
    ap.add_argument("--ref-steps", type=int, default=300)
    ap.add_argument("--decode-sentences", type=int, default=300)
    ap.add_argument("--skip-reference", action="store_true", help="only alignflow (for tuning; prints no ratio)")
    args = ap.parse_args()

    cfg = load_config(args.config, args.overrides)
    threads = args.threads or cfg.scaling.num_workers * cfg.scaling.threads
    ours, translator, sources = alignflow_training(cfg, args.warmup, args.steps)
    print(f"alignflow: sents/s={ours['sents/s']:.1f} tgt_tok/s={ours['tgt_tok/s']:.0f}", flush=True)
    if args.skip_reference:
        return
    ref = reference_training(threads, args.ref_warmup, args.ref_steps)
    sample = sources[: args.decode_sentences]
    greedy_speed, beam_speed = decoding(translator, sample, 1), decoding(translator, sample, 5)
    layout = f"{cfg.scaling.num_workers} x {cfg.scaling.threads} threads"
    print(f"\n| system | sents/s | tgt tok/s |\n|---|---|---|\n"
          f"| alignflow ({layout}) | {ours['sents/s']:.1f} | {ours['tgt_tok/s']:.0f} |\n"
          f"| reference ({threads} threads) | {ref['sents/s']:.1f} | {ref['tgt_tok/s']:.0f} |")
    print(f"\nratio alignflow/reference (sentence pairs per second): {ours['sents/s'] / ref['sents/s']:.2f}x")
    print(f"decoding ({len(sample)} test sentences, {threads} threads, model after {args.warmup + args.steps} "
          f"steps): greedy {greedy_speed:.1f} sents/s, beam 5 {beam_speed:.1f} sents/s")


if __name__ == "__main__":
    main()
