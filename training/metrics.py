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
    return {"bleu_signature": str(BLEU().get_signature()), "chrf_signature": str(CHRF().get_signature())}
