"""Draw the curves that `learning_curve.py` prints (validation BLEU and perplexity by sentence pairs seen) into
one PNG, beside OpenNMT-py's figures measured at the same model size (issue 12; benchmarks/README.md).

    .venv/bin/python benchmarks/plot_learning_curve.py LOG[=LABEL] ... --out benchmarks/learning-curve.png

A LOG is the console output of `learning_curve.py`; only its markdown table rows and `test after` lines are read.
"""

import argparse
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from training.heatmap import save_figure  # noqa: E402

# OpenNMT-py 3.5.1 on Multi30k de->en, 64-sentence batches (README of ../shared/benchmarks/peers/): validation
# perplexity per word after 1k-4k updates, and greedy test BLEU (-lc) after 122k and 256k pairs.
OPENNMT_VAL_PPL = {64_000: 6.56, 128_000: 4.96, 192_000: 4.84, 256_000: 4.78}
OPENNMT_TEST_BLEU = {121_600: 36.38, 256_000: 37.95}
ROW = re.compile(r"^\| ([\d,]+) \| \d+ \| \d+ \| [\d.e+-]+ \| [\d.]+ \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|")
TEST = re.compile(r"^test after ([\d,]+) pairs, beam (\d+): BLEU -lc ([\d.]+)")


def read_log(path: Path) -> tuple[list[tuple[int, float, float]], list[tuple[int, int, float]]]:
    """(pairs, val ppl, val BLEU -lc) rows and (pairs, beam, test BLEU -lc) results."""
    rows, tests = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        if m := ROW.match(line):
            rows.append((int(m[1].replace(",", "")), float(m[2]), float(m[4])))
        elif m := TEST.match(line):
            tests.append((int(m[1].replace(",", "")), int(m[2]), float(m[3])))
    return rows, tests


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("logs", nargs="+", metavar="LOG[=LABEL]")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "learning-curve.png")
    args = ap.parse_args()
    fig, (bleu_ax, ppl_ax) = plt.subplots(1, 2, figsize=(12, 4))
    for spec in args.logs:
        path, _, label = spec.partition("=")
        rows, tests = read_log(Path(path))
        label = label or Path(path).stem
        line, = bleu_ax.plot([r[0] for r in rows], [r[2] for r in rows], marker="o", label=f"{label}: val")
        for pairs, beam, bleu in tests:
            bleu_ax.scatter([pairs], [bleu], marker="s" if beam == 1 else "^", color=line.get_color(),
                            label=f"{label}: test, {'greedy' if beam == 1 else f'beam {beam}'}")
        ppl_ax.plot([r[0] for r in rows], [r[1] for r in rows], marker="o", label=f"{label} (per BPE token)")
    bleu_ax.scatter(list(OPENNMT_TEST_BLEU), list(OPENNMT_TEST_BLEU.values()), marker="*", s=120, color="black",
                    label="OpenNMT-py: test, greedy")
    ppl_ax.plot(list(OPENNMT_VAL_PPL), list(OPENNMT_VAL_PPL.values()), marker="*", color="black",
                label="OpenNMT-py (per word)")
    bleu_ax.set_title("BLEU -lc by sentence pairs seen", fontsize=10)
    ppl_ax.set_title("validation perplexity by sentence pairs seen", fontsize=10)
    ppl_ax.set_ylim(top=30)
    for ax in (bleu_ax, ppl_ax):
        ax.set_xlabel("training sentence pairs seen")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    print(save_figure(fig, args.out))


if __name__ == "__main__":
    main()
