"""Full definition of the attention seq2seq model (Bahdanau, Cho & Bengio 2015, arXiv:1409.0473),
all of it in this single file.

Encoder (paper §3.2): a bidirectional LSTM reads x_1..x_n forward and backward; each position's two states are
concatenated into the annotation h_j = [→h_j; ←h_j].
Bridge: the decoder's initial state s_0 = tanh(W_s [→h_n; ←h_1]) comes from both final encoder states
(the paper uses ←h_1 alone); the decoder's LSTM cell starts at zero.
Decoder step i (§3.1, appendix A.1.2), in Bahdanau's order -- attend with the *previous* state:
    e_ij = a(s_{i-1}, h_j) = vᵀ tanh(W s_{i-1} + U h_j)     U h_j is computed once per batch
    a_ij = softmax_j(e_ij)                                  padding gets exactly zero weight
    c_i  = Σ_j a_ij h_j                                     recomputed at every step
    s_i  = LSTM([E y_{i-1}; c_i], s_{i-1})                 written out: its input weights split as
                                                            [W_y | W_c], so W_y E y_{i-1} runs for all i at once
    p(y_i | y_<i, x) = softmax(W_o tanh(W_t [s_i; c_i; E y_{i-1}]))
                                                            tied_softmax: W_o = E, the target embeddings

Shapes: B batch, n source length, m target length, E embedding, H encoder hidden per direction,
D decoder hidden, A attention hidden, V vocabulary.
"""

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from training.config import ModelConfig
from training.step_grad import StepLinear

State = tuple[Tensor, Tensor]  # (s, LSTM cell), each (B, D)


class StepWeights(NamedTuple):
    """The decoder step's matrices, sliced and stacked once per batch rather than at every step (in backward,
    a slice taken per step would cost a zero-filled full-size gradient per step)."""

    W_c: StepLinear  # (4D, 2H): the c_i columns of the LSTM's input weights
    W_s: StepLinear  # (4D + A, D): the LSTM's W_hh and the attention's W stacked, as both multiply s_{i-1}


class Encoded(NamedTuple):
    h: Tensor  # annotations h_j, (B, n, 2H)
    keys: Tensor  # U h_j, (B, n, A)
    mask: Tensor  # True on real source positions, (B, n)
    s0: State
    w: StepWeights


class Dropout(nn.Dropout):
    """Inverted dropout, as nn.Dropout, with the mask drawn by rand_like: on CPU, bernoulli_ (nn.Dropout's
    sampler) costs about 3x more, ~5% of a training step at the Multi30k size."""

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        return x * torch.rand_like(x).ge_(self.p).mul_(1.0 / (1.0 - self.p))


class Encoder(nn.Module):
    def __init__(self, vocab: int, E: int, H: int, dropout: float, pad_id: int, drop_h: bool = True) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, E, padding_idx=pad_id)
        self.rnn = nn.LSTM(E, H, batch_first=True, bidirectional=True)
        self.dropout = Dropout(dropout)
        self.drop_h = Dropout(dropout if drop_h else 0.0)

    def forward(self, x: Tensor, x_len: Tensor) -> tuple[Tensor, Tensor]:
        """x: (B, n) token ids, x_len: (B,) lengths -> annotations h (B, n, 2H), final states (B, 2H)."""
        emb = self.dropout(self.embed(x))  # (B, n, E)
        # Packing keeps pads out of the recurrence, so a sentence's annotations don't depend on its batch.
        packed = pack_padded_sequence(emb, x_len.cpu(), batch_first=True, enforce_sorted=False)
        out, (h_n, _) = self.rnn(packed)  # h_n: (2, B, H) = [→h_n, ←h_1]
        h, _ = pad_packed_sequence(out, batch_first=True, total_length=x.size(1))  # (B, n, 2H)
        final = torch.cat([h_n[0], h_n[1]], dim=-1)  # (B, 2H)
        return self.drop_h(h), final


