import torch

from data_prep.specials import EOS_ID, PAD_ID
from training.config import ModelConfig
from training.model import Seq2Seq
from training.search import greedy, strip


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
