"""The production path on real servers (tests/ops/conftest.py): `alignflow deploy` serves a scheduled
deployment on a Prefect server; its flow runs train on Ray and register in an MLflow server with basic auth,
both on PostgreSQL; the champion alias follows test BLEU; `mlflow models serve` answers for the champion; and
the MLflow UI, in headless chromium, compares two runs."""

import base64
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlflow import MlflowClient

from data_prep.prepare import prepare
from flows import provenance
from flows.config import load_config
from flows.provenance import config_hash
from tests.ops import browser, servers
from tests.ops.conftest import ARTIFACTS, Stack
from training.tracking import EXPERIMENT_KIND_TAG, MODEL_TRAINING, end_run, start_run

pytestmark = pytest.mark.integration

MODEL = "ops-dates"
DATA = {"data.sizes.train": 3000, "data.sizes.validation": 200, "data.sizes.test": 200}
TINY = {"model.emb_size": 32, "model.enc_hidden": 64, "model.dec_hidden": 128, "model.att_hidden": 64,
        "train.heatmap_examples": 1, "tracking.model_name": MODEL}
FIRST = {**DATA, **TINY, "train.epochs": 2}  # what the schedule runs
# A challenger that loses, and one on another test set, are tested on a sqlite store (tests/flows/test_evaluate.py,
# tests/training/test_registry.py): the gate's code is the same whatever the store; here, the one that wins.
BETTER = {**DATA, **TINY, "train.epochs": 5}


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def _config(tmp: Path, values: dict[str, Any]) -> dict[str, Any]:
    overrides = [f"{k}={v}" for k, v in {**values, "work_dir": str(tmp / "work")}.items()]
    return load_config(None, overrides).model_dump(mode="json")


@dataclass
class Runs:
    deployment: Any  # prefect DeploymentResponse
    first: Any  # the scheduled prefect FlowRun
    mlflow_runs: dict[str, Any]  # first / better -> mlflow Run
    artifacts: list[Any]  # Prefect artifacts of the scheduled run


def test_prefect_api_refuses_requests_without_the_auth_string(stack: Stack):
    url = f"{stack.prefect_api}/flows/filter"
    assert servers.http_status(url, data=b"{}") == 401
    user, _, password = stack.prefect_auth.partition(":")
    assert servers.http_status(url, data=b"{}", headers={**_basic(user, password),
                                                        "Content-Type": "application/json"}) == 200


def test_mlflow_auth_server_refuses_unauthenticated_requests(stack: Stack):
    url = f"{stack.auth_mlflow_url}/api/2.0/mlflow/experiments/search?max_results=1"
    assert servers.http_status(url) == 401
    assert servers.http_status(url, headers=_basic(stack.auth_user, "wrong-password")) == 401
    assert servers.http_status(url, headers=_basic(stack.auth_user, stack.auth_password)) == 200


@pytest.fixture(scope="module")
def mlflow_env(stack: Stack) -> dict[str, str]:
    """How every process reaches the auth-enabled MLflow server: credentials in the environment, never in
    the tracking URI or the config (so never in a logged param)."""
    return {"MLFLOW_TRACKING_URI": stack.auth_mlflow_url, "MLFLOW_TRACKING_USERNAME": stack.auth_user,
            "MLFLOW_TRACKING_PASSWORD": stack.auth_password}


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as mp:
        yield mp


