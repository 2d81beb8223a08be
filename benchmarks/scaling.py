"""Data-parallel scaling at the Multi30k size: training throughput of 1 and 2 DDP workers (1 torch thread each),
and in the same run the ceiling this machine allows two processes: two independent single-thread processes
training the same per-worker slices with no communication (the two cores share caches and memory bandwidth, so
that ceiling is below 2x). Efficiency is printed against both.

    .venv/bin/python benchmarks/scaling.py [--config configs/multi30k.yaml] [--steps 30] [--set key=value ...]

Each layout times the same global batches with the `train_step` every Ray worker runs (see train_speed.py);
the global batch (`train.batch_tokens`) is the same for every worker count, so only the wall time changes.
"""

import argparse
import os
import tempfile
from pathlib import Path

from train_speed import timed_steps

from data_prep.prepare import prepare
from flows.config import load_config

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(REPO / "configs" / "multi30k.yaml"))
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--repeat", type=int, default=2, help="rounds of the three layouts, interleaved against drift")
    args = ap.parse_args()

    cfg = load_config(args.config, [*args.overrides, "scaling.threads_per_worker=1"])
    manifest = prepare(cfg.data, cfg.tokenizer, Path(cfg.work_dir) / "prepared")
    print(f"{cfg.data.source}: batch_tokens={cfg.train.batch_tokens} (global), {args.steps} timed steps per layout, "
          f"{args.repeat} rounds; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores", flush=True)
    layouts = {"1 worker": (1, True), "2 DDP workers": (2, True), "2 independent processes": (2, False)}
    rates: dict[str, list[float]] = {k: [] for k in layouts}
    for _ in range(args.repeat):
        for name, (world, communicate) in layouts.items():
            with tempfile.TemporaryDirectory() as out:
                r = timed_steps(cfg, manifest, args.warmup, args.steps, out, world, communicate)
            rates[name].append(r["sents/s"])
            print(f"{name}: {r['sents/s']:.1f} sents/s, {r['tgt_tok/s']:.0f} target tok/s", flush=True)
    best = {k: max(v) for k, v in rates.items()}
    one, two, ceiling = best["1 worker"], best["2 DDP workers"], best["2 independent processes"]
    print(f"\n| layout | sents/s (best of {args.repeat}) |\n|---|---|\n" +
          "\n".join(f"| {k} | {v:.1f} |" for k, v in best.items()))
    print(f"\nRESULT 2 workers vs 1: speedup {two / one:.2f}x, efficiency {two / (2 * one):.0%} of 2x; "
          f"ceiling (2 independent processes) {ceiling / one:.2f}x; efficiency {two / ceiling:.0%} of the ceiling")


if __name__ == "__main__":
    main()
