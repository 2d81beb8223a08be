"""Champion/challenger decisions on a real MLflow registry (sqlite): the alias moves only on a strictly
better score on the same test set, and both scores end up as version tags."""

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from mlflow import MlflowClient

from training.config import DecodingConfig
from training.evaluate import settings_tag
from training.registry import (
    CHAMPION,
    DECISION_TAG,
    DECODING_TAG,
    PENDING,
    SCORE_TAG,
    TEST_SET_TAG,
    EvalSet,
    current_champion,
    promote_if_better,
)

SAME = EvalSet(["3 mar 98", "12/25/2001"], ["1998-03-03", "2001-12-25"])
BEAM5 = DecodingConfig(beam_size=5)


@pytest.fixture
def client(tmp_path: Path) -> MlflowClient:
    c = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    c.create_registered_model("m")
    return c


def _version(client: MlflowClient, bleu: float, test_set: EvalSet = SAME) -> str:
    mv = client.create_model_version("m", "file:///nowhere", tags={
        "test_bleu": f"{bleu:.4f}", "test_set": test_set.fingerprint, "test_decoding": settings_tag(BEAM5)})
    return str(mv.version)


def test_first_version_becomes_champion(client: MlflowClient):
    v1 = _version(client, 20.0)
    decision = promote_if_better(client, "m", v1, 20.0, SAME, BEAM5)
    assert decision["promoted"] and str(current_champion(client, "m").version) == v1
    tags = client.get_model_version("m", v1).tags
    assert tags["champion_test_bleu"] == "none" and tags["decision"] == "promoted: first version"


def test_a_worse_or_equal_version_leaves_the_champion_and_a_better_one_takes_it(client: MlflowClient):
    v1 = _version(client, 20.0)
    promote_if_better(client, "m", v1, 20.0, SAME, BEAM5)
    for bleu in (11.5, 20.0):  # worse, then a tie: a tie is not better
        v = _version(client, bleu)
        decision = promote_if_better(client, "m", v, bleu, SAME, BEAM5)
        assert not decision["promoted"] and decision["champion_version"] == int(v1)
        assert str(client.get_model_version_by_alias("m", CHAMPION).version) == v1
        tags = client.get_model_version("m", v).tags
        assert tags["champion_test_bleu"] == "20.0000" and tags["decision"].startswith("kept champion:")
    v4 = _version(client, 27.25)
    decision = promote_if_better(client, "m", v4, 27.25, SAME, BEAM5)
    assert decision["promoted"] and str(client.get_model_version_by_alias("m", CHAMPION).version) == v4
    assert client.get_model_version("m", v4).tags["champion_test_bleu"] == "20.0000"


def test_test_set_fingerprint_depends_on_sources_and_references():
    assert SAME.fingerprint == EvalSet(list(SAME.sources), list(SAME.references)).fingerprint
    assert SAME.fingerprint != EvalSet(SAME.sources, ["1998-03-03", "2001-12-26"]).fingerprint
    assert SAME.fingerprint != EvalSet(SAME.sources[::-1], SAME.references[::-1]).fingerprint


def test_a_later_version_decides_only_after_an_earlier_pending_one(client: MlflowClient):
    """Two runs finishing together: version 3 (worse) must not compare itself with the champion that version 2
    (better) is about to replace; it waits for 2's decision, then compares with 2."""
    v1 = _version(client, 10.0)
    promote_if_better(client, "m", v1, 10.0, SAME, BEAM5)
    v2, v3 = (str(client.create_model_version("m", "file:///nowhere", tags={
        SCORE_TAG: f"{b:.4f}", TEST_SET_TAG: SAME.fingerprint, DECODING_TAG: settings_tag(BEAM5),
        DECISION_TAG: PENDING}).version) for b in (30.0, 20.0))
    with ThreadPoolExecutor(1) as pool:
        later = pool.submit(promote_if_better, client, "m", v3, 20.0, SAME, BEAM5, poll_s=0.1)
        time.sleep(1.0)
        assert not later.done() and client.get_model_version("m", v3).tags[DECISION_TAG] == PENDING
        assert promote_if_better(client, "m", v2, 30.0, SAME, BEAM5)["promoted"]
        decision = later.result(timeout=60)
    assert not decision["promoted"] and decision["champion_version"] == int(v2)
    assert str(current_champion(client, "m").version) == v2
    assert client.get_model_version_by_alias("m", "challenger").version == int(v3)  # the last to decide
    assert client.get_model_version("m", v3).tags[DECISION_TAG].startswith("kept champion: 20.00 <= 30.00")


def test_a_stale_pending_version_does_not_hold_the_others_back(client: MlflowClient):
    v1 = str(client.create_model_version("m", "file:///nowhere", tags={
        SCORE_TAG: "30.0000", TEST_SET_TAG: SAME.fingerprint, DECODING_TAG: settings_tag(BEAM5),
        DECISION_TAG: PENDING}).version)  # its run died
    v2 = _version(client, 20.0)
    assert promote_if_better(client, "m", v2, 20.0, SAME, BEAM5, stale_after_s=0.0)["promoted"]
    assert client.get_model_version("m", v1).tags[DECISION_TAG] == PENDING


def test_deciding_again_returns_the_recorded_decision_and_moves_nothing(client: MlflowClient):
    v1 = _version(client, 20.0)
    promote_if_better(client, "m", v1, 20.0, SAME, BEAM5)
    v2 = _version(client, 15.0)
    first = promote_if_better(client, "m", v2, 15.0, SAME, BEAM5)
    client.set_registered_model_alias("m", CHAMPION, v2)  # an operator's rollback, say
    assert promote_if_better(client, "m", v2, 15.0, SAME, BEAM5) == first
    assert str(current_champion(client, "m").version) == v2
