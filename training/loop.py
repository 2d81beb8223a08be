"""The per-worker training function Ray Train runs on every worker (see training/trainer.py).

Ray calls in this file: [1] get_context / get_device, [2] get_checkpoint to resume, [3] prepare_model (DDP),
[4] report (every rank, every epoch, with a checkpoint written by rank 0).

A checkpoint holds everything an exact resume needs: weights (safetensors), optimizer and LR scheduler, the
progress counters (epoch, global step, early-stopping state) and every rank's torch RNG state. Batches need
no saved state: they are a pure function of (seed, epoch). Only rank 0 logs to MLflow, at global steps
(optimizer updates, the same count for any number of workers), and it skips steps the run already has: an
epoch that is repeated after a failure or resume never duplicates a point of a curve. Tracking is never on the
critical path: each epoch is checkpointed and reported to Ray first, then sent through a buffer that a server
which is down only delays (what is unsent also travels in every checkpoint).
"""

import json
import logging
import math
import resource
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import ray
import ray.train
import ray.train.torch
import ray.train.v2._internal.execution.context as ray_train_context
import torch
import torch.distributed as dist
from pydantic import BaseModel, ConfigDict
from safetensors.torch import load_model, save_model
from tokenizers import Tokenizer
from torch import nn
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

from data_prep.specials import EOS_ID
from training.averaging import EpochWindow
from training.batching import global_batches, worker_slice
from training.config import ModelConfig, TrainConfig
from training.data import EncodedSplit, TrainData, collate
from training.heatmap import plot_attention
from training.metrics import score
from training.model import Seq2Seq
from training.progress import Lines
from training.tracking import MetricBuffer
from training.translator import DECODING, MODEL_CONFIG, WEIGHTS, Translator, build_model

TRAINER_STATE, PROGRESS = "trainer_state.pt", "progress.json"


class LoopConfig(BaseModel):
    """Everything a worker needs besides the data; re-validated on the worker."""

    model_config = ConfigDict(extra="forbid")
    model: ModelConfig
    train: TrainConfig
    max_source_tokens: int | None = None  # data.max_len: with train's settings, the checkpoints' decoding.json
    select_metric: str
    src_tokenizer: str  # tokenizer JSON, so workers need no shared disk
    tgt_tokenizer: str
    threads: int  # torch intra-op threads per worker
    grad_compression: Literal["none", "fp16"] = "none"
    tracking_uri: str
    run_id: str


def _unwrap(model: nn.Module) -> Seq2Seq:
    return getattr(model, "module", model)


def _allreduce(values: list[float], op: dist.ReduceOp.RedOpType = dist.ReduceOp.SUM) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64)
    if dist.is_initialized():
        dist.all_reduce(t, op=op)
    return t.tolist()


def _rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _gather(items: list[Any]) -> list[list[Any]]:
    if not dist.is_initialized():
        return [items]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, items)
    return out


@torch.no_grad()
def validate(model: Seq2Seq, translator: Translator, val: EncodedSplit, refs: list[str], rank: int,
             world: int, device: torch.device) -> dict[str, float]:
    """Validation loss and decoded scores; each worker takes an interleaved shard, results are combined."""
    model.eval()
    mine = list(range(rank, len(val), world))
    loss = tokens = 0.0
    for start in range(0, len(mine), 64):
        x, x_len, y_in, y_out = collate(val, mine[start : start + 64], device)
        batch_loss, n = model(x, x_len, y_in, y_out)
        loss, tokens = loss + float(batch_loss), tokens + float(n)
    loss, tokens = _allreduce([loss, tokens])
    outs, _ = translator.translate_ids([[*val.src(i).tolist(), EOS_ID] for i in mine])
    hyps = dict(zip(mine, (translator.decode(o) for o in outs), strict=True))
    for part in _gather(list(hyps.items())):
        hyps.update(part)
    scores = score([hyps[i] for i in range(len(val))], refs)
    val_loss = loss / max(1.0, tokens)
    return {"val_loss": val_loss, "val_ppl": math.exp(min(val_loss, 50.0)),
            **{f"val_{k}": v for k, v in scores.items()}}


