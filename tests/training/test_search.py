import torch

from data_prep.specials import BOS_ID, EOS_ID, PAD_ID
from training.config import ModelConfig
from training.model import Seq2Seq
from training.search import beam_search, greedy, strip


def test_greedy_returns_attention_over_real_source_positions():
    torch.manual_seed(1)
    model = Seq2Seq(ModelConfig(emb_size=5, enc_hidden=7, dec_hidden=11, att_hidden=3, dropout=0.0), 13, 17,
                    PAD_ID).eval()
    x = torch.tensor([[5, 6, 7, EOS_ID], [8, EOS_ID, PAD_ID, PAD_ID]])
    ys, a = greedy(model, x, torch.tensor([4, 2]), max_len=6)
    assert ys.shape[0] == 2 and a.shape == (2, ys.shape[1], 4)
    torch.testing.assert_close(a.sum(-1), torch.ones(2, ys.shape[1]))
    assert torch.all(a[1, :, 2:] == 0)
    # after EOS a row only holds padding
    for row in ys.tolist():
        if EOS_ID in row:
            assert all(t == PAD_ID for t in row[row.index(EOS_ID) + 1 :])


def test_strip_cuts_at_first_eos():
    assert strip([5, 6, EOS_ID, 7]) == [5, 6]
    assert strip([5, 6]) == [5, 6]


def _model(seed: int) -> Seq2Seq:
    torch.manual_seed(seed)
    return Seq2Seq(ModelConfig(emb_size=5, enc_hidden=7, dec_hidden=11, att_hidden=3, dropout=0.0), 13, 9,
                   PAD_ID).eval()


X = torch.tensor([[5, 6, 7, 8, EOS_ID], [8, 9, EOS_ID, PAD_ID, PAD_ID], [4, EOS_ID, PAD_ID, PAD_ID, PAD_ID]])
X_LEN = torch.tensor([5, 3, 2])


def test_beam_of_one_equals_greedy():
    for seed in range(5):
        model = _model(seed)
        ys, a = greedy(model, X, X_LEN, max_len=8)
        beams = beam_search(model, X, X_LEN, beam_size=1, max_len=8)
        for b in range(3):
            assert beams[b][0].ids == strip(ys[b].tolist())
            torch.testing.assert_close(beams[b][0].attention, a[b, : len(beams[b][0].ids) + 1])


def test_beam_hypotheses_are_sorted_distinct_and_end_at_eos():
    import math

    model = _model(3)
    for alpha in (0.0, 1.0):
        for hyps in beam_search(model, X, X_LEN, beam_size=4, max_len=8, alpha=alpha):
            scores = [h.score for h in hyps]
            assert scores == sorted(scores, reverse=True) and all(math.isfinite(s) for s in scores)
            assert len({tuple(h.ids) for h in hyps}) == len(hyps)
            for h in hyps:
                assert EOS_ID not in h.ids and PAD_ID not in h.ids
                torch.testing.assert_close(h.attention.sum(-1), torch.ones(h.attention.size(0)))
                assert h.attention.size(0) == len(h.ids) + int(h.finished)


def test_beam_scores_are_the_model_log_probability_of_the_hypothesis():
    model = _model(4)
    for b, hyps in enumerate(beam_search(model, X, X_LEN, beam_size=3, max_len=30)):
        for h in hyps:
            y_out = torch.tensor([h.ids + [EOS_ID] if h.finished else h.ids], dtype=torch.long)
            y_in = torch.cat([torch.tensor([[BOS_ID]]), y_out[:, :-1]], 1)
            with torch.no_grad():
                nll, _ = model(X[b : b + 1, : X_LEN[b]], X_LEN[b : b + 1], y_in, y_out)
            assert abs(h.score + nll.item()) < 1e-4
