"""Which MLflow run a pipeline run continues: only an unfinished run with the same run_name, and only when the
data and model settings still match its checkpoints."""

import pytest
from mlflow import MlflowClient
from mlflow.entities import Run

from data_prep.errors import ConfigError
from flows.config import PipelineConfig, flatten, load_config
from training.tracking import COMPLETE_TAG, RUN_NAME_TAG, resumable_run


def _resumable_run(client: MlflowClient, exp: str, config: PipelineConfig) -> Run | None:
    return resumable_run(client, exp, config.tracking.run_name, flatten(config))


@pytest.fixture
def store(tracking_uri: str) -> tuple[MlflowClient, str]:
    client = MlflowClient(tracking_uri)
    return client, client.create_experiment("alignflow")


def _run(client: MlflowClient, exp: str, overrides: list[str], status: str) -> str:
    cfg = load_config(None, overrides)
    run = client.create_run(exp, run_name=cfg.tracking.run_name, tags={RUN_NAME_TAG: cfg.tracking.run_name})
    for key, value in flatten(cfg).items():
        client.log_param(run.info.run_id, key, value)
    if status == "FINISHED":
        client.set_tag(run.info.run_id, COMPLETE_TAG, "true")
    client.set_terminated(run.info.run_id, status)
    return run.info.run_id


def test_an_unfinished_run_with_the_same_name_is_continued(store):
    client, exp = store
    killed = _run(client, exp, ["tracking.run_name=a"], "KILLED")
    _run(client, exp, ["tracking.run_name=b"], "FAILED")
    # MLflow says FINISHED after any `with mlflow.start_run()` block; without the completion tag it resumes
    crashed = _run(client, exp, ["tracking.run_name=c"], "RUNNING")
    client.set_terminated(crashed, "FINISHED")
    assert _resumable_run(client, exp, load_config(None, ["tracking.run_name=c"])).info.run_id == crashed
    run = _resumable_run(client, exp, load_config(None, ["tracking.run_name=a", "train.epochs=9"]))
    assert run is not None and run.info.run_id == killed  # more epochs may be asked of a resumed run


def test_a_finished_or_unnamed_run_starts_afresh(store):
    client, exp = store
    _run(client, exp, ["tracking.run_name=done"], "FINISHED")
    assert _resumable_run(client, exp, load_config(None, ["tracking.run_name=done"])) is None
    assert _resumable_run(client, exp, load_config(None, [])) is None


def test_resuming_with_another_model_shape_is_a_config_error(store):
    client, exp = store
    _run(client, exp, ["tracking.run_name=a"], "KILLED")
    with pytest.raises(ConfigError, match=r"model\.dec_hidden: 64 differs from '256'"):
        _resumable_run(client, exp, load_config(None, ["tracking.run_name=a", "model.dec_hidden=64"]))
