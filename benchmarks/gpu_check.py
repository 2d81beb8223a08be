"""Checks alignflow's GPU path and measures it: a few hundred training steps of a config through the real trainer
(`training/trainer.py`: Ray Train's TorchTrainer, `train_loop_per_worker`, DDP over NCCL), in fp32, bf16 and fp16
autocast, with torch.compile, on 1 GPU and on all of them; then target tokens/s per GPU, the scaling ratio and the
peak memory.

    .venv/bin/python benchmarks/gpu_check.py                      # configs/multi30k-gpu.yaml, on a CUDA host
    .venv/bin/python benchmarks/gpu_check.py --steps 300 --set train.batch_tokens=16384
    .venv/bin/python benchmarks/gpu_check.py --cpu-smoke          # this script's own wiring, on CPU (the tests)

Each variant trains a warm-up epoch (CUDA context, cuDNN autotuning, compilation), then timed epochs of at most
`--steps` global batches each (a subset of the training split, so an epoch is short), with validation on 256
sentences. Figures come from the timed epochs' metrics as rank 0 logs them to MLflow (a throwaway store in a temp
dir). A variant passes when its workers trained on the device asked for and its losses are finite; the exit status
is 1 when one did not.
"""

import argparse
import math
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import ray
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from any directory

from data_prep.prepare import Manifest, prepare  # noqa: E402
from flows.config import PipelineConfig, load_config  # noqa: E402
from training import trainer  # noqa: E402
from training.batching import global_batches  # noqa: E402
from training.data import EncodedSplit, TrainData, load_train_data  # noqa: E402
from training.loop import LoopConfig  # noqa: E402
from training.tracking import deliver, open_store  # noqa: E402

VALIDATION = 256  # sentences: validation runs every epoch and is not what is measured
# The smoke run: the date corpus and a tiny model, CPU workers over gloo, 1 and 2 of them, in fp32: the config refuses
# autocast on CPU workers (flows/config.py); train_step's autocast and GradScaler are tested on their own
# (tests/training/test_train_step.py).
SMOKE = ["data.source=dates", "data.sizes.train=600", "data.sizes.validation=64", "data.sizes.test=64",
         "model.emb_size=16", "model.enc_hidden=32", "model.dec_hidden=64", "model.att_hidden=32",
         "train.batch_tokens=1024", "scaling.use_gpu=false"]


@dataclass(frozen=True)
class Variant:
    workers: int
    precision: str
    compile: bool = False

    @property
    def name(self) -> str:
        return f"{self.workers} x {self.precision}{' compiled' if self.compile else ''}"


@dataclass(frozen=True)
class Figures:
    variant: Variant
    device: str  # what rank 0 trained on, from its first progress line
    steps: int  # timed steps
    steps_per_s: float
    tokens_per_s: float  # target tokens, all workers together
    peak_mb: float  # the largest worker's
    losses: list[float]  # training loss of every epoch
    problems: list[str]

    @property
    def per_worker(self) -> float:
        return self.tokens_per_s / self.variant.workers


def variants(gpus: int, precisions: list[str], compiled: bool, smoke: bool) -> list[Variant]:
    if smoke:
        return [Variant(1, "fp32"), Variant(2, "fp32")]
    out = [Variant(1, p) for p in precisions]
    if compiled:
        out.append(Variant(1, "bf16" if "bf16" in precisions else precisions[0], compile=True))
    if gpus > 1:
        out += [Variant(gpus, p) for p in precisions if p != "fp16"]
    return out


def subset(split: EncodedSplit, idx: np.ndarray) -> EncodedSplit:
    """The sentences `idx` of a split, as a split of their own."""
    def pick(ids: np.ndarray, off: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lens = off[idx + 1] - off[idx]
        flat = np.concatenate([ids[off[i] : off[i + 1]] for i in idx]) if len(idx) else ids[:0]
        return flat, np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)

    return EncodedSplit(*pick(split.src_ids, split.src_off), *pick(split.tgt_ids, split.tgt_off))