def plot_examples(translator: Translator, val: EncodedSplit, k: int, epoch: int, out: Path) -> list[Path]:
    paths = []
    sources = [[*val.src(i).tolist(), EOS_ID] for i in range(min(k, len(val)))]
    outs, attns = translator.translate_ids(sources)
    for j, (src, ids, a) in enumerate(zip(sources, outs, attns, strict=True)):
        src_tokens = [translator.src_tok.id_to_token(t) for t in src]
        tgt_tokens = [translator.tgt_tok.id_to_token(t) for t in [*ids, EOS_ID]]
        paths.append(plot_attention(src_tokens, tgt_tokens, a, out / f"example_{j}.png",
                                    f"epoch {epoch}: {translator.decode(ids)!r}"))
    return paths


def peak_memory_mb(device: torch.device) -> float:
    """The most memory this worker has held so far: allocated by torch on its GPU, else its process's peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # KiB on Linux


def annealed_lr(lr: float, done: float, anneal: float) -> float:
    """The anneal schedule: lr until 1 - anneal of training is done, then linearly down to 0 at the end.
    A fixed budget is best spent this way (Li et al. 2020, "Budgeted training"): the low-LR end averages
    out the gradient noise that a constant LR keeps to the last step."""
    return lr * min(1.0, max(0.0, (1.0 - done) / anneal))


def compress_gradients(model: nn.Module, how: str) -> None:
    """Registers PyTorch's fp16 DDP comm hook: gradients are all-reduced in half precision, then cast back."""
    if how == "fp16" and isinstance(model, nn.parallel.DistributedDataParallel):
        model.register_comm_hook(None, default_hooks.fp16_compress_hook)


AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, train: EncodedSplit, batch: np.ndarray,
               rank: int, world: int, device: torch.device, clip_norm: float, label_smoothing: float = 0.0,
               precision: str = "fp32", scaler: torch.amp.GradScaler | None = None) -> tuple[float, int]:
    """One optimizer step on this worker's slice of a global batch -> (summed loss, target tokens) of the slice.
    With precision fp16, pass a GradScaler: it keeps small fp16 gradients from underflowing."""
    global_tokens = int(train.tgt_len[batch].sum()) + len(batch)  # + EOS per sentence
    x, x_len, y_in, y_out = collate(train, worker_slice(batch, rank, world).tolist(), device)
    with torch.autocast(device.type, dtype=AUTOCAST.get(precision), enabled=precision in AUTOCAST):
        loss, n = model(x, x_len, y_in, y_out, label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    # DDP averages gradients over workers; scaling by world/global_tokens makes the result the exact
    # per-token mean over the global batch, whatever the number of workers.
    objective = loss.float() * world / global_tokens
    if scaler is None:
        objective.backward()
        nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
        optimizer.step()
    else:
        scaler.scale(objective).backward()
        scaler.unscale_(optimizer)  # clip the true gradients
        nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
        scaler.step(optimizer)  # skipped when the gradients overflowed
        scaler.update()
    return loss.item(), int(n)


@dataclass
class Progress:
    """The counters an exact resume needs beside weights, optimizer and RNG; saved as progress.json."""

    epoch: int = 0
    step: int = 0  # optimizer updates: the same count for any number of workers
    best: float = -math.inf  # best selection metric so far (early stopping)
    best_epoch: int = 0
    bad_epochs: int = 0
    pairs: int = 0  # sentence pairs trained on, all workers together
    # Wall-clock time spent training so far, across resumes, validation and checkpoints included; checkpoints
    # written before the time budget existed lack it.
    seconds: float = 0.0

    @classmethod
    def load(cls, path: Path) -> "Progress":
        return cls(**json.loads(path.read_text()))

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self)))


@dataclass
class Worker:
    """One worker's place in the group and the objects every piece of its loop uses."""

    job: LoopConfig
    rank: int
    world: int
    device: torch.device
    model: nn.Module  # DDP-wrapped once prepare_model has run
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau | None  # None: anneal sets the LR from progress
    scaler: torch.amp.GradScaler | None  # fp16 only
    src_tok: Tokenizer
    tgt_tok: Tokenizer
    window: EpochWindow  # rank 0: the epochs before the latest, for train.average_checkpoints


