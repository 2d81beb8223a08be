"""Attention heatmaps: one PNG per sentence, target tokens down, source tokens across."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # workers and CI have no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_attention(src_tokens: list[str], tgt_tokens: list[str], a: np.ndarray, path: Path, title: str) -> Path:
    """a: (len(tgt_tokens), len(src_tokens)) attention weights a_ij."""
    fig, ax = plt.subplots(figsize=(max(4, 0.35 * len(src_tokens) + 2), max(3, 0.35 * len(tgt_tokens) + 1.5)))
    ax.imshow(a, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(src_tokens)), [repr(t)[1:-1] for t in src_tokens], rotation=90, fontsize=8)
    ax.set_yticks(range(len(tgt_tokens)), [repr(t)[1:-1] for t in tgt_tokens], fontsize=8)
    ax.set_xlabel("source h_j")
    ax.set_ylabel("output y_i")
    ax.set_title(title, fontsize=9)
    return save_figure(fig, path)


def save_figure(fig: plt.Figure, path: Path) -> Path:
    """PNG at a size MLflow's artifact viewer shows whole; closes the figure (workers draw many)."""
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