@pytest.fixture(scope="module")
def runs(stack: Stack, mlflow_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory,
         monkeypatch_module: pytest.MonkeyPatch) -> Iterator[Runs]:
    """`alignflow deploy --interval 10` until its first scheduled run has finished, then a better run by hand
    (`alignflow run`), all against the same servers."""
    from prefect import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        DeploymentFilter,
        DeploymentFilterId,
    )
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    tmp = tmp_path_factory.mktemp("deploy")
    config_file = tmp / "nightly.yaml"
    config_file.write_text(yaml.safe_dump(_config(tmp, FIRST)))
    env = {**mlflow_env, **stack.prefect_env(), "PREFECT_HOME": str(tmp / "prefect-home"),
           "PREFECT_RUNNER_POLL_FREQUENCY": "2", "HF_DATASETS_OFFLINE": "1"}
    serve = servers.Server("alignflow-deploy", [sys.executable, "-m", "flows.cli", "deploy", "--name", "nightly",
                                                "--config", str(config_file), "--interval", "10"],
                           tmp / "deploy.log", env=env, cwd=tmp, stop_signal=signal.SIGINT)
    for key, value in mlflow_env.items():  # this process reads the registry too
        monkeypatch_module.setenv(key, value)
    monkeypatch_module.delenv("RAY_ADDRESS", raising=False)  # each flow run starts its own local Ray cluster
    client = MlflowClient(stack.auth_mlflow_url)
    experiment = lambda: client.get_experiment_by_name("alignflow").experiment_id  # noqa: E731
    serve.start()
    try:
        with temporary_settings(updates={PREFECT_API_URL: stack.prefect_api,
                                         PREFECT_API_AUTH_STRING: stack.prefect_auth}), \
                get_client(sync_client=True) as prefect:
            found: dict[str, Any] = {}

            def deployed() -> bool:
                try:
                    found["deployment"] = prefect.read_deployment_by_name("train-pipeline/nightly")
                    return True
                except Exception:  # not registered yet
                    return False

            serve.wait_until(deployed, timeout=300)
            deployment = found["deployment"]
            by_deployment = DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id]))

            def first_started() -> bool:
                found["runs"] = prefect.read_flow_runs(deployment_filter=by_deployment)
                started = [r for r in found["runs"] if r.state and not r.state.is_scheduled()]
                found["first"] = started[0] if started else None
                return bool(started)

            serve.wait_until(first_started, timeout=300)
            # One scheduled run is the test; the schedule has queued more. Pause it and drop them, so the
            # runner has nothing else to start.
            prefect.pause_deployment(deployment.id)
            for fr in prefect.read_flow_runs(deployment_filter=by_deployment):
                if fr.id != found["first"].id and fr.state and fr.state.is_scheduled():
                    prefect.delete_flow_run(fr.id)

            def first_finished() -> bool:
                found["first"] = prefect.read_flow_run(found["first"].id)
                return found["first"].state.is_final()

            serve.wait_until(first_finished, timeout=900)
            serve.stop()
            first = found["first"]
            assert first.state.is_completed(), f"scheduled run: {first.state}\n{serve.tail()}"
            [first_mlflow] = client.search_runs([experiment()], f"tags.prefect_flow_run_id = '{first.id}'")
            artifacts = prefect.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[first.id])))
        mlflow_runs = {"first": first_mlflow}
        ARTIFACTS.mkdir(exist_ok=True)  # a fresh clone has none yet
        overrides = [f"{k}={v}" for k, v in {**BETTER, "work_dir": str(tmp / "work")}.items()]
        done = subprocess.run([sys.executable, "-m", "flows.cli", "run", *[f"--set={o}" for o in overrides]],
                              env={**os.environ, **env}, cwd=tmp, capture_output=True, text=True, timeout=900)
        (ARTIFACTS / "ops-run-better.log").write_text(done.stdout + done.stderr)
        assert done.returncode == 0, done.stderr[-3000:]
        [mlflow_runs["better"]] = client.search_runs(
            [experiment()], f"tags.config_hash = '{config_hash(load_config(None, overrides))}'")
        yield Runs(deployment, first, mlflow_runs, artifacts)
    finally:
        serve.stop()
        ARTIFACTS.mkdir(exist_ok=True)
        if serve.log.exists():
            shutil.copy(serve.log, ARTIFACTS / "ops-deploy.log")


def _version(client: MlflowClient, run_id: str) -> Any:
    [mv] = client.search_model_versions(f"name='{MODEL}' and run_id='{run_id}'")
    return mv