def shortened(data: TrainData, cfg: PipelineConfig, steps: int, max_workers: int) -> TrainData:
    """The sentences of the first `steps` global batches of epoch 1 (so an epoch is about `steps` steps), and the
    first VALIDATION validation sentences."""
    batches = global_batches(data.train.src_len, data.train.tgt_len, cfg.train.batch_tokens, cfg.train.seed, 1,
                             min_size=max_workers)
    idx = np.sort(np.concatenate(batches[:steps]))
    keep = np.arange(min(VALIDATION, len(data.validation)))
    return TrainData(subset(data.train, idx), subset(data.validation, keep), data.val_refs[: len(keep)])


def measure(v: Variant, base: list[str], config: str | None, manifest: Manifest, data: TrainData, store: Path,
            epochs: int) -> Figures:
    """Trains `v` through trainer.fit and reads the timed epochs' figures back from MLflow."""
    cfg = load_config(config, [*base, f"scaling.num_workers={v.workers}", f"train.precision={v.precision}",
                               f"train.compile={str(v.compile).lower()}", f"train.epochs={epochs}",
                               "train.max_minutes=null", f"train.patience={epochs}", "train.heatmap_examples=0",
                               "train.val_beam_size=1", "train.average_checkpoints=1"])
    uri = f"sqlite:///{store / 'mlflow.db'}"
    client = open_store(uri)
    exp = client.get_experiment_by_name("gpu-check") or client.get_experiment(client.create_experiment(
        "gpu-check", artifact_location=(store / "mlartifacts").as_uri()))
    run_id = client.create_run(exp.experiment_id, run_name=v.name).info.run_id
    job = LoopConfig(model=cfg.model, train=cfg.train, select_metric="val_bleu",
                     src_tokenizer=Path(manifest.src_tokenizer).read_text(),
                     tgt_tokenizer=Path(manifest.tgt_tokenizer).read_text(), threads=cfg.scaling.threads,
                     grad_compression=cfg.scaling.grad_compression, tracking_uri=uri, run_id=run_id,
                     max_source_tokens=cfg.data.max_len)
    lines: list[str] = []

    def say(line: str) -> None:
        lines.append(line)
        print(f"  {v.name}: {line}", flush=True)

    fitted = trainer.fit(job, data, cfg.scaling, name=f"gpu-check-{run_id[:12]}", storage_path=store / "ray", keep=1,
                         say=say)
    deliver(uri, run_id, fitted.latest, 60, say)  # what rank 0 had not sent yet, as the pipeline does
    client.set_terminated(run_id)
    history = {k: [m.value for m in sorted(client.get_metric_history(run_id, k), key=lambda m: m.step)]
               for k in ("train_tokens_per_s", "train_loss", "peak_memory_mb")}
    return figures(v, cfg, data.train, lines, history)


def figures(v: Variant, cfg: PipelineConfig, train: EncodedSplit, lines: list[str],
            history: dict[str, list[float]]) -> Figures:
    """Every epoch trains on each sentence once, so an epoch's seconds are its target tokens over its tokens/s."""
    tokens = float((train.tgt_len + 1).sum())  # + EOS, as the loop counts them
    timed = range(2, len(history["train_tokens_per_s"]) + 1)  # epoch 1 is the warm-up
    steps = sum(len(global_batches(train.src_len, train.tgt_len, cfg.train.batch_tokens, cfg.train.seed, e,
                                   min_size=v.workers)) for e in timed)
    seconds = sum(tokens / history["train_tokens_per_s"][e - 1] for e in timed)
    started = next((line for line in lines if line.startswith("training on ")), "")
    device = started.rpartition("(")[2].partition(")")[0] or "?"
    want = "cuda" if cfg.scaling.use_gpu else "cpu"
    problems = [f"trained on {device!r}, not {want}"] * (not device.startswith(want))
    problems += ["a non-finite loss"] * (not all(map(math.isfinite, history["train_loss"])))
    problems += ["no timed epoch"] * (not timed)
    return Figures(v, device, steps, steps / max(seconds, 1e-9), len(timed) * tokens / max(seconds, 1e-9),
                   max(history["peak_memory_mb"], default=0.0), history["train_loss"], problems)


