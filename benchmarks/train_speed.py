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

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from datasets import load_from_disk
from safetensors.torch import load_model, save_model
from tokenizers import Tokenizer
from torch.nn.parallel import DistributedDataParallel

from data_prep.prepare import Manifest, prepare
from flows.config import PipelineConfig, load_config
from training.batching import global_batches, padding_fraction
from training.config import ModelConfig
from training.data import load_encoded
from training.loop import compress_gradients, train_step
from training.translator import Translator, build_model

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO.parent / "shared" / "benchmarks" / "reference_bahdanau.py"


def _worker(rank: int, world: int, cfg: PipelineConfig, manifest: Manifest, warmup: int, steps: int, out: str,
            communicate: bool = True) -> None:
    """Times `steps` training steps of this rank's slice of the global batches. communicate=False trains the
    same slices without DDP: independent processes, the ceiling that data parallelism could reach here."""
    torch.set_num_threads(cfg.scaling.threads)
    train = load_encoded(manifest.encoded)["train"]
    src_tok, tgt_tok = Tokenizer.from_file(manifest.src_tokenizer), Tokenizer.from_file(manifest.tgt_tokenizer)
    torch.manual_seed(cfg.train.seed)
    model: torch.nn.Module = build_model(cfg.model, src_tok, tgt_tok)
    ddp = communicate and world > 1
    if ddp:
        dist.init_process_group("gloo", rank=rank, world_size=world)
        model = DistributedDataParallel(model)
        compress_gradients(model, cfg.scaling.grad_compression)  # as the Ray workers do
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.train.lr, fused=True)
    torch.manual_seed(cfg.train.seed + 1 + rank)
    batches = global_batches(train.src_len, train.tgt_len, cfg.train.batch_tokens, cfg.train.seed, 1, min_size=world)
    model.train()
    elapsed = sents = tokens = 0.0
    for i, batch in enumerate(batches[: warmup + steps]):
        if ddp:
            dist.barrier()  # time the group, as fast as its slowest worker
        t0 = time.perf_counter()
        _, n = train_step(model, optimizer, train, batch, rank, world, torch.device("cpu"), cfg.train.clip_norm,
                          cfg.train.label_smoothing)
        if i >= warmup:
            elapsed, sents, tokens = elapsed + time.perf_counter() - t0, sents + len(batch[rank::world]), tokens + n
    # Each rank's own figures; the caller combines them (a DDP group is as fast as its slowest rank).
    Path(f"{out}/figures.{rank}").write_text(f"{sents} {tokens} {elapsed}")
    if rank == 0:
        save_model(getattr(model, "module", model), f"{out}/model.safetensors")
    if ddp:
        dist.destroy_process_group()


