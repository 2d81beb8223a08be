"""The `sweep:` section: what it accepts, and the one error line for what it cannot run. No Ray here."""

import pytest

from data_prep.errors import ConfigError
from flows.config import flatten, load_config, trial_config
from flows.provenance import config_hash
from flows.sweep_config import data_variants, trials_at_once
from tests.conftest import REPO, run_cli

SPACE = ("sweep={space: {train.lr: {loguniform: [3e-4, 3e-3]}, model.dropout: {uniform: [0.0, 0.3]}, "
         "train.batch_tokens: {choice: [1024, 2048]}, train.epochs: {randint: [2, 4]}}, num_trials: 6}")


def test_a_space_over_any_config_key():
    cfg = load_config(None, [SPACE])
    assert cfg.sweep is not None and cfg.sweep.num_trials == 6
    assert [d.kind for d in cfg.sweep.space.values()] == ["loguniform", "uniform", "choice", "randint"]
    assert (cfg.sweep.metric, cfg.sweep.order, cfg.sweep.scheduler) == ("val_bleu", "max", "asha")
    assert load_config(None, ["sweep={space: {train.lr: {choice: [1]}}, metric: val_loss}"]).sweep.order == "min"


def test_a_trial_is_the_base_config_with_the_sampled_values_and_no_sweep():
    cfg = load_config(None, [SPACE, "train.seed=7"])
    trial = trial_config(cfg, {"train.lr": 1e-3, "model.dropout": 0.2})
    assert (trial.train.lr, trial.model.dropout, trial.train.seed, trial.sweep) == (1e-3, 0.2, 7, None)


def test_a_sweep_section_changes_no_run_param_or_hash():
    plain, swept = load_config(None), load_config(None, [SPACE])
    assert flatten(plain) == flatten(swept) and config_hash(plain) == config_hash(swept)


@pytest.mark.parametrize(("space", "message"), [
    ("{}", "sweep.space: empty"),
    ("{train.lrr: {choice: [0.1]}}", r"sweep.space.train.lrr: 0.1 is refused: train.lrr: unknown key"),
    ("{trian.lr: {choice: [0.1]}}", "sweep.space.trian.lr: .*unknown key"),
    ("{train.lr: {uniform: [0.01, 0.001]}}", "sweep.space.train.lr: uniform: low 0.01 must be below high 0.001"),
    ("{train.lr: {loguniform: [0, 0.1]}}", "sweep.space.train.lr: loguniform: bounds must be above 0"),
    ("{train.epochs: {randint: [3, 3]}}", "randint: low 3 must be below high 3"),
    ("{model.dropout: {uniform: [0.1, 1.5]}}", "sweep.space.model.dropout: 1.5 is refused"),
    ("{train.lr: {choice: []}}", "sweep.space.train.lr.choice"),
    ("{train.lr: {uniform: [0.1, 0.2], choice: [1]}}", "exactly one of choice, uniform"),
    ("{train.lr: {normal: [0, 1]}}", "sweep.space.train.lr.normal: unknown key"),
    ("{scaling.num_workers: {choice: [1, 2]}}", "sweep.space.scaling.num_workers: not searchable"),
    ("{tokenizer.vocab_size: {randint: [1000, 4000]}}", "data and tokenizer keys take `choice` only"),
])
def test_a_space_no_trial_could_run_is_one_error_naming_the_key(space, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [f"sweep={{space: {space}}}"])


def test_unknown_sweep_settings_are_refused():
    with pytest.raises(ConfigError, match="sweep.schedular: unknown key"):
        load_config(None, ["sweep={space: {train.lr: {choice: [1]}}, schedular: asha}"])
    with pytest.raises(ConfigError, match="sweep.reduction_factor: Input should be greater than 1"):
        load_config(None, ["sweep={space: {train.lr: {choice: [1]}}, reduction_factor: 1}"])


def test_every_corpus_the_space_asks_for_is_one_variant():
    cfg = load_config(None, ["sweep={space: {tokenizer.vocab_size: {choice: [4000, 8000]}, "
                             "tokenizer.joint: {choice: [true, false]}, train.lr: {uniform: [0.001, 0.002]}}}"])
    assert len(data_variants(cfg.sweep)) == 4
    assert data_variants(load_config(None, [SPACE]).sweep) == [{}]


def test_trials_at_once_follow_from_scaling_and_the_cluster():
    sweep = load_config(None, [SPACE]).sweep
    assert trials_at_once(sweep, {"CPU": 2.0}, {"CPU": 2.0}) == 1  # one 2-worker trial at a time
    assert trials_at_once(sweep, {"CPU": 1.0}, {"CPU": 2.0}) == 2  # or two 1-worker trials
    assert trials_at_once(sweep, {"CPU": 1.0}, {"CPU": 64.0}) == 6  # never more than the trials
    with pytest.raises(ValueError, match=r"one trial's workers ask for 4 CPU; the Ray cluster has 2 CPU"):
        trials_at_once(sweep, {"CPU": 4.0}, {"CPU": 2.0})
    with pytest.raises(ValueError, match="one trial's workers ask for 2 CPU, 1 GPU; .* 0 GPU"):
        trials_at_once(sweep, {"CPU": 2.0, "GPU": 1.0}, {"CPU": 8.0})
    crowded = sweep.model_copy(update={"max_concurrent_trials": 3})
    with pytest.raises(ValueError, match=r"sweep.max_concurrent_trials: 3 trials .* \(room for 2\)"):
        trials_at_once(crowded, {"CPU": 1.0}, {"CPU": 2.0})


@pytest.mark.parametrize("name", ["sweep-dates.yaml", "sweep-multi30k.yaml"])
def test_the_shipped_sweep_configs_load(name):
    path = REPO / "configs" / name
    if not path.exists():
        pytest.skip(f"{name} not written yet")
    assert load_config(path).sweep is not None


@pytest.mark.parametrize(("args", "line"), [
    (["--set", "sweep={space: {train.lr: {loguniform: [-1, 1]}}}"],
     "config: sweep.space.train.lr: loguniform: bounds must be above 0 (got {'loguniform': [-1, 1]})"),
    ([], "config: no sweep section to run (see configs/sweep-dates.yaml)"),
    (["--set", "sweep={space: {train.lr: {choice: [0.001]}}}", "--set", "scaling.num_workers=64"],
     "sweep: one trial's workers ask for 64 CPU; the Ray cluster has"),
])
def test_cli_sweep_refuses_what_it_cannot_run_in_one_line(args, line, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run_cli("sweep", *args, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"alignflow: error: {line}"), result.stderr
    assert not (tmp_path / "mlflow.db").exists()  # nothing started
