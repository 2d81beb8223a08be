"""Corpus-level scores on detokenized text with sacrebleu (signatures are logged beside the scores)."""

from sacrebleu.metrics import BLEU, CHRF


def score(hyps: list[str], refs: list[str]) -> dict[str, float]:
    """Cased BLEU, case-insensitive BLEU (`sacrebleu -lc`, how Joey NMT and OpenNMT-py report Multi30k), chrF."""
    bleu, bleu_lc, chrf = BLEU(), BLEU(lowercase=True), CHRF()
    return {
        "bleu": bleu.corpus_score(hyps, [refs]).score,
        "bleu_lc": bleu_lc.corpus_score(hyps, [refs]).score,
        "chrf": chrf.corpus_score(hyps, [refs]).score,
        "exact_match": 100.0 * sum(h == r for h, r in zip(hyps, refs, strict=True)) / max(1, len(refs)),
    }


def signatures() -> dict[str, str]:
    """sacrebleu signatures of the metrics `score` computes (sacrebleu needs one evaluation to know nrefs)."""
    out = {}
    for name, metric in (("bleu", BLEU()), ("bleu_lc", BLEU(lowercase=True)), ("chrf", CHRF())):
        metric.corpus_score(["a"], [["a"]])
        out[f"{name}_signature"] = str(metric.get_signature())
    return out