def timed_steps(cfg: PipelineConfig, manifest: Manifest, warmup: int, steps: int, out: str, world: int,
                communicate: bool = True) -> dict[str, float]:
    """Runs `world` timed worker processes -> sents/s and target tokens/s of the whole group."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ.get("MASTER_PORT", "29533"))
    mp.spawn(_worker, args=(world, cfg, manifest, warmup, steps, out, communicate), nprocs=world)
    figures = [tuple(map(float, Path(f"{out}/figures.{r}").read_text().split())) for r in range(world)]
    if communicate:  # in step: the group's time is its slowest rank's
        wall = max(e for _, _, e in figures)
        return {"sents/s": sum(s for s, _, _ in figures) / wall, "tgt_tok/s": sum(t for _, t, _ in figures) / wall}
    return {"sents/s": sum(s / e for s, _, e in figures), "tgt_tok/s": sum(t / e for _, t, e in figures)}


def alignflow_training(cfg: PipelineConfig, warmup: int, steps: int) -> tuple[dict, Translator, list]:
    manifest = prepare(cfg.data, cfg.tokenizer, Path(cfg.work_dir) / "prepared")
    train = load_encoded(manifest.encoded)["train"]
    src_tok, tgt_tok = Tokenizer.from_file(manifest.src_tokenizer), Tokenizer.from_file(manifest.tgt_tokenizer)
    model = build_model(cfg.model, src_tok, tgt_tok)
    world = cfg.scaling.num_workers
    batches = global_batches(train.src_len, train.tgt_len, cfg.train.batch_tokens, cfg.train.seed, 1, min_size=world)
    print(f"alignflow: {world} worker(s) x {cfg.scaling.threads} thread(s), params={model.num_params():,} "
          f"vocab src={src_tok.get_vocab_size()} tgt={tgt_tok.get_vocab_size()} batches/epoch={len(batches)} "
          f"mean sents/batch={len(train) / len(batches):.1f} "
          f"pad fraction={padding_fraction(train.src_len, train.tgt_len, batches):.3f}", flush=True)
    with tempfile.TemporaryDirectory() as out:
        figures = timed_steps(cfg, manifest, warmup, steps, out, world)
        load_model(model, f"{out}/model.safetensors")
    torch.set_num_threads(cfg.scaling.num_workers * cfg.scaling.threads)
    sources = load_from_disk(manifest.encoded)["test"]["src"]
    timed = np.concatenate(batches[warmup : warmup + steps])
    flops = gemm_flops_per_sentence(cfg.model, tgt_tok.get_vocab_size(), train.src_len[timed], train.tgt_len[timed])
    shape = {"vocab": tgt_tok.get_vocab_size(), "sents": len(timed) / steps / world,
             "tokens": (train.tgt_len[timed] + 1).sum() / steps / world,
             "train_flops_per_sent": 3 * sum(float(f.sum()) for f in flops.values()) / len(timed),
             "share": {k: float(f.sum()) for k, f in flops.items()}}
    return ({**figures, **shape},
            Translator(model, src_tok, tgt_tok, cfg.train.decoding()), sources)


def gemm_flops_per_sentence(m: ModelConfig, vocab: int, src_len: np.ndarray, tgt_len: np.ndarray
                            ) -> dict[str, np.ndarray]:
    """Matrix-multiply FLOPs of one forward pass per sentence (EOS/BOS included), by the GEMM that does them.
    Training is ~3x these (backward multiplies by each weight twice: for the inputs' and the weights' gradients)."""
    E, H, D, A = m.emb_size, m.enc_hidden, m.dec_hidden, m.att_hidden
    T = E if m.tied_softmax else D  # the readout's width
    S, N = src_len + 1, tgt_len + 1
    return {
        "encoder LSTM": S * 2 * 2 * 4 * H * (E + H),  # both directions
        "attention keys U h": S * 2 * 2 * H * A,
        "decoder W_y E y (all steps)": N * 2 * 4 * D * E,
        "decoder [W_hh; W] s_{i-1}": N * 2 * (4 * D + A) * D,
        "decoder W_c c_i": N * 2 * 4 * D * 2 * H,
        "attention v tanh(.) and c_i": N * S * (2 * A + 2 * 2 * H),
        "readout W_t": N * 2 * T * (D + 2 * H + E),
        "softmax W_o": N * 2 * vocab * T,
    }


def gemm_rate(m: ModelConfig, vocab: int, sents: int, tokens: int, threads: int, share: dict[str, float],
              reps: int = 30) -> float:
    """This machine's fp32 GEMM rate (FLOP/s per process of `threads` threads) at the model's own shapes: each
    forward GEMM timed at a worker's batch size, combined by its share of the model's FLOPs."""
    E, H, D, A = m.emb_size, m.enc_hidden, m.dec_hidden, m.att_hidden
    T = E if m.tied_softmax else D
    shapes = {  # (rows, inner, cols): per-step GEMMs have a batch of rows, after-the-loop ones all tokens
        "encoder LSTM": (sents, H, 4 * H),
        "attention keys U h": (tokens, 2 * H, A),
        "decoder W_y E y (all steps)": (tokens, E, 4 * D),
        "decoder [W_hh; W] s_{i-1}": (sents, D, 4 * D + A),
        "decoder W_c c_i": (sents, 2 * H, 4 * D),
        "readout W_t": (tokens, D + 2 * H + E, T),
        "softmax W_o": (tokens, T, vocab),
    }
    torch.set_num_threads(threads)
    seconds_per_flop = {}
    for name, (r, k, c) in shapes.items():
        a, b = torch.randn(r, k), torch.randn(k, c)
        for _ in range(3):
            a @ b
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        seconds_per_flop[name] = (time.perf_counter() - t0) / (reps * 2 * r * k * c)
    return sum(share[k] for k in shapes) / sum(share[k] * seconds_per_flop[k] for k in shapes)


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
    translator.translate(sources, translator.decoding.override(beam_size=beam))
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
    gemm = gemm_rate(cfg.model, ours["vocab"], round(ours["sents"]), round(ours["tokens"]), cfg.scaling.threads,
                     ours["share"])
    ceiling = gemm * cfg.scaling.num_workers
    achieved = ours["sents/s"] * ours["train_flops_per_sent"]
    total = sum(ours["share"].values())
    print("model FLOPs by GEMM (forward): " + ", ".join(f"{k} {v / total:.0%}" for k, v in ours["share"].items()))
    print(f"GEMM: fp32 at the model's shapes {gemm / 1e9:.1f} GFLOP/s per worker x {cfg.scaling.num_workers} "
          f"= {ceiling / 1e9:.1f} GFLOP/s; alignflow trains at {achieved / 1e9:.1f} GFLOP/s of model FLOPs "
          f"(3 x forward GEMMs), {achieved / ceiling:.0%} of it", flush=True)
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