def setup(job: LoopConfig) -> Worker:
    """The model, optimizer and LR schedule of this worker, with the same initial weights on every rank."""
    torch.set_num_threads(job.threads)  # the worker's CPU reservation: don't oversubscribe the node
    # Ray Train 2.60 names the logger of its report() by the module's file path, so the level trainer.py sets
    # for Ray Train's logs misses it, and every report's metrics and checkpoint would reach the console.
    ray_train_context.logger.setLevel(logging.WARNING)
    ctx = ray.train.get_context()  # [1]
    rank, device = ctx.get_world_rank(), ray.train.torch.get_device()
    torch.manual_seed(job.train.seed)  # same initial weights everywhere (DDP also broadcasts rank 0's)
    src_tok, tgt_tok = Tokenizer.from_str(job.src_tokenizer), Tokenizer.from_str(job.tgt_tokenizer)
    model = build_model(job.model, src_tok, tgt_tok)
    if job.train.compile:  # the per-token loop body; shapes vary by batch, hence dynamic
        model.decoder.step = torch.compile(model.decoder.step, dynamic=True)  # type: ignore[method-assign]
        model.decoder.defer_step_grads = False
    optimizer = torch.optim.Adam(model.parameters(), lr=job.train.lr, fused=True)  # one kernel: ~3x faster step
    scaler = torch.amp.GradScaler(device.type) if job.train.precision == "fp16" else None
    scheduler = None
    if job.train.lr_schedule == "plateau":
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=job.train.lr_decay, patience=job.train.lr_patience)
    torch.manual_seed(job.train.seed + 1 + rank)  # distinct dropout masks per rank
    window = EpochWindow(job.train.average_checkpoints - 1 if rank == 0 else 0)
    return Worker(job, rank, ctx.get_world_size(), device, model, optimizer, scheduler, scaler, src_tok, tgt_tok,
                  window)


def restore(w: Worker, checkpoint: ray.train.Checkpoint) -> Progress:
    """Weights, optimizer, LR scheduler, progress and (same worker count only) this rank's RNG state."""
    with checkpoint.as_directory() as d:
        load_model(w.model, Path(d) / WEIGHTS)
        state = torch.load(Path(d) / TRAINER_STATE, weights_only=True)
        w.optimizer.load_state_dict(state["optimizer"])
        if w.scheduler and state["scheduler"]:
            w.scheduler.load_state_dict(state["scheduler"])
        progress = Progress.load(Path(d) / PROGRESS)
        if len(state["rng"]) == w.world:  # else a different worker count: keep the fresh per-rank seeds
            _set_rng_state(state["rng"][w.rank], w.device)
        w.window = EpochWindow.load(w.window.size, Path(d))
    w.window.push(progress.epoch, w.model)
    return progress


def open_run_log(w: Worker, checkpoint: ray.train.Checkpoint | None,
                 lines: Lines | None) -> MetricBuffer | None:
    """Rank 0's buffer into the driver's MLflow run, holding what the checkpoint resumed from had not sent;
    None on the other ranks. Collective: every rank must call it."""
    node_ids = _gather([ray.get_runtime_context().get_node_id()])
    if w.rank != 0:
        return None
    log = MetricBuffer(w.job.tracking_uri, w.job.run_id, print if lines is None else lines.say)
    if checkpoint:
        with checkpoint.as_directory() as d:
            log.load(Path(d))
    log.tags["ray.worker_nodes"] = json.dumps([n for [n] in node_ids])
    log.flush()  # learns which steps the run has; a server that is down costs seconds, not the run
    return log


@dataclass(frozen=True)
class EpochTrained:
    """What one epoch's steps leave for its metrics."""

    epoch: int
    loss_sum: float  # this rank's summed loss
    tokens: float  # this rank's target tokens
    seconds: float  # on the slowest rank


class StepLog:
    """The figures of the steps since the last progress line. Collective: every rank calls `line` at the same
    steps; the summed loss and tokens of all ranks go into rank 0's line."""

    def __init__(self, w: Worker, lines: Lines | None) -> None:
        self.w, self.lines = w, lines
        self.t, self.loss, self.tokens = time.perf_counter(), 0.0, 0.0

    def add(self, loss: float, tokens: int) -> None:
        self.loss, self.tokens = self.loss + loss, self.tokens + tokens

    def line(self, epoch: int, progress: Progress, in_epoch: int, epoch_steps: int, elapsed: float) -> None:
        loss, tokens = _allreduce([self.loss, self.tokens])
        now = time.perf_counter()
        if self.lines:
            self.lines.steps(epoch, progress.step, in_epoch, epoch_steps, loss, tokens, now - self.t,
                             self.w.optimizer.param_groups[0]["lr"], elapsed)
        self.t, self.loss, self.tokens = now, 0.0, 0.0