def test_a_scheduled_deployment_run_trains_and_registers_in_the_mlflow_server(runs: Runs, stack: Stack):
    assert [s.schedule.interval for s in runs.deployment.schedules] == [timedelta(seconds=10)]
    assert runs.first.auto_scheduled  # made by the schedule, not by the test
    client = MlflowClient(stack.auth_mlflow_url)
    run = runs.mlflow_runs["first"]
    assert run.info.status == "FINISHED"
    assert run.data.params["train.epochs"] == "2" and run.data.tags["corpus"] == "dates"
    assert "epochs=2" in run.info.run_name and run.info.run_name.startswith("dates ")
    assert len(run.data.tags["config_hash"]) == 12 and run.data.tags["git_commit"] != ""
    assert run.data.tags["prefect_deployment"] == "train-pipeline/nightly"
    assert len(client.get_metric_history(run.info.run_id, "val_bleu")) == 2
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"learning_curves.png", "attention", "config.json", "test_translations.tsv"} <= names, names
    version = _version(client, run.info.run_id)
    assert str(version.version) == "1" and version.tags["decision"].startswith("promoted: first version")
    # credentials stay in the environment: not in params, tags or the Prefect deployment's parameters
    logged = json.dumps([run.data.params, run.data.tags, runs.deployment.parameters])
    assert stack.auth_password not in logged and stack.prefect_auth not in logged
    # the Prefect run links to its MLflow run
    links = [a for a in runs.artifacts if a.key == "mlflow-run"]
    assert links and f"/runs/{run.info.run_id}" in links[0].data


def test_the_champion_moves_to_a_better_version(runs: Runs, stack: Stack):
    client = MlflowClient(stack.auth_mlflow_url)
    first, better = (_version(client, runs.mlflow_runs[k].info.run_id) for k in ("first", "better"))
    # the better run beat the champion it met, the first version, on the first's own test set
    assert better.tags["test_set"] == first.tags["test_set"]
    assert better.tags["champion_test_bleu"] == first.tags["test_bleu"]
    assert float(better.tags["test_bleu"]) > float(first.tags["test_bleu"])
    assert better.tags["decision"].startswith("promoted:")
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == str(better.version)
    assert str(client.get_model_version_by_alias(MODEL, "challenger").version) == str(better.version)


