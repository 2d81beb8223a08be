"""What a person sees: the console of a real `alignflow run`, read line by line. Checked on a run the suite makes
anyway (tests/training/test_distributed.py: the resumed run), rather than on a pipeline run of its own."""

import re


def assert_console_is_clean(console: list[str], epochs: range, total: int, model: str, version: int) -> None:
    """Progress to follow for each epoch trained (steps with an ETA, the validation line), the stop reason and the
    closing line; none of Ray's repeated complaints, report dumps, worker prefixes or warnings."""
    assert not [line for line in console if "State API" in line]  # Ray Train's PlacementGroupCleaner
    assert not [line for line in console if "TrainingReport(" in line]  # Ray Train's report() dumps
    assert not [line for line in console if re.search("warning", line, re.IGNORECASE)], console
    assert not [line for line in console if "RayTrainWorker" in line]

    # rank 0's lines, printed once by the driver (no worker prefix): steps, each epoch's end and its validation
    progress = [line.split(" - ", 1)[1] for line in console if "Task run 'train-" in line and " - " in line]
    for epoch in epochs:
        steps = [p for p in progress if p.startswith(f"epoch {epoch}/{total} | step ")]
        assert steps and re.search(r"\((\d+)/\1\) \| loss \d+\.\d+ \| [\d,]+ tgt tok/s \| lr \S+ \| \S+ elapsed, "
                                   r"~\S+ left$", steps[-1]), steps
        [validation] = [p for p in progress if p.startswith(f"epoch {epoch}/{total} validation")]
        assert re.search(r"loss \S+ \| ppl \S+ \| BLEU \S+ \| exact match \S+% \| val_bleu \S+, ", validation)
    assert any(p.startswith(f"training stopped after epoch {total} (all epochs done)") for p in progress), progress
    # the last line of the flow names the MLflow run, the registered version and the champion decision
    [done] = [line for line in console if " - done: MLflow run " in line]
    assert re.search(rf"done: MLflow run [0-9a-f]{{32}} in experiment 'alignflow' .* registered {model} "
                     rf"version {version}, champion now", done), done
