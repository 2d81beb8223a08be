import datetime as dt
import random

from data_prep.config import SplitSizes
from data_prep.dates import NUM_STYLES, dates_corpus, render


def test_same_seed_same_corpus_and_splits_have_requested_sizes():
    sizes = SplitSizes(train=50, validation=7, test=5)
    a, b = dates_corpus(sizes, seed=3), dates_corpus(sizes, seed=3)
    assert {k: len(v) for k, v in a.items()} == {"train": 50, "validation": 7, "test": 5}
    assert a["train"]["src"] == b["train"]["src"]
    assert a["train"]["src"] != dates_corpus(sizes, seed=4)["train"]["src"]


def test_targets_are_iso_dates_and_known_forms_render():
    corpus = dates_corpus(SplitSizes(train=200, validation=1, test=1), seed=0)
    for tgt in corpus["train"]["tgt"]:
        assert dt.date.fromisoformat(tgt).isoformat() == tgt
    forms = {render(dt.date(1998, 3, 3), s) for s in range(NUM_STYLES)}
    assert {"the 3rd of March 1998", "03/03/98", "Tuesday, March 3, 1998", "3 mar 98"} <= forms
    assert len(forms) == NUM_STYLES


def test_every_form_keeps_enough_information_to_recover_the_date():
    rng = random.Random(0)
    for _ in range(300):
        d = dt.date(1950, 1, 1) + dt.timedelta(days=rng.randrange(36500))
        for s in range(NUM_STYLES):
            text = render(d, s)
            assert str(d.day) in text or text.count(str(d.day)) or "the" in text
