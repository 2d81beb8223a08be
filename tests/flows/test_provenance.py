"""Run names, hashes and tags that let people compare runs, and no credentials in anything logged."""

from flows.config import load_config
from flows.provenance import changes, config_hash, mlflow_run_url, params, run_name, run_tags
from training.tracking import redact_uri as redact


def test_run_name_says_what_differs_from_the_defaults():
    cfg = load_config(None, ["train.epochs=1", "model.dec_hidden=128", "work_dir=/tmp/x"])
    name = run_name(cfg)
    assert name.startswith("dates ") and "epochs=1" in name and "dec_hidden=128" in name
    assert "work_dir" not in name  # where a run happens is not what changed
    assert run_name(load_config(None, [])).startswith("dates defaults #")
    assert run_name(load_config(None, ["tracking.run_name=mine"])) == "mine"


def test_config_hash_ignores_where_a_run_happens_but_not_what_it_trains():
    base = load_config(None, ["train.epochs=2"])
    moved = load_config(None, ["train.epochs=2", "work_dir=/elsewhere", "tracking.uri=http://h:5000"])
    assert config_hash(base) == config_hash(moved)
    assert config_hash(base) != config_hash(load_config(None, ["train.epochs=3"]))
    assert changes(moved) == {"train.epochs": 2}


def test_credentials_in_uris_are_masked_in_params_and_links():
    assert redact("https://bob:hunter2@mlflow.example:5000/x") == "https://***@mlflow.example:5000/x"
    assert redact("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert redact(None) is None and redact("sqlite:///mlflow.db") == "sqlite:///mlflow.db"
    cfg = load_config(None, ["tracking.uri=https://bob:hunter2@mlflow.example"])
    assert "hunter2" not in str(params(cfg)) and params(cfg)["train.epochs"] == cfg.train.epochs
    url = mlflow_run_url("https://bob:hunter2@mlflow.example", "3", "abc")
    assert url == "https://mlflow.example/#/experiments/3/runs/abc?workflowType=machine_learning"
    assert mlflow_run_url("sqlite:///mlflow.db", "3", "abc") is None


def test_run_tags_name_corpus_config_and_commit():
    cfg = load_config(None, ["train.epochs=1"])
    tags = run_tags(cfg, "fp123")
    assert tags["corpus"] == "dates" and tags["config_hash"] == config_hash(cfg)
    assert tags["data_fingerprint"] == "fp123" and tags["changes"] == "train.epochs=1"
    assert len(tags["git_commit"].removesuffix("+dirty")) == 40  # the tests run from a git checkout
