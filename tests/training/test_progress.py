import math

from training.progress import Lines, duration, time_left


def test_durations_read_at_a_glance():
    assert [duration(s) for s in (0, 12.4, 65, 3599, 3725)] == ["0s", "12s", "1m05s", "59m59s", "1h02m"]


def test_time_left_is_the_sooner_of_the_epochs_at_this_pace_and_the_budget():
    assert time_left(60.0, 100, 400, math.inf) == 180.0  # 300 steps more at 0.6 s each
    assert time_left(60.0, 100, 400, 90.0) == 30.0  # the budget runs out first
    assert time_left(60.0, 0, 400, math.inf) == math.inf and time_left(95.0, 100, 400, 90.0) == 0.0


def test_a_validation_line_says_whether_the_epoch_is_the_best():
    said: list[str] = []
    lines = Lines(said.append, epochs=4, budget=math.inf, select_metric="val_bleu")
    metrics = {"val_loss": 0.5, "val_ppl": 1.65, "val_bleu": 30.0, "val_exact_match": 2.0}
    lines.validated(2, metrics, best=30.0, best_epoch=2)
    lines.validated(3, {**metrics, "val_bleu": 29.0}, best=30.0, best_epoch=2)
    assert said == ["epoch 2/4 validation | loss 0.5000 | ppl 1.65 | BLEU 30.00 | exact match 2.0% | val_bleu 30.00, "
                    "best so far",
                    "epoch 3/4 validation | loss 0.5000 | ppl 1.65 | BLEU 29.00 | exact match 2.0% | val_bleu 29.00, "
                    "best val_bleu 30.00 at epoch 2"]
