import pytest

from data_prep.errors import ConfigError
from flows.config import flatten, load_config
from tests.conftest import REPO, run_cli


def test_default_yaml_matches_the_model_defaults():
    # configs/default.yaml documents every key; it must not silently diverge from the code's defaults
    assert load_config(REPO / "configs" / "default.yaml") == load_config(None)


def test_overrides_are_typed_and_nested():
    cfg = load_config(None, ["train.epochs=3", "scaling.use_gpu=true", "data.sizes.train=10"])
    assert cfg.train.epochs == 3 and cfg.scaling.use_gpu is True and cfg.data.sizes.train == 10
    assert flatten(cfg)["train.epochs"] == 3


@pytest.mark.parametrize(("overrides", "message"), [
    (["train.epoch=3"], "train.epoch: unknown key"),
    (["train.epochs=-1"], "train.epochs: Input should be greater than 0"),
    (["nonsense"], "expected key=value"),
    (["model.dropout=1.5"], "model.dropout"),
    (["train.precision=bf16"], r"^config: train.precision: bf16 autocast is for GPU workers \(scaling.use_gpu: true\)"),
])
def test_bad_values_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_autocast_is_accepted_for_gpu_workers():
    assert load_config(None, ["train.precision=fp16", "scaling.use_gpu=true"]).train.precision == "fp16"


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: config file not found"):
        load_config(tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("train:\n  epochs: [1\n")
    with pytest.raises(ConfigError, match="broken.yaml: line 3 invalid YAML"):
        load_config(broken)


@pytest.mark.parametrize("args", [
    ["run", "--set", "train.epochz=2"],
    ["run", "--set", "train.epochs=-2"],
    ["run", "--config", "missing.yaml"],
])
def test_cli_prints_one_line_and_exits_nonzero(args, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run_cli(*args, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("alignflow: error:"), result.stderr
    assert "Traceback" not in result.stderr
