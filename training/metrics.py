"""Corpus-level scores on detokenized text with sacrebleu (signatures are logged beside the scores)."""

from sacrebleu.metrics import BLEU, CHRF


def score(hyps: list[str], refs: list[str]) -> dict[str, float]:
    bleu, chrf = BLEU(), CHRF()
    return {
        "bleu": bleu.corpus_score(hyps, [refs]).score,
        "chrf": chrf.corpus_score(hyps, [refs]).score,
        "exact_match": 100.0 * sum(h == r for h, r in zip(hyps, refs, strict=True)) / max(1, len(refs)),
    }


def signatures() -> dict[str, str]:
    """sacrebleu signatures of the metrics `score` computes (sacrebleu needs one evaluation to know nrefs)."""
    out = {}
    for name, metric in (("bleu", BLEU()), ("chrf", CHRF())):
        metric.corpus_score(["a"], [["a"]])
        out[f"{name}_signature"] = str(metric.get_signature())
    return out