def report(results: list[Figures], gpu: bool) -> None:
    unit = "GPU" if gpu else "worker"
    print(f"\n{'variant':<18} {'device':<8} {'steps':>5} {'steps/s':>8} {'tgt tok/s':>10} {f'per {unit}':>10} "
          f"{'peak MiB':>9} {'loss 1st->last':>15}  check")
    for f in results:
        print(f"{f.variant.name:<18} {f.device:<8} {f.steps:>5} {f.steps_per_s:>8.2f} {f.tokens_per_s:>10,.0f} "
              f"{f.per_worker:>10,.0f} {f.peak_mb:>9,.0f} {f.losses[0]:>7.3f}->{f.losses[-1]:<7.3f}  "
              f"{'; '.join(f.problems) or 'ok'}")
    single = {(f.variant.precision, f.variant.compile): f for f in results if f.variant.workers == 1}
    for f in results:
        one = single.get((f.variant.precision, f.variant.compile))
        if f.variant.workers > 1 and one:
            print(f"scaling {f.variant.precision}: {f.variant.workers} {unit}s give "
                  f"{f.tokens_per_s / one.tokens_per_s:.2f}x the tokens/s of 1 ({f.per_worker / one.per_worker:.0%} "
                  f"per {unit})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter,
                                 epilog="example: .venv/bin/python benchmarks/gpu_check.py --steps 200")
    ap.add_argument("--config", default=None, help="default: configs/multi30k-gpu.yaml (--cpu-smoke: the dates)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per variant (default 200; smoke: 6)")
    ap.add_argument("--precisions", default="fp32,bf16,fp16", help="autocast variants (default: %(default)s)")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant")
    ap.add_argument("--cpu-smoke", action="store_true", help="CPU workers, a tiny model, a few steps: the wiring")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (MLflow store, Ray checkpoints)")
    args = ap.parse_args(argv)
    gpus = torch.cuda.device_count()
    if not args.cpu_smoke and gpus == 0:
        print(f"gpu_check: torch {torch.__version__} sees no CUDA GPU (CUDA build: {torch.version.cuda}); run it on a "
              "GPU host, or --cpu-smoke to check the wiring", file=sys.stderr)
        return 2
    store = Path(tempfile.mkdtemp(prefix="alignflow-gpu-check-"))
    config = args.config or (None if args.cpu_smoke else str(REPO / "configs" / "multi30k-gpu.yaml"))
    base = [*(SMOKE + [f"work_dir={store / 'work'}"] if args.cpu_smoke else []), *args.overrides]
    cfg = load_config(config, base)
    steps = args.steps or (6 if args.cpu_smoke else 200)
    todo = variants(gpus, args.precisions.split(","), not args.no_compile, args.cpu_smoke)
    try:
        manifest = prepare(cfg.data, cfg.tokenizer, Path(cfg.work_dir) / "prepared")
        data = load_train_data(manifest.encoded)
        per_epoch = min(steps, len(global_batches(data.train.src_len, data.train.tgt_len, cfg.train.batch_tokens,
                                                  cfg.train.seed, 1, min_size=max(v.workers for v in todo))))
        short = shortened(data, cfg, per_epoch, max(v.workers for v in todo))
        epochs = 1 + math.ceil(steps / per_epoch)  # a warm-up epoch, then about `steps` timed steps
        print(f"gpu_check: {len(todo)} variants of {config or 'the default config'} on "
              f"{f'{gpus} GPU(s)' if gpus and not args.cpu_smoke else 'CPU'}: {epochs - 1} timed epoch(s) of "
              f"~{per_epoch} steps after a warm-up epoch; torch {torch.__version__}", flush=True)
        results = [measure(v, base, config, manifest, short, store, epochs) for v in todo]
    finally:
        if ray.is_initialized():
            ray.shutdown()
        if args.keep:
            print(f"kept {store}: mlflow.db (a run per variant), ray/ (checkpoints)")
        else:
            shutil.rmtree(store, ignore_errors=True)
    report(results, gpu=not args.cpu_smoke)
    failed = [f.variant.name for f in results if f.problems]
    print(f"gpu_check{' --cpu-smoke' if args.cpu_smoke else ''}: {len(results) - len(failed)}/{len(results)} variants "
          f"ok through Ray Train's TorchTrainer{'; failed: ' + ', '.join(failed) if failed else ''}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
