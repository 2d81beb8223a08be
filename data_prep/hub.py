"""Hugging Face datasets through the real `datasets.load_dataset`: a Hub id (optionally with config and
revision) or a local directory laid out like a Hub dataset repo. Both common translation layouts work:
flat language columns (`bentrevett/multi30k`: `en`, `de`) and a nested `translation` dict (wmt14, iwslt2017)."""

from datasets import DatasetDict, load_dataset

from data_prep.config import DataConfig
from data_prep.errors import DataError
from data_prep.localfiles import columns_for
from data_prep.validate import SPLITS, Locator, RawSplit

# Tried, in order, when the dataset has no split named as in data.splits: the same config then works for a
# local copy (val, test2016) and the Hub (validation, test). The split actually used is recorded in the lineage.
SPLIT_ALIASES = {"train": ("train",), "validation": ("validation", "valid", "val", "dev"), "test": ("test",)}


def load_hub(cfg: DataConfig) -> DatasetDict:
    """load_dataset(source, hub_config, revision); a failure becomes one line that says what to check."""
    try:
        loaded = load_dataset(cfg.source, cfg.hub_config, revision=cfg.revision)
    except ConnectionError as e:  # offline (HF_DATASETS_OFFLINE=1) or unreachable, and not in the local cache
        raise DataError(f"data.source {cfg.source!r}: not in the local datasets cache and the Hub is not reachable "
                        f"({str(e).splitlines()[0]})") from None
    except Exception as e:  # DatasetNotFoundError, unknown config (ValueError lists them), a bad revision, ...
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"data.source {cfg.source!r} (config {cfg.hub_config!r}, revision {cfg.revision!r}): "
                        f"{first}") from None
    if not isinstance(loaded, DatasetDict):
        raise DataError(f"data.source {cfg.source!r}: expected a dataset with splits, got {type(loaded).__name__}")
    return loaded


def _split_name(loaded: DatasetDict, split: str, wanted: str, cfg: DataConfig) -> str:
    if wanted in loaded:
        return wanted
    for alias in SPLIT_ALIASES[split]:
        if alias in loaded:
            return alias
    raise DataError(f"data.source {cfg.source!r}: no split {wanted!r} (data.splits.{split}); "
                    f"it has {sorted(loaded)}")


def hub_splits(loaded: DatasetDict, cfg: DataConfig, src_lang: str, tgt_lang: str) -> dict[str, RawSplit]:
    """Our three splits as raw text; each RawSplit.origin names the dataset split it came from."""
    out = {}
    for split in SPLITS:
        name = _split_name(loaded, split, getattr(cfg.splits, split), cfg)
        ds = loaded[name]
        if "translation" in ds.column_names:
            ds = ds.flatten()  # {"translation": {"de": ..}} -> column "translation.de"
        origin = f"{cfg.source} split {name!r}"
        scol, tcol = columns_for(ds.column_names, src_lang, tgt_lang, origin)
        out[split] = RawSplit(ds[scol][:], ds[tcol][:], _locator(origin, scol, tcol), origin)
    return out


def _locator(origin: str, scol: str, tcol: str) -> Locator:
    return lambda i, side: f"{origin} row {i + 1} column {scol if side == 'src' else tcol!r}"