def train_epoch(w: Worker, train: EncodedSplit, progress: Progress, epoch: int, budget: float,
                reserve: float, lines: Lines | None = None) -> EpochTrained:
    """The steps of one epoch, each after setting the LR (anneal schedule); cut short, at the same step on every
    rank, when the time budget runs out. `reserve`: the last epoch's validation + checkpoint time, kept free for
    this one's. A progress line every `train.log_every` steps and at the epoch's last step (`lines`: rank 0)."""
    cfg = w.job.train
    w.model.train()
    batches = global_batches(train.src_len, train.tgt_len, cfg.batch_tokens, cfg.seed, epoch, min_size=w.world)
    t0, loss_sum, tokens = time.perf_counter(), 0.0, 0.0
    log = StepLog(w, lines)
    spent = progress.seconds + reserve
    for i, batch in enumerate(batches, 1):
        if w.scheduler is None:
            done = max(progress.step / (cfg.epochs * len(batches)), spent / budget)
            for group in w.optimizer.param_groups:
                group["lr"] = annealed_lr(cfg.lr, done, cfg.lr_anneal)
        loss, n = train_step(w.model, w.optimizer, train, batch, w.rank, w.world, w.device, cfg.clip_norm,
                             cfg.label_smoothing, cfg.precision, w.scaler)
        progress.step, progress.pairs = progress.step + 1, progress.pairs + len(batch)
        loss_sum, tokens = loss_sum + loss, tokens + n
        log.add(loss, n)
        # Every rank must stop at the same step: take the slowest rank's clock.
        if budget < math.inf:
            spent = progress.seconds + reserve + _allreduce([time.perf_counter() - t0], dist.ReduceOp.MAX)[0]
        last = i == len(batches) or spent >= budget
        if last or progress.step % cfg.log_every == 0:
            log.line(epoch, progress, i, len(batches), progress.seconds + time.perf_counter() - t0)
        if last:
            break
    [elapsed] = _allreduce([time.perf_counter() - t0], dist.ReduceOp.MAX)  # the group is as slow as its slowest
    return EpochTrained(epoch, loss_sum, tokens, elapsed)


def validate_epoch(w: Worker, data: TrainData, progress: Progress, trained: EpochTrained,
                   start_epoch: int) -> tuple[dict[str, float], Translator]:
    """The epoch's metrics (training figures, validation loss and decoded scores); steps the plateau LR schedule
    and early stopping on the selection metric. Also returns the translator, for the heatmaps."""
    loss_sum, tokens = _allreduce([trained.loss_sum, trained.tokens])
    net = _unwrap(w.model)
    decoding = w.job.train.decoding(w.job.max_source_tokens).override(beam_size=w.job.train.val_beam_size)
    translator = Translator(net, w.src_tok, w.tgt_tok, decoding)
    metrics = {"epoch": trained.epoch, "start_epoch": start_epoch, "train_loss": loss_sum / max(1.0, tokens),
               "train_tokens_per_s": tokens / trained.seconds, "lr": w.optimizer.param_groups[0]["lr"],
               **validate(net, translator, data.validation, data.val_refs, w.rank, w.world, w.device)}
    selected = metrics[w.job.select_metric]
    if w.scheduler:
        w.scheduler.step(selected)
    if selected > progress.best:
        progress.best, progress.best_epoch, progress.bad_epochs = selected, trained.epoch, 0
    else:
        progress.bad_epochs += 1
    progress.epoch = trained.epoch
    return metrics, translator


def write_checkpoint(w: Worker, progress: Progress, rng: list[dict[str, torch.Tensor]], out: Path) -> None:
    """Everything an exact resume needs, into `out` (rank 0)."""
    save_model(_unwrap(w.model), str(out / WEIGHTS))  # stores a tied W_o once
    torch.save({"optimizer": w.optimizer.state_dict(), "scheduler": w.scheduler.state_dict() if w.scheduler else {},
                "rng": rng}, out / TRAINER_STATE)
    progress.save(out / PROGRESS)
    (out / MODEL_CONFIG).write_text(w.job.model.model_dump_json())
    (out / DECODING).write_text(w.job.train.decoding(w.job.max_source_tokens).model_dump_json())
    w.window.save(out)  # the epochs before this one...
    w.window.push(progress.epoch, _unwrap(w.model))  # ...and this one, for the next checkpoint


