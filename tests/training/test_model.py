"""Invariants of the attention model, with odd distinct sizes so a transposed weight fails loudly."""

import weakref

import torch
from safetensors.torch import load_model, save_model

from data_prep.specials import PAD_ID
from training.config import ModelConfig
from training.model import AdditiveAttention, Seq2Seq
from training.step_grad import StepLinear

CFG = ModelConfig(emb_size=5, enc_hidden=7, dec_hidden=11, att_hidden=3, dropout=0.0)


def _batch(lengths: list[int], vocab: int = 13) -> tuple[torch.Tensor, torch.Tensor]:
    n = max(lengths)
    x = torch.full((len(lengths), n), PAD_ID, dtype=torch.long)
    for b, L in enumerate(lengths):
        x[b, :L] = torch.randint(4, vocab, (L,))
    return x, torch.tensor(lengths)


def test_attention_weights_sum_to_one_on_real_positions_and_zero_on_padding():
    torch.manual_seed(0)
    att = AdditiveAttention(key_size=14, query_size=11, A=3)
    h = torch.randn(3, 6, 14)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0]], dtype=torch.bool)
    c, a = att(torch.randn(3, 11), att.project_keys(h), h, mask)
    assert a.shape == (3, 6) and c.shape == (3, 14)
    torch.testing.assert_close(a.sum(-1), torch.ones(3))
    assert torch.all(a[~mask] == 0)
    assert torch.all(a[mask] > 0)
    # c_i is the a-weighted sum of the annotations
    torch.testing.assert_close(c, torch.einsum("bn,bnk->bk", a, h))


def test_annotations_do_not_depend_on_longer_batch_mates():
    torch.manual_seed(0)
    model = Seq2Seq(CFG, 13, 17, PAD_ID).eval()
    x, x_len = _batch([4, 9, 6])
    alone_h, alone_final = model.encoder(x[:1, :4], x_len[:1])
    batched_h, batched_final = model.encoder(x, x_len)
    torch.testing.assert_close(batched_h[0, :4], alone_h[0])
    torch.testing.assert_close(batched_final[0], alone_final[0])
    assert torch.all(batched_h[0, 4:] == 0)  # nothing is computed on pads


def test_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    model = Seq2Seq(CFG, 13, 17, PAD_ID)
    x, x_len = _batch([4, 3])
    y_in, y_out = torch.randint(4, 17, (2, 5)), torch.randint(4, 17, (2, 5))
    loss, n = model(x, x_len, y_in, y_out)
    loss.backward()
    assert int(n) == 10
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    # the pad embedding rows are frozen by padding_idx, but every tensor still gets a non-zero gradient
    assert missing == []


def test_tiny_batch_overfits():
    torch.manual_seed(0)
    model = Seq2Seq(CFG, 13, 17, PAD_ID)
    x, x_len = _batch([4, 3, 5])
    y = torch.randint(4, 17, (3, 4))
    y_in = torch.cat([torch.full((3, 1), 2), y], 1)
    y_out = torch.cat([y, torch.full((3, 1), 3)], 1)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(300):
        loss, n = model(x, x_len, y_in, y_out)
        opt.zero_grad()
        (loss / n).backward()
        opt.step()
    assert (loss / n).item() < 0.05


def test_a_sentence_loss_does_not_depend_on_its_batch_mates():
    # The teacher-forced loop runs on unfinished sentences only; the summed loss of a batch must equal the sum
    # of each sentence's loss alone, whatever the target lengths and their order in the batch.
    torch.manual_seed(0)
    model = Seq2Seq(CFG, 13, 17, PAD_ID).eval()
    x, x_len = _batch([4, 9, 6, 2])
    tgt_len = [3, 1, 6, 4]
    y_in = torch.full((4, 7), PAD_ID, dtype=torch.long)
    y_out = torch.full((4, 7), PAD_ID, dtype=torch.long)
    for b, L in enumerate(tgt_len):
        y = torch.randint(4, 17, (L,))
        y_in[b, : L + 1] = torch.cat([torch.tensor([2]), y])
        y_out[b, : L + 1] = torch.cat([y, torch.tensor([3])])
    loss, n = model(x, x_len, y_in, y_out)
    alone = [model(x[b : b + 1, : x_len[b]], x_len[b : b + 1], y_in[b : b + 1, : L + 1], y_out[b : b + 1, : L + 1])
             for b, L in enumerate(tgt_len)]
    assert int(n) == sum(tgt_len) + 4
    torch.testing.assert_close(loss, sum(a for a, _ in alone))


