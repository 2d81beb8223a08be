"""Data-parallel scaling: training throughput with 1 and 2 Ray Train workers (1 torch thread each), measured
in the same run on the same prepared corpus, and the scaling efficiency tok/s(2) / (2 * tok/s(1)).

    python benchmarks/scaling.py [--train 6000] [--epochs 2] [--batch-tokens 4096] [--workers 1 2]

Throughput is target tokens per second of the training phase of the last epoch (the first one warms up),
as the workers report it (`train_tokens_per_s`: all-reduced tokens / the epoch's wall time). The global batch
(`train.batch_tokens`) is the same for every worker count, so each run does the same optimisation and only
the wall time changes. Validation is kept tiny since it is not what is measured.
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

import ray
from mlflow import MlflowClient

from data_prep.config import DataConfig, TokenizerConfig
from data_prep.prepare import prepare
from training import trainer
from training.config import ModelConfig, ScalingSettings, TrainConfig
from training.data import load_encoded
from training.loop import LoopConfig


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", type=int, default=6000, help="training pairs of the dates corpus")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-tokens", type=int, default=4096)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = p.parse_args()

    with tempfile.TemporaryDirectory(prefix="alignflow-scaling-") as tmp:
        data_cfg = DataConfig.model_validate({"sizes": {"train": args.train, "validation": 50, "test": 10}})
        manifest = prepare(data_cfg, TokenizerConfig(), Path(tmp) / "prepared")
        splits = load_encoded(manifest["encoded"])
        refs = ["x"] * len(splits["validation"])  # BLEU is not measured here
        data = {"train": splits["train"], "validation": splits["validation"], "val_refs": refs}
        tracking = f"sqlite:///{tmp}/mlflow.db"
        client = MlflowClient(tracking)
        exp = client.create_experiment("scaling", artifact_location=Path(tmp, "artifacts").as_uri())

        ray.init(num_cpus=max(args.workers), include_dashboard=False, logging_level="ERROR")
        print(f"corpus: dates, {len(splits['train'])} training pairs, batch_tokens={args.batch_tokens} (global), "
              f"{args.epochs} epochs; load average before: {_load()} on {os.cpu_count()} cores")
        rates: dict[int, float] = {}
        for n in args.workers:
            run_id = client.create_run(exp, run_name=f"workers-{n}").info.run_id
            job = LoopConfig(model=ModelConfig(), train=TrainConfig(epochs=args.epochs, batch_tokens=args.batch_tokens,
                                                                    heatmap_examples=0, patience=args.epochs),
                             select_metric="val_bleu", src_tokenizer=Path(manifest["src_tokenizer"]).read_text(),
                             tgt_tokenizer=Path(manifest["tgt_tokenizer"]).read_text(), threads=1,
                             tracking_uri=tracking, run_id=run_id)
            scaling = ScalingSettings(num_workers=n, resources_per_worker={"CPU": 1}, max_failures=0)
            t0 = time.perf_counter()
            out = trainer.fit(job, data, scaling, name=f"workers-{n}", storage_path=Path(tmp) / "ray", keep=1)
            wall = time.perf_counter() - t0
            rates[n] = out["last_metrics"]["train_tokens_per_s"]
            print(f"workers={n} threads/worker=1: {rates[n]:,.0f} target tok/s (last epoch), "
                  f"fit wall {wall:.1f}s incl. startup and validation; load average: {_load()}")
        ray.shutdown()
    base = rates[args.workers[0]]
    for n in args.workers[1:]:
        speedup = rates[n] / base
        print(f"RESULT workers={n} vs {args.workers[0]}: speedup {speedup:.2f}x, "
              f"scaling efficiency {speedup * args.workers[0] / n:.0%}")


if __name__ == "__main__":
    main()