def test_mlflow_models_serve_answers_with_the_champions_translations(runs: Runs, stack: Stack,
                                                                      mlflow_env: dict[str, str], tmp_path: Path):
    import mlflow

    port = servers.free_port()
    serving = servers.Server("models-serve", [
        sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{MODEL}@champion",
        "--env-manager", "local", "--host", servers.HOST, "--port", str(port), "--workers", "1"],
        tmp_path / "serve.log", cwd=tmp_path,
        # the scoring server is `uvicorn` from this interpreter's environment, found on PATH
        env={**mlflow_env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"})
    texts = ["3 mar 98", "the 3rd of March 1998", "12/25/2001", "Monday 7 January 2019"]
    try:
        serving.start().wait_until(lambda: servers.http_status(f"http://{servers.HOST}:{port}/ping") == 200,
                                   timeout=240)
        req = urllib.request.Request(f"http://{servers.HOST}:{port}/invocations",
                                     data=json.dumps({"inputs": texts}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            predictions = json.loads(r.read())["predictions"]
    finally:
        serving.stop()
    mlflow.set_tracking_uri(stack.auth_mlflow_url)
    expected = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion").predict(texts)
    assert predictions == list(expected)
    assert all(re.fullmatch(r"\d{4}-\d{2}-\d{2}", p) for p in predictions), predictions
    print("served champion:", dict(zip(texts, predictions, strict=True)))


# Parameters: only those that differ (the reason one run is better); then scroll to the run details.
ARRANGE_COMPARISON = """(() => {
  const leaves = (t) => [...document.querySelectorAll("*")].filter(
    (e) => e.children.length === 0 && e.textContent.trim() === t);
  // "Show diff only" for parameters and for metrics: the metrics table renders only the rows in its view, and
  // the lineage counts (equal for both runs) sort before the scores being compared
  document.querySelectorAll('[role="switch"]').forEach((s) => {
    if (s.getAttribute("aria-checked") !== "true") s.click();
  });
  const details = leaves("Run details")[0];
  if (details) details.scrollIntoView();
})()"""


def test_the_mlflow_ui_compares_two_runs_in_a_real_browser(runs: Runs, stack: Stack):
    if browser.chromium_path() is None:
        pytest.skip("chromium not installed (Debian: apt-get install -y chromium)")
    first, better = runs.mlflow_runs["first"], runs.mlflow_runs["better"]
    ids = urllib.parse.quote(json.dumps([first.info.run_id, better.info.run_id]))
    exps = urllib.parse.quote(json.dumps([first.info.experiment_id]))
    shot = ARTIFACTS / "mlflow-compare-runs.png"
    shot.unlink(missing_ok=True)
    text = browser.screenshot(f"{stack.auth_mlflow_url}/#/compare-runs?runs={ids}&experiments={exps}", shot,
                              _basic(stack.auth_user, stack.auth_password),
                              wait_for=[first.info.run_id, better.info.run_id, "train.epochs"],
                              script=ARRANGE_COMPARISON, size=(1600, 2200))
    # both runs side by side, with the metrics and the parameters that explain the difference
    for expected in (first.info.run_id, better.info.run_id, "test_bleu", "val_bleu", "train_loss", "train.epochs"):
        assert expected in text, expected
    assert shot.stat().st_size > 30_000  # a rendered page, not a blank one


def test_the_mlflow_ui_lists_alignflow_runs_in_its_model_training_view_with_their_source(
        stack: Stack, mlflow_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """An experiment and run as alignflow creates them (no training: the UI shows what start_run records), on the
    page alignflow's links open: MLflow 3.17's model-training view (Runs, Models), not its GenAI view (Traces,
    Judges, Prompts), with the Source column naming what started the run (here pytest; `alignflow run` from the
    CLI)."""
    if browser.chromium_path() is None:
        pytest.skip("chromium not installed (Debian: apt-get install -y chromium)")
    for key, value in mlflow_env.items():
        monkeypatch.setenv(key, value)
    cfg = load_config(None, [*(f"{k}={v}" for k, v in DATA.items()), "tracking.experiment=alignflow-ui",
                             f"work_dir={tmp_path}"])
    manifest = prepare(cfg.data, cfg.tokenizer, tmp_path / "prepared")
    run_id = start_run(stack.auth_mlflow_url, provenance.run_spec(cfg, manifest.fingerprint), manifest).run_id
    end_run(stack.auth_mlflow_url, run_id)
    client = MlflowClient(stack.auth_mlflow_url)
    run = client.get_run(run_id)
    assert client.get_experiment(run.info.experiment_id).tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING
    source = run.data.tags["mlflow.source.name"]
    assert source == provenance.entry_point() == "pytest"
    shot = ARTIFACTS / "mlflow-experiment-runs.png"
    shot.unlink(missing_ok=True)
    page = f"{stack.auth_mlflow_url}/#/experiments/{run.info.experiment_id}{provenance.MODEL_TRAINING_VIEW}"
    text = browser.screenshot(page, shot, _basic(stack.auth_user, stack.auth_password),
                              wait_for=["Source", run.info.run_name, source], size=(1600, 700))
    assert "Model registry" in text and "Judges" not in text and "Prompts" not in text  # the view
    assert shot.stat().st_size > 30_000


def test_a_failed_run_leaves_the_champion_untouched(runs: Runs, stack: Stack, mlflow_env: dict[str, str],
                                                    tmp_path: Path):
    client = MlflowClient(stack.auth_mlflow_url)
    before = client.get_model_version_by_alias(MODEL, "champion")
    failed = subprocess.run([sys.executable, "-m", "flows.cli", "run", "--set", "data.source=no-such-corpus",
                             "--set", f"tracking.model_name={MODEL}", "--set", f"work_dir={tmp_path}"],
                            env={**os.environ, **mlflow_env, **stack.prefect_env()}, cwd=tmp_path,
                            capture_output=True, text=True, timeout=600)
    assert failed.returncode == 2, failed.stderr[-2000:]
    after = client.get_model_version_by_alias(MODEL, "champion")
    assert str(after.version) == str(before.version)
    assert len(client.search_model_versions(f"name='{MODEL}'")) == 2  # first, better: nothing new