def test_dropout_keeps_the_expected_value_and_is_off_in_eval():
    from training.model import Dropout

    torch.manual_seed(0)
    drop, x = Dropout(0.3), torch.ones(200_000)
    y = drop(x)
    assert abs((y == 0).float().mean().item() - 0.3) < 0.01
    assert abs(y.mean().item() - 1.0) < 0.02
    assert torch.equal(drop.eval()(x), x)


def test_tied_softmax_shares_the_target_embeddings_and_survives_a_safetensors_round_trip(tmp_path):
    torch.manual_seed(0)
    tied = Seq2Seq(CFG.model_copy(update={"tied_softmax": True}), 13, 17, PAD_ID)
    assert tied.decoder.generator.weight is tied.decoder.embed.weight
    assert tied.decoder.pre_output.out_features == CFG.emb_size  # the readout lives in embedding space
    assert tied.num_params() < Seq2Seq(CFG, 13, 17, PAD_ID).num_params()
    x, x_len = _batch([4, 6])
    y, _ = _batch([5, 3], vocab=17)
    loss, _ = tied(x, x_len, y, y)
    loss.backward()
    # W_o's gradient lands in the one shared matrix, on rows the decoder never embedded too
    emb_grad = tied.decoder.embed.weight.grad
    assert emb_grad is not None and emb_grad[~torch.isin(torch.arange(17), y)].abs().sum() > 0

    save_model(tied, str(tmp_path / "w.safetensors"))  # a plain save_file rejects the shared tensor
    torch.manual_seed(1)
    loaded = Seq2Seq(CFG.model_copy(update={"tied_softmax": True}), 13, 17, PAD_ID)
    load_model(loaded, tmp_path / "w.safetensors")
    assert loaded.decoder.generator.weight is loaded.decoder.embed.weight
    torch.testing.assert_close(loaded(x, x_len, y, y)[0], tied(x, x_len, y, y)[0])


def test_deferred_step_gradients_equal_autograds_per_step_ones():
    torch.manual_seed(0)
    model = Seq2Seq(CFG, 13, 17, PAD_ID)
    x, x_len = _batch([4, 9, 6])
    y_in, y_out = torch.randint(4, 17, (3, 7)), torch.randint(4, 17, (3, 7))
    y_out[1, 3:] = PAD_ID  # sentences end at different steps: the batch narrows inside the loop
    grads = {}
    for defer in (True, False):
        model.zero_grad()
        model.decoder.defer_step_grads = defer
        loss, _ = model(x, x_len, y_in, y_out)
        loss.backward()
        grads[defer] = {name: p.grad.clone() for name, p in model.named_parameters()}
    for name, g in grads[False].items():
        torch.testing.assert_close(grads[True][name], g, msg=name)


def test_deferred_step_gradients_free_the_batch_graph_after_backward():
    """The steps' inputs are part of the graph that holds them; kept past backward, every batch's graph leaked
    (~18 MB a step at the default size)."""
    W = torch.randn(5, 3, requires_grad=True)
    linear = StepLinear(W, defer=True)
    h = torch.randn(2, 3)
    for _ in range(4):  # a recurrence: each step's input depends on the previous step's product
        h = torch.tanh(linear(h)[:, :3])
    h.sum().backward()
    steps = weakref.ref(linear.steps)
    del linear, h
    assert steps() is None
