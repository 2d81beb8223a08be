import datetime as dt
import random

from data_prep.config import SplitSizes
from data_prep.dates import FIRST, ISO_STYLE, LAST, NUM_STYLES, dates_corpus, render


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
    assert {"1998-03-03", "19980303", "1998-3-3", "Mar 3, 1998", "03-03-1998", "3.3.98", "3rd March 1998",
            "3/3/98", "Tuesday, 3 March 1998"} <= forms
    assert len(forms) == NUM_STYLES


def test_a_date_already_in_iso_8601_maps_to_itself():
    d = dt.date(1973, 4, 26)
    assert render(d, ISO_STYLE) == "1973-04-26"
    corpus = dates_corpus(SplitSizes(train=2000, validation=1, test=1), seed=0)
    identity = [p for p in corpus["train"] if p["src"] == p["tgt"]]
    assert len(identity) > 2000 / NUM_STYLES / 2  # sampled like every other form


def test_no_string_has_two_readings():
    """Across all forms, a source string always names the same date: every day of the range's ends, of a leap
    year and of years either side of the two-digit pivot (day/month swaps and two-digit years collide first)."""
    reading: dict[str, dt.date] = {}
    for year in (FIRST.year, 1973, 1999, 2000, 2001, LAST.year):
        for d in (dt.date(year, 1, 1) + dt.timedelta(days=k) for k in range(366 if year % 4 == 0 else 365)):
            for s in range(NUM_STYLES):
                assert reading.setdefault(render(d, s), d) == d, (render(d, s), d, reading[render(d, s)])


def test_every_form_keeps_enough_information_to_recover_the_date():
    rng = random.Random(0)
    for _ in range(300):
        d = dt.date(1950, 1, 1) + dt.timedelta(days=rng.randrange(36500))
        for s in range(NUM_STYLES):
            text = render(d, s)
            assert str(d.day) in text or text.count(str(d.day)) or "the" in text
