"""The embedded default corpus: human-written dates -> ISO 8601, generated deterministically from a seed.

Conventions are fixed so every source string has exactly one reading: slashes are US month/day/year unless
the year comes first (year/month/day), dots and dashes with numbers are day.month.year unless the year comes
first (ISO order), and two-digit years pivot at 50 (49 -> 2049, 50 -> 1950). A date already in ISO 8601
(`1973-04-26`, or the basic form `19730426`) is one of the inputs: a normalizer passes a normalized date through.
"""

import datetime as dt
import random

from datasets import Dataset, DatasetDict

from data_prep.config import SplitSizes

MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
ORDINAL_WORDS = ["first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth",
                 "tenth", "eleventh", "twelfth", "thirteenth", "fourteenth", "fifteenth", "sixteenth",
                 "seventeenth", "eighteenth", "nineteenth", "twentieth", "twenty-first", "twenty-second",
                 "twenty-third", "twenty-fourth", "twenty-fifth", "twenty-sixth", "twenty-seventh",
                 "twenty-eighth", "twenty-ninth", "thirtieth", "thirty-first"]
FIRST, LAST = dt.date(1950, 1, 1), dt.date(2049, 12, 31)


def ordinal(n: int) -> str:
    suffix = "th" if 11 <= n % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def render(d: dt.date, style: int) -> str:
    """One human-written form of `d`; `style` picks among the forms below."""
    month, mon, day = MONTHS[d.month - 1], MONTHS[d.month - 1][:3], DAYS[d.weekday()]
    yy = f"{d.year % 100:02d}"
    forms = [
        f"the {ordinal(d.day)} of {month} {d.year}",
        f"{d.month:02d}/{d.day:02d}/{yy}",
        f"{day}, {month} {d.day}, {d.year}",
        f"{d.day} {mon.lower()} {yy}",
        f"{month} {ordinal(d.day)}, {d.year}",
        f"{d.day} {month} {d.year}",
        f"{d.day:02d}.{d.month:02d}.{d.year}",
        f"{mon} {d.day} {d.year}",
        f"{d.day}-{mon.lower()}-{d.year}",
        f"{month.upper()} {d.day}, {d.year}",
        f"{day[:3]} {d.day} {mon} {d.year}",
        f"the {ORDINAL_WORDS[d.day - 1]} of {month.lower()}, {d.year}",
        f"{d.month}/{d.day}/{d.year}",
        f"{d.year}/{d.month:02d}/{d.day:02d}",
        f"{day.lower()} the {ordinal(d.day)} of {mon.lower()} {yy}",
        f"{month} {d.day} '{yy}",
        # ISO 8601 itself (maps to itself), its basic form, and other forms people type
        d.isoformat(),
        f"{d.year}{d.month:02d}{d.day:02d}",
        f"{d.year}-{d.month}-{d.day}",
        f"{mon} {d.day}, {d.year}",
        f"{d.day:02d}-{d.month:02d}-{d.year}",
        f"{d.day}.{d.month}.{yy}",
        f"{ordinal(d.day)} {month} {d.year}",
        f"{month.lower()} {d.day} {d.year}",
        f"{day}, {d.day} {month} {d.year}",
        f"{d.month}/{d.day}/{yy}",
        f"{d.day} {mon} {d.year}",
    ]
    return forms[style % len(forms)]


NUM_STYLES = 27
ISO_STYLE = 16  # render(d, ISO_STYLE) == d.isoformat()
# Part of the corpus fingerprint: bump when the forms or their sampling change, so no cache keeps an old corpus.
VERSION = 2


def generate_pairs(n: int, rng: random.Random) -> list[dict[str, str]]:
    span = (LAST - FIRST).days
    pairs = []
    for _ in range(n):
        d = FIRST + dt.timedelta(days=rng.randrange(span + 1))
        pairs.append({"src": render(d, rng.randrange(NUM_STYLES)), "tgt": d.isoformat()})
    return pairs


def dates_corpus(sizes: SplitSizes, seed: int) -> DatasetDict:
    """Train/validation/test splits of date pairs; the same seed always gives the same corpus."""
    rng = random.Random(seed)
    return DatasetDict({
        split: Dataset.from_list(generate_pairs(getattr(sizes, split), rng))
        for split in ("train", "validation", "test")
    })
