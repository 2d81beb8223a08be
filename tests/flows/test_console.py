"""What a person sees: the console of a real `alignflow run` (the tiny config), read line by line."""

import re

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.integration


def test_a_run_prints_progress_to_follow_and_nothing_that_repeats(tracking_uri, tiny_overrides):
    result = run_cli("run", *(a for o in [*tiny_overrides, "train.log_every=10"] for a in ("--set", o)),
                     timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    console = (result.stdout + result.stderr).splitlines()
    assert not [line for line in console if "State API" in line]  # Ray Train's PlacementGroupCleaner
    assert not [line for line in console if "TrainingReport(" in line]  # Ray Train's report() dumps
    assert not [line for line in console if re.search("warning", line, re.IGNORECASE)], console

    # rank 0's lines, printed once by the driver (no worker prefix): steps, each epoch's end and its validation
    progress = [line.split(" - ", 1)[1] for line in console if "Task run 'train-" in line and " - " in line]
    for epoch in (1, 2, 3):
        steps = [p for p in progress if p.startswith(f"epoch {epoch}/3 | step ")]
        assert steps and re.search(r"\((\d+)/\1\) \| loss \d+\.\d+ \| [\d,]+ tgt tok/s \| lr \S+ \| \S+ elapsed, "
                                   r"~\S+ left$", steps[-1]), steps
        [validation] = [p for p in progress if p.startswith(f"epoch {epoch}/3 validation")]
        assert re.search(r"loss \S+ \| ppl \S+ \| BLEU \S+ \| exact match \S+% \| val_bleu \S+, ", validation)
    assert any(p.startswith("training stopped after epoch 3 (all epochs done)") for p in progress), progress
    assert not [line for line in console if "RayTrainWorker" in line]
    # the last line of the flow names the MLflow run, the registered version and the champion decision
    [done] = [line for line in console if " - done: MLflow run " in line]
    assert re.search(r"done: MLflow run [0-9a-f]{32} in experiment 'alignflow' .* registered tiny-dates "
                     r"version 1, champion now", done), done
