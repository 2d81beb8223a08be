"""What a configuration learns per sentence pair seen: validation BLEU and perplexity every --eval-every pairs,
and test BLEU at the end, from one process training exactly as the Ray workers do (the same global batches,
`train_step`, loss and LR schedule), without Ray or MLflow so that two settings can be compared side by side.

    .venv/bin/python benchmarks/learning_curve.py --config configs/multi30k.yaml --pairs 122000 \\
        --eval-every 14500 [--set key=value ...] [--threads 1]

Per pair seen the run is deterministic (seeded), so it does not need an idle machine: the figures carry
across machines and loads, unlike speed. OpenNMT-py's curve, for comparison, is in benchmarks/README.md.
With `train.lr_schedule: anneal` the LR falls to 0 over the last `train.lr_anneal` of --pairs.
"""

import argparse
import math
import time
from pathlib import Path

import torch
from datasets import load_from_disk
from tokenizers import Tokenizer

from data_prep.prepare import prepare
from data_prep.specials import EOS_ID
from flows.config import load_config
from training.averaging import EpochWindow
from training.batching import global_batches
from training.data import EncodedSplit, load_encoded
from training.loop import annealed_lr, train_step, validate
from training.metrics import score
from training.translator import Translator, build_model

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(REPO / "configs" / "multi30k.yaml"))
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--pairs", type=int, default=122_000, help="training sentence pairs to see")
    ap.add_argument("--eval-every", type=int, default=14_500, help="validate every this many pairs")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--test-beam", type=int, default=0, help="also score test with this beam (0: greedy only)")
    ap.add_argument("--average", type=int, default=1,
                    help="also score test with the mean weights of the last K validation points (1: off)")
    args = ap.parse_args()

    cfg = load_config(args.config, args.overrides)
    torch.set_num_threads(args.threads)
    manifest = prepare(cfg.data, cfg.tokenizer, Path(cfg.work_dir) / "prepared")
    splits = load_encoded(manifest.encoded)
    train, val = splits["train"], splits["validation"]
    src_tok, tgt_tok = Tokenizer.from_file(manifest.src_tokenizer), Tokenizer.from_file(manifest.tgt_tokenizer)
    texts = load_from_disk(manifest.encoded)
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model, src_tok, tgt_tok)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.train.lr, fused=True)
    torch.manual_seed(cfg.train.seed + 1)
    translator = Translator(model, src_tok, tgt_tok, cfg.train.decoding().override(beam_size=1))  # greedy
    print(f"params={model.num_params():,} tgt tokens/sentence={train.tgt_len.mean():.2f} "
          f"src tokens/sentence={train.src_len.mean():.2f}", flush=True)
    print("| pairs seen | updates | epoch | lr | train loss | val ppl | val BLEU | val BLEU -lc | minutes |")
    print("|---|---|---|---|---|---|---|---|---|", flush=True)
    window = EpochWindow(args.average if args.average > 1 else 0)
    pairs = steps = epoch = 0
    next_eval, t0, loss_sum, tokens = args.eval_every, time.perf_counter(), 0.0, 0
    while pairs < args.pairs:
        epoch += 1
        for batch in global_batches(train.src_len, train.tgt_len, cfg.train.batch_tokens, cfg.train.seed, epoch):
            if cfg.train.lr_schedule == "anneal":
                for group in optimizer.param_groups:
                    group["lr"] = annealed_lr(cfg.train.lr, pairs / args.pairs, cfg.train.lr_anneal)
            model.train()
            loss, n = train_step(model, optimizer, train, batch, 0, 1, torch.device("cpu"), cfg.train.clip_norm,
                                 cfg.train.label_smoothing)
            pairs, steps, loss_sum, tokens = pairs + len(batch), steps + 1, loss_sum + loss, tokens + n
            if pairs >= next_eval or pairs >= args.pairs:
                m = validate(model, translator, val, texts["validation"]["tgt"], 0, 1, torch.device("cpu"))
                print(f"| {pairs:,} | {steps} | {epoch} | {optimizer.param_groups[0]['lr']:.2e} | "
                      f"{loss_sum / tokens:.3f} | {m['val_ppl']:.2f} | {m['val_bleu']:.2f} | {m['val_bleu_lc']:.2f} | "
                      f"{(time.perf_counter() - t0) / 60:.1f} |", flush=True)
                next_eval, loss_sum, tokens = next_eval + args.eval_every, 0.0, 0
                window.push(pairs, model)
            if pairs >= args.pairs:
                break
    test_scores(translator, splits["test"], texts["test"]["tgt"], args.test_beam, f"after {pairs:,} pairs")
    if len(window.weights) > 1:
        points = sorted(window.weights)
        model.load_state_dict({k: torch.stack([window.weights[p][k] for p in points]).mean(0)
                               for k in window.weights[points[-1]]})
        label = f"with the mean weights at {', '.join(f'{p:,}' for p in points)} pairs"
        test_scores(translator, splits["test"], texts["test"]["tgt"], args.test_beam, label)
    if not math.isfinite(loss_sum):
        raise SystemExit("training diverged")


def test_scores(translator: Translator, test: EncodedSplit, refs: list[str], test_beam: int, label: str) -> None:
    """Test BLEU greedy (and with test_beam), printed one line each."""
    sources = [[*test.src(i).tolist(), EOS_ID] for i in range(len(test))]
    for beam in sorted({1, test_beam} - {0}):
        outs, _ = translator.translate_ids(sources, translator.decoding.override(beam_size=beam))
        s = score([translator.decode(o) for o in outs], refs)
        print(f"test {label}, beam {beam}: BLEU -lc {s['bleu_lc']:.2f} cased {s['bleu']:.2f} "
              f"chrF {s['chrf']:.2f}", flush=True)


if __name__ == "__main__":
    main()
