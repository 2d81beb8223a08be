"""Text in, text out: a trained model plus its two tokenizers. Used by evaluation, the CLI and the pyfunc."""

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_model
from tokenizers import Tokenizer

from data_prep.specials import EOS_ID, PAD_ID
from training.config import ModelConfig
from training.model import Seq2Seq
from training.search import beam_search, greedy, max_output_len, strip

WEIGHTS, MODEL_CONFIG = "model.safetensors", "model_config.json"


def build_model(cfg: ModelConfig, src_tok: Tokenizer, tgt_tok: Tokenizer) -> Seq2Seq:
    return Seq2Seq(cfg, src_tok.get_vocab_size(), tgt_tok.get_vocab_size(), PAD_ID)


class Translator:
    def __init__(self, model: Seq2Seq, src_tok: Tokenizer, tgt_tok: Tokenizer, max_output_ratio: float = 1.5,
                 batch_size: int = 64, beam_size: int = 1, length_penalty: float = 1.0) -> None:
        self.model, self.src_tok, self.tgt_tok = model.eval(), src_tok, tgt_tok
        self.max_output_ratio, self.batch_size = max_output_ratio, batch_size
        self.beam_size, self.length_penalty = beam_size, length_penalty

    @classmethod
    def from_files(cls, weights: str | Path, model_config: str | Path, src_tokenizer: str | Path,
                   tgt_tokenizer: str | Path, **kwargs: float | int) -> "Translator":
        cfg = ModelConfig.model_validate(json.loads(Path(model_config).read_text()))
        src_tok, tgt_tok = Tokenizer.from_file(str(src_tokenizer)), Tokenizer.from_file(str(tgt_tokenizer))
        model = build_model(cfg, src_tok, tgt_tok)
        load_model(model, weights)  # safetensors: tensors only, nothing is unpickled
        return cls(model, src_tok, tgt_tok, **kwargs)

    def encode(self, texts: list[str]) -> list[list[int]]:
        return [[*e.ids, EOS_ID] for e in self.src_tok.encode_batch(texts, add_special_tokens=False)]

    def translate_ids(self, sources: list[list[int]], beam_size: int | None = None
                      ) -> tuple[list[list[int]], list[np.ndarray]]:
        """Source ids (each ending in EOS) -> output ids (no EOS) and attention (len(out)+1, len(src)) each.
        beam_size overrides the translator's for this call only (1 = greedy)."""
        beam = beam_size or self.beam_size
        outs: list[list[int]] = [[] for _ in sources]
        attns: list[np.ndarray] = [np.zeros((0, 0))] * len(sources)
        order = sorted(range(len(sources)), key=lambda k: len(sources[k]))  # similar lengths batch together
        device = next(self.model.parameters()).device
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            n = max(len(sources[k]) for k in idx)
            x = torch.full((len(idx), n), PAD_ID, dtype=torch.long)
            for b, k in enumerate(idx):
                x[b, : len(sources[k])] = torch.tensor(sources[k])
            x_len = torch.tensor([len(sources[k]) for k in idx])
            max_len = max_output_len(x_len, self.max_output_ratio)
            if beam == 1:
                ys, a = greedy(self.model, x.to(device), x_len, max_len)
                best = [(strip(ys[b].tolist()), a[b]) for b in range(len(idx))]
            else:
                nbest = beam_search(self.model, x.to(device), x_len, beam, max_len, self.length_penalty)
                best = [(hyps[0].ids, hyps[0].attention) for hyps in nbest]
            for (ids, a_b), k in zip(best, idx, strict=True):
                outs[k] = ids
                attns[k] = a_b[: len(ids) + 1, : len(sources[k])].cpu().numpy()
        return outs, attns

    def decode(self, ids: list[int]) -> str:
        return self.tgt_tok.decode(ids, skip_special_tokens=True)

    def translate(self, texts: list[str], beam_size: int | None = None) -> list[str]:
        outs, _ = self.translate_ids(self.encode(texts), beam_size)
        return [self.decode(o) for o in outs]