def save_and_report(w: Worker, progress: Progress, metrics: dict[str, float], translator: Translator,
                    val: EncodedSplit, log: MetricBuffer | None) -> None:
    """Rank 0 writes the checkpoint, every rank reports it [4], and only then does rank 0 send the epoch to
    MLflow. The epoch's metrics and heatmaps are in the checkpoint until sent: a crash after the report loses
    nothing, and a server that is down delays them, never training."""
    rng = _gather([_rng_state(w.device)])  # collective: every rank takes part
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = None
        if w.rank == 0:  # one writer; every rank still reports
            assert log is not None
            if not log.has(progress.step):  # an epoch repeated after a restart is not logged twice
                log.add(metrics, progress.step)
                epoch = progress.epoch
                log.add_artifacts(plot_examples(translator, val, w.job.train.heatmap_examples, epoch,
                                                log.dir / f"attention/epoch_{epoch:03d}"))
            write_checkpoint(w, progress, [r for [r] in rng], Path(tmp))
            log.save(Path(tmp))
            ckpt = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report(metrics, checkpoint=ckpt)
    if log is not None:
        log.flush()


def train_loop_per_worker(config: dict[str, Any]) -> None:
    job = LoopConfig.model_validate(config["job"])
    data: TrainData = ray.get(config["data"])
    w = setup(job)
    checkpoint = ray.train.get_checkpoint()  # [2] set when Ray restarts the group or the run is resumed
    progress = restore(w, checkpoint) if checkpoint else Progress()
    start_epoch = progress.epoch + 1
    w.model = ray.train.torch.prepare_model(w.model)  # [3] moves to the device and wraps in DDP
    compress_gradients(w.model, job.grad_compression)
    budget = job.train.max_minutes * 60 if job.train.max_minutes else math.inf
    lines = None
    if w.rank == 0:  # rank 0 speaks for the group: to the driver's queue, or printed outside a pipeline run
        queue = config.get("lines")
        lines = Lines(print if queue is None else queue.put, job.train.epochs, budget, job.select_metric)
        lines.started(w.world, str(w.device), len(data.train), start_epoch)
    log = open_run_log(w, checkpoint, lines)
    # The last epoch's validation + checkpoint time, reserved so that the budget also covers the next ones.
    reserve = 0.0
    # An epoch starts only if the budget has room for a step beyond the reserve (else it would be one step
    # followed by a repeat of the last validation).
    while (progress.epoch < job.train.epochs and progress.bad_epochs < job.train.patience
           and progress.seconds + reserve < budget):
        trained = train_epoch(w, data.train, progress, progress.epoch + 1, budget, reserve, lines)
        t_val = time.perf_counter()
        metrics, translator = validate_epoch(w, data, progress, trained, start_epoch)
        [validation_s] = _allreduce([time.perf_counter() - t_val], dist.ReduceOp.MAX)
        progress.seconds += trained.seconds + validation_s
        metrics["train_minutes"] = progress.seconds / 60  # for curves by wall-clock time
        metrics["pairs_seen"] = progress.pairs  # for curves by data seen, whatever the batch size
        [metrics["peak_memory_mb"]] = _allreduce([peak_memory_mb(w.device)], dist.ReduceOp.MAX)
        if lines:
            lines.validated(progress.epoch, metrics, progress.best, progress.best_epoch)
        t_ckpt = time.perf_counter()
        save_and_report(w, progress, metrics, translator, data.validation, log)
        checkpoint_s = time.perf_counter() - t_ckpt
        progress.seconds += checkpoint_s  # checkpointing counts against the budget too
        reserve = validation_s + checkpoint_s
    if lines:
        lines.stopped(progress.epoch, _stop_reason(job, progress, reserve, budget), progress.seconds,
                      progress.best, progress.best_epoch)
    if log is not None:  # what is still unsent is in the latest checkpoint: the driver delivers it
        log.close()


def _stop_reason(job: LoopConfig, progress: Progress, reserve: float, budget: float) -> str:
    if progress.bad_epochs >= job.train.patience:
        return f"no better {job.select_metric} for {progress.bad_epochs} epochs"
    if progress.epoch < job.train.epochs and progress.seconds + reserve >= budget:
        return f"time budget of {job.train.max_minutes:g} minutes spent"
    return "all epochs done"
