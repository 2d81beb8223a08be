"""Rank 0's metric buffer against a real MLflow store (a sqlite file) and a server port nobody listens on."""

import time
from pathlib import Path

from mlflow import MlflowClient

from tests.ops.servers import HOST, free_port
from training.tracking import MetricBuffer, deliver


def _run(tracking_uri: str) -> str:
    client = MlflowClient(tracking_uri)
    return client.create_run(client.create_experiment("buffer")).info.run_id


def _steps(tracking_uri: str, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in MlflowClient(tracking_uri).get_metric_history(run_id, key))


def test_a_server_that_is_down_costs_seconds_and_the_checkpoint_keeps_what_it_missed(tracking_uri, tmp_path):
    run_id = _run(tracking_uri)
    said: list[str] = []
    down = MetricBuffer(f"http://{HOST}:{free_port()}", run_id, said.append)
    for step in (10, 20):
        down.add({"epoch": step / 10, "val_bleu": step}, step)
    heatmap = down.dir / "attention" / "epoch_001" / "example_0.png"
    heatmap.parent.mkdir(parents=True)
    heatmap.write_bytes(b"png")
    down.add_artifacts([heatmap])
    t0 = time.monotonic()
    assert not down.flush() and not down.flush()
    assert time.monotonic() - t0 < 30  # MLflow's defaults would retry for minutes
    assert len(said) == 1 and "unreachable" in said[0]  # one line per outage, not one per attempt
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    down.save(checkpoint)

    # The checkpoint is delivered once the server is there (twice here: a resumed run finds it again).
    assert deliver(tracking_uri, run_id, str(checkpoint), wait_s=0)
    assert deliver(tracking_uri, run_id, str(checkpoint), wait_s=0)
    assert _steps(tracking_uri, run_id, "epoch") == [10, 20]
    assert _steps(tracking_uri, run_id, "val_bleu") == [10, 20]
    artifacts = MlflowClient(tracking_uri).list_artifacts(run_id, "attention/epoch_001")
    assert [Path(a.path).name for a in artifacts] == ["example_0.png"]


def test_a_step_the_run_has_is_not_sent_again(tracking_uri):
    run_id = _run(tracking_uri)
    first = MetricBuffer(tracking_uri, run_id)
    first.add({"epoch": 1, "train_loss": 2.0}, 5)
    assert first.flush()
    repeat = MetricBuffer(tracking_uri, run_id)  # a restarted worker repeating the epoch: other values, same step
    assert repeat.flush() and repeat.has(5)
    repeat.add({"epoch": 1, "train_loss": 1.9}, 5)
    assert repeat.flush()
    assert [m.value for m in MlflowClient(tracking_uri).get_metric_history(run_id, "train_loss")] == [2.0]
    for buffer in (first, repeat):
        buffer.close()
