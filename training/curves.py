"""Learning curves: the per-epoch metrics of one run, drawn from its MLflow history into one PNG artifact."""

import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # workers and CI have no display
import matplotlib.pyplot as plt  # noqa: E402
from mlflow import MlflowClient  # noqa: E402

from training.heatmap import save_figure  # noqa: E402

# (panel title, metrics drawn in it): losses share a scale, decoded scores share another.
PANELS = (("loss (per target token)", ("train_loss", "val_loss")),
          ("validation scores", ("val_bleu", "val_chrf", "val_exact_match")))


def plot_learning_curves(history: dict[str, list[tuple[int, float]]], path: Path, title: str) -> Path:
    """history: metric -> [(step, value)], steps being optimizer steps as logged. A last panel draws validation
    BLEU against minutes of training, the axis a time-budgeted run is judged on."""
    fig, axes = plt.subplots(1, len(PANELS) + 1, figsize=(14, 3.6))
    minutes = dict(history.get("train_minutes", []))
    timed = sorted((minutes[s], v) for s, v in history.get("val_bleu", []) if s in minutes)
    if timed:
        axes[-1].plot([m for m, _ in timed], [v for _, v in timed], marker="o", label="val_bleu")
        axes[-1].legend(fontsize=8)
    axes[-1].set_title("validation BLEU by wall-clock time", fontsize=10)
    axes[-1].set_xlabel("minutes of training")
    axes[-1].grid(alpha=0.3)
    for ax, (label, keys) in zip(axes[:-1], PANELS, strict=True):
        for key in keys:
            points = sorted(history.get(key, []))
            if points:
                ax.plot([s for s, _ in points], [v for _, v in points], marker="o", label=key)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def log_learning_curves(tracking_uri: str, run_id: str, artifact: str = "learning_curves.png") -> None:
    client = MlflowClient(tracking_uri)
    keys = [k for _, ks in PANELS for k in ks] + ["train_minutes"]
    history = {k: [(m.step, m.value) for m in client.get_metric_history(run_id, k)] for k in keys}
    name = client.get_run(run_id).info.run_name or run_id
    with tempfile.TemporaryDirectory() as tmp:
        path = plot_learning_curves(history, Path(tmp) / artifact, name)
        client.log_artifact(run_id, str(path))