class AdditiveAttention(nn.Module):
    """The alignment model a(s_{i-1}, h_j). Stateless: keys are passed in, so beam search may reorder them."""

    def __init__(self, key_size: int, query_size: int, A: int) -> None:
        super().__init__()
        self.U = nn.Linear(key_size, A, bias=False)
        self.W = nn.Linear(query_size, A)
        self.v = nn.Parameter(torch.empty(A).uniform_(-0.1, 0.1))

    def project_keys(self, h: Tensor) -> Tensor:
        """U h_j for all j, once per batch: (B, n, 2H) -> (B, n, A)."""
        return self.U(h)

    def forward(self, s_prev: Tensor, keys: Tensor, h: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """s_prev (B, D), keys (B, n, A), h (B, n, 2H), mask (B, n) -> context c (B, 2H), weights a (B, n)."""
        return self.attend(self.W(s_prev), keys, h, mask)

    def attend(self, query: Tensor, keys: Tensor, h: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """The same from the query W s_{i-1} (B, A), which the decoder computes with its own use of s_{i-1}."""
        e = torch.tanh(query.unsqueeze(1) + keys) @ self.v  # (B, n)
        # Mask before the softmax so padding gets exactly zero weight.
        e = e.masked_fill(~mask, float("-inf"))
        a = torch.softmax(e, dim=-1)  # (B, n)
        c = torch.bmm(a.unsqueeze(1), h).squeeze(1)  # (B, 1, n) @ (B, n, 2H) -> (B, 2H)
        return c, a


class Decoder(nn.Module):
    def __init__(self, vocab: int, E: int, H: int, D: int, A: int, dropout: float, pad_id: int,
                 tied: bool = False, drop_readout_input: bool = True) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, E, padding_idx=pad_id)
        self.bridge = nn.Linear(2 * H, D)  # W_s
        self.attention = AdditiveAttention(2 * H, D, A)
        self.rnn = nn.LSTMCell(E + 2 * H, D)
        T = E if tied else D  # the readout t_i lives in the embedding space when W_o = E
        self.pre_output = nn.Linear(D + 2 * H + E, T)  # W_t
        self.generator = nn.Linear(T, vocab)  # W_o
        self.embed_scale = 1.0
        if tied:
            # nn.Embedding's N(0, 1) init, used as W_o, gives logits with a std of ~sqrt(E) = 16: a wildly
            # confident start that costs epochs to unlearn. So init it small, like the rest of the readout, and
            # scale the lookups up (as Vaswani et al. scale theirs by sqrt(E)) to the untied N(0, 1) size: without
            # it the decoder's inputs start 17x smaller and it learns markedly slower.
            nn.init.uniform_(self.embed.weight, -0.1, 0.1)
            self.generator.weight = self.embed.weight
            self.embed_scale = 3**0.5 / 0.1  # 1 / std of U(-0.1, 0.1)
        self.dropout = Dropout(dropout)
        self.drop_readout_input = Dropout(dropout if drop_readout_input else 0.0)
        self.defer_step_grads = True  # off when the step is torch.compile'd

    def lookup(self, y: Tensor) -> Tensor:
        """E y: target embeddings, scaled to unit size when they double as W_o."""
        return self.embed(y) * self.embed_scale

    def init_state(self, final: Tensor) -> State:
        s0 = torch.tanh(self.bridge(final))  # (B, D)
        return s0, torch.zeros_like(s0)

    def step_weights(self, defer_grad: bool = False) -> StepWeights:
        """defer_grad: take these weights' gradients once per batch, not once per step (training/step_grad.py)."""
        E = self.embed.embedding_dim
        W_c, W_s = self.rnn.weight_ih[:, E:], torch.cat([self.rnn.weight_hh, self.attention.W.weight])
        return StepWeights(StepLinear(W_c, defer_grad), StepLinear(W_s, defer_grad))

    def input_projection(self, y_prev_emb: Tensor) -> Tensor:
        """W_y E y_{i-1} + the LSTM's biases, (..., E) -> (..., 4D): teacher forcing knows every y_{i-1}, so
        this runs for all steps in one matrix product, outside the recurrence."""
        E = self.embed.embedding_dim
        return F.linear(y_prev_emb, self.rnn.weight_ih[:, :E], self.rnn.bias_ih + self.rnn.bias_hh)

    def step(self, y_proj: Tensor, state: State, keys: Tensor, h: Tensor, mask: Tensor, w: StepWeights
             ) -> tuple[State, Tensor, Tensor]:
        """One decoder step from W_y E y_{i-1} (B, 4D) and s_{i-1} -> (s_i state, c_i (B, 2H), a_i (B, n))."""
        s_prev, cell = state
        # One product for both uses of s_{i-1}: the LSTM's W_hh s_{i-1} and the attention query W s_{i-1}.
        A = keys.size(-1)
        hidden, query = w.W_s(s_prev).split([w.W_s.out_features - A, A], dim=-1)
        c, a = self.attention.attend(query + self.attention.W.bias, keys, h, mask)
        # The LSTM cell (nn.LSTMCell's gate order i, f, g, o) on the input [E y_{i-1}; c_i].
        i, f, g, o = (y_proj + hidden + w.W_c(c)).chunk(4, dim=-1)
        cell = torch.sigmoid(f) * cell + torch.sigmoid(i) * torch.tanh(g)
        s = torch.sigmoid(o) * torch.tanh(cell)
        return (s, cell), c, a

    def readout(self, s: Tensor, c: Tensor, y_prev_emb: Tensor) -> Tensor:
        """Logits over V from (s_i, c_i, E y_{i-1}); works on any leading shape (..., D) etc."""
        t = torch.tanh(self.pre_output(self.drop_readout_input(torch.cat([s, c, y_prev_emb], dim=-1))))  # (..., D or E)
        return self.generator(self.dropout(t))  # (..., V)


class Seq2Seq(nn.Module):
    def __init__(self, cfg: ModelConfig, src_vocab: int, tgt_vocab: int, pad_id: int) -> None:
        super().__init__()
        self.cfg, self.pad_id = cfg, pad_id
        E, H, D, A = cfg.emb_size, cfg.enc_hidden, cfg.dec_hidden, cfg.att_hidden
        self.encoder = Encoder(src_vocab, E, H, cfg.dropout, pad_id, cfg.dropout_hidden)
        self.decoder = Decoder(tgt_vocab, E, H, D, A, cfg.dropout, pad_id, cfg.tied_softmax, cfg.dropout_hidden)
        if cfg.param_init > 0:
            self.init_uniform(cfg.param_init)

    def init_uniform(self, r: float) -> None:
        """Every weight U(-r, r), pad embeddings zero. nn.Embedding's N(0, 1) rows are ~30x larger than that,
        and Adam moves each by ~lr per step: a rare word's embedding stays mostly noise for a long time."""
        for p in self.parameters():
            nn.init.uniform_(p, -r, r)
        for embed in (self.encoder.embed, self.decoder.embed):
            with torch.no_grad():
                embed.weight[self.pad_id].zero_()
        if self.cfg.tied_softmax:
            self.decoder.embed_scale = 3**0.5 / r  # lookups back to unit size, as the tied init does

    def encode(self, x: Tensor, x_len: Tensor) -> Encoded:
        h, final = self.encoder(x, x_len)
        mask = x != self.pad_id  # (B, n)
        # Deferred step gradients need plain fp32 autograd: not under autocast, nor inside a compiled step.
        defer = (torch.is_grad_enabled() and self.decoder.defer_step_grads
                 and not torch.is_autocast_enabled(x.device.type))
        return Encoded(h, self.decoder.attention.project_keys(h), mask, self.decoder.init_state(final),
                       self.decoder.step_weights(defer))

    def decode_step(self, y_prev: Tensor, state: State, enc: Encoded) -> tuple[Tensor, State, Tensor]:
        """Inference step: y_{i-1} (B,) ids -> (logits (B, V), s_i state, a_i (B, n)). Greedy and beam use it."""
        y_emb = self.decoder.lookup(y_prev)  # (B, E)
        y_proj = self.decoder.input_projection(y_emb)
        state, c, a = self.decoder.step(y_proj, state, enc.keys, enc.h, enc.mask, enc.w)
        return self.decoder.readout(state[0], c, y_emb), state, a

    def forward(self, x: Tensor, x_len: Tensor, y_in: Tensor, y_out: Tensor, label_smoothing: float = 0.0
                ) -> tuple[Tensor, Tensor]:
        """Teacher forcing. y_in = <s> y, y_out = y </s>, both (B, m), padded at the end.
        Returns (summed cross-entropy -- the NLL when label_smoothing is 0 --, non-pad tokens)."""
        real = y_out != self.pad_id  # (B, m)
        # Longest target first: the sentences still decoding at step i are then the first k_i rows, and the
        # loop runs on those only -- no compute on target pads (the decoder's counterpart of a packed sequence).
        order = torch.argsort(real.sum(1), descending=True, stable=True)
        x, x_len, y_in, y_out, real = x[order], x_len[order.cpu()], y_in[order], y_out[order], real[order]
        active = real.sum(0).tolist()  # k_i, non-increasing
        enc = self.encode(x, x_len)
        y_emb = self.decoder.dropout(self.decoder.lookup(y_in))  # (B, m, E)
        # Backward turns every slice into a zero-filled gradient of its base, so slice little: unbind splits
        # the inputs per step in one op, and keys/h/state narrow only when a sentence has ended, from the
        # last narrowing -- not from the full batch at every step.
        y_steps = self.decoder.input_projection(y_emb).unbind(1)  # m x (B, 4D)
        state, keys, h, mask, ss, cs = enc.s0, enc.keys, enc.h, enc.mask, [], []
        for y_i, k in zip(y_steps, active, strict=True):
            if k < len(keys):
                state, keys, h, mask = (state[0][:k], state[1][:k]), keys[:k], h[:k], mask[:k]
            state, c, _ = self.decoder.step(y_i[:k], state, keys, h, mask, enc.w)
            ss.append(state[0])
            cs.append(c)
        # Real positions in time-major order, as the loop produced them: (N, D), (N, 2H), (N, E).
        s, c = torch.cat(ss), torch.cat(cs)
        y_prev = y_emb.transpose(0, 1)[real.t()]
        # The vocabulary projection runs once, after the loop, on real target positions only.
        logits = self.decoder.readout(s, c, y_prev)  # (N, V)
        loss = F.cross_entropy(logits, y_out.t()[real.t()], reduction="sum", label_smoothing=label_smoothing)
        return loss, real.sum()

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
