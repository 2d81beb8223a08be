"""What a person sees: the console of a real `alignflow run` (the tiny config), read line by line."""

import re

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.integration


@pytest.fixture
def console(tracking_uri, tiny_overrides) -> list[str]:
    result = run_cli("run", *(a for o in tiny_overrides for a in ("--set", o)), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return (result.stdout + result.stderr).splitlines()


def test_a_run_prints_nothing_that_repeats_and_no_warnings(console):
    assert not [line for line in console if "State API" in line]  # Ray Train's PlacementGroupCleaner
    assert not [line for line in console if "TrainingReport(" in line]  # Ray Train's report() dumps
    assert not [line for line in console if re.search("warning", line, re.IGNORECASE)], console
