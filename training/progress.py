"""The lines a person follows a training run by, the way OpenNMT-py and Joey NMT report it: one every
`train.log_every` steps and at the end of each epoch (loss, target tokens/s, learning rate, time spent and left),
one per validation (loss, perplexity, BLEU, exact match, best so far) and one saying why training stopped.

Rank 0 writes them into a Ray queue; the driver prints them (`Relay`), through the Prefect task's logger in a
pipeline run, so they reach the console and the flow run's logs, without the "(RayTrainWorker pid=...)" prefix
of a worker's own prints.
"""

import contextlib
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

import ray
from ray.util.queue import Empty, Queue


def duration(seconds: float) -> str:
    """12s, 4m05s, 1h02m."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def time_left(elapsed: float, step: int, total_steps: int, budget: float) -> float:
    """Seconds until the epochs run out at the pace so far, or the time budget does, whichever comes first."""
    by_epochs = elapsed / step * max(0, total_steps - step) if step else math.inf
    return max(0.0, min(by_epochs, budget - elapsed))


@dataclass
class Lines:
    """Rank 0's progress lines. `say` hands a line to the driver (or prints it, outside a Ray Train run)."""

    say: Callable[[str], None]
    epochs: int
    budget: float  # seconds; inf without train.max_minutes
    select_metric: str

    def started(self, world: int, device: str, pairs: int, start_epoch: int) -> None:
        budget = f", at most {duration(self.budget)}" if self.budget < math.inf else ""
        resumed = f", resuming at epoch {start_epoch}" if start_epoch > 1 else ""
        self.say(f"training on {world} worker{'s' * (world > 1)} ({device}): {pairs:,} pairs, {self.epochs} "
                 f"epochs{budget}{resumed}")

    def steps(self, epoch: int, step: int, in_epoch: int, epoch_steps: int, loss: float, tokens: float,
              seconds: float, lr: float, elapsed: float) -> None:
        """`loss` and `tokens`: summed over the steps since the last line, across workers; `seconds`: their time."""
        left = time_left(elapsed, step, self.epochs * epoch_steps, self.budget)
        self.say(f"epoch {epoch}/{self.epochs} | step {step} ({in_epoch}/{epoch_steps}) | loss "
                 f"{loss / max(tokens, 1.0):.4f} | {tokens / max(seconds, 1e-9):,.0f} tgt tok/s | lr {lr:.2e} | "
                 f"{duration(elapsed)} elapsed, ~{duration(left)} left")

    def validated(self, epoch: int, metrics: dict[str, float], best: float, best_epoch: int) -> None:
        selected = metrics[self.select_metric]
        verdict = ("best so far" if best_epoch == epoch
                   else f"best {self.select_metric} {best:.2f} at epoch {best_epoch}")
        self.say(f"epoch {epoch}/{self.epochs} validation | loss {metrics['val_loss']:.4f} | ppl "
                 f"{metrics['val_ppl']:.2f} | BLEU {metrics['val_bleu']:.2f} | exact match "
                 f"{metrics['val_exact_match']:.1f}% | {self.select_metric} {selected:.2f}, {verdict}")

    def stopped(self, epoch: int, reason: str, elapsed: float, best: float, best_epoch: int) -> None:
        self.say(f"training stopped after epoch {epoch} ({reason}) in {duration(elapsed)}; best "
                 f"{self.select_metric} {best:.2f} at epoch {best_epoch}")


class Relay:
    """Driver side: a Ray queue for rank 0's lines and a thread that passes each to `say` while training runs;
    on exit, the lines still queued."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.queue = Queue(actor_options={"num_cpus": 0})  # no CPU: the workers may reserve every core
        self._say, self._done = say, threading.Event()
        self._thread = threading.Thread(target=self._run, name="alignflow-progress", daemon=True)

    def _run(self) -> None:
        while not self._done.is_set():
            try:
                self._say(self.queue.get(timeout=0.5))
            except Empty:
                continue
            except ray.exceptions.RayError:  # the queue's actor is gone (Tune stopped this sweep trial): no lines
                return

    def __enter__(self) -> Queue:
        self._thread.start()
        return self.queue

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._done.set()
        self._thread.join()
        with contextlib.suppress(ray.exceptions.RayError):  # a cluster going down takes the queue with it
            for line in self.queue.get_nowait_batch(self.queue.qsize()):
                self._say(line)
            self.queue.shutdown()
