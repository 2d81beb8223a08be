"""train.max_minutes on a real Ray Train run: training stops inside an epoch when the budget runs out, every
worker at the same step, and the cut epoch is still validated, checkpointed and logged. The anneal LR
schedule spends the same budget: its LR reaches ~0 as the time runs out."""

from pathlib import Path

from mlflow import MlflowClient

from data_prep.config import DataConfig, TokenizerConfig
from data_prep.prepare import prepare
from training import trainer
from training.config import ModelConfig, ScalingSettings, TrainConfig
from training.data import TrainData, load_encoded
from training.loop import LoopConfig, annealed_lr

BUDGET_MINUTES = 0.15


def test_a_run_stops_when_its_time_budget_is_spent(ray_cluster, tracking_uri, tmp_path: Path):
    manifest = prepare(DataConfig.model_validate({"sizes": {"train": 4000, "validation": 40, "test": 10}}),
                       TokenizerConfig(), tmp_path / "prepared")
    splits = load_encoded(manifest.encoded)
    data = TrainData(splits["train"], splits["validation"], ["x"] * 40)
    client = MlflowClient(tracking_uri)
    exp = client.create_experiment("budget", artifact_location=(tmp_path / "artifacts").as_uri())
    run_id = client.create_run(exp).info.run_id
    job = LoopConfig(
        model=ModelConfig(emb_size=32, enc_hidden=64, dec_hidden=128, att_hidden=64),
        # 1000 epochs could never finish in 9 s; a tiny batch makes an epoch many steps long, so the cut
        # falls inside one
        train=TrainConfig(epochs=1000, patience=1000, batch_tokens=256, max_minutes=BUDGET_MINUTES,
                          lr_schedule="anneal", lr_anneal=0.5, heatmap_examples=0),
        select_metric="val_bleu", src_tokenizer=Path(manifest.src_tokenizer).read_text(),
        tgt_tokenizer=Path(manifest.tgt_tokenizer).read_text(), threads=1, tracking_uri=tracking_uri,
        run_id=run_id)
    out = trainer.fit(job, data, ScalingSettings(num_workers=2, max_failures=0), name="budget",
                      storage_path=tmp_path / "ray", keep=1)

    last = out.last_metrics
    assert last["epoch"] < 1000
    # the budget covers steps and validation; checkpointing the last epoch may add a moment
    assert BUDGET_MINUTES * 0.8 <= last["train_minutes"] <= BUDGET_MINUTES * 1.5
    minutes = [m.value for m in client.get_metric_history(run_id, "train_minutes")]
    assert len(minutes) == last["epoch"] and minutes == sorted(minutes)  # every epoch, the cut one included
    # anneal: the LR falls with the budget spent (not with the 1000 epochs), to ~0 at the cut
    lrs = [m.value for m in client.get_metric_history(run_id, "lr")]
    assert lrs == sorted(lrs, reverse=True) and lrs[-1] < 0.2 * job.train.lr


def test_annealed_lr_holds_then_falls_linearly_to_zero():
    assert [annealed_lr(1.0, done, 0.5) for done in (0.0, 0.5, 0.75, 1.0, 1.2)] == [1.0, 1.0, 0.5, 0.0, 0.0]
    assert annealed_lr(2.0, 0.25, 1.0) == 1.5  # anneal 1: linear from the first step
