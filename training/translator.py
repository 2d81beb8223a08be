"""Text in, text out: a trained model, its two tokenizers and its decoding settings. Used by evaluation, training's
validation, the CLI and the pyfunc."""

import json
import logging
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_model
from tokenizers import Tokenizer

from data_prep.specials import EOS_ID, PAD_ID
from training.config import DecodingConfig, ModelConfig
from training.model import Seq2Seq
from training.search import beam_search, greedy, max_output_len, strip

WEIGHTS, MODEL_CONFIG, DECODING = "model.safetensors", "model_config.json", "decoding.json"

log = logging.getLogger(__name__)


def build_model(cfg: ModelConfig, src_tok: Tokenizer, tgt_tok: Tokenizer) -> Seq2Seq:
    return Seq2Seq(cfg, src_tok.get_vocab_size(), tgt_tok.get_vocab_size(), PAD_ID)


def read_decoding(path: str | Path | None) -> DecodingConfig:
    """A model's decoding.json; the defaults for a model saved without one."""
    if path is None or not Path(path).exists():
        return DecodingConfig()
    return DecodingConfig.model_validate_json(Path(path).read_text())


class Translator:
    def __init__(self, model: Seq2Seq, src_tok: Tokenizer, tgt_tok: Tokenizer,
                 decoding: DecodingConfig | None = None, batch_size: int = 64) -> None:
        self.model, self.src_tok, self.tgt_tok = model.eval(), src_tok, tgt_tok
        self.decoding, self.batch_size = decoding or DecodingConfig(), batch_size

    @classmethod
    def from_files(cls, weights: str | Path, model_config: str | Path, src_tokenizer: str | Path,
                   tgt_tokenizer: str | Path, decoding: DecodingConfig | None = None,
                   batch_size: int = 64) -> "Translator":
        cfg = ModelConfig.model_validate(json.loads(Path(model_config).read_text()))
        src_tok, tgt_tok = Tokenizer.from_file(str(src_tokenizer)), Tokenizer.from_file(str(tgt_tokenizer))
        model = build_model(cfg, src_tok, tgt_tok)
        load_model(model, weights)  # safetensors: tensors only, nothing is unpickled
        return cls(model, src_tok, tgt_tok, decoding, batch_size)

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path, src_tokenizer: str | Path, tgt_tokenizer: str | Path,
                        decoding: DecodingConfig | None = None) -> "Translator":
        """A checkpoint directory's weights, with its decoding.json settings unless `decoding` is given."""
        d = Path(checkpoint)
        return cls.from_files(d / WEIGHTS, d / MODEL_CONFIG, src_tokenizer, tgt_tokenizer,
                              decoding or read_decoding(d / DECODING))

    def encode(self, texts: list[str], max_tokens: int | None = None) -> list[list[int]]:
        """Source ids ending in EOS. A text over `max_tokens` tokens is cut to its first `max_tokens`, with a
        warning naming its line (1-based position in `texts`): never dropped, so outputs stay aligned."""
        out = []
        for i, e in enumerate(self.src_tok.encode_batch(texts, add_special_tokens=False), start=1):
            ids = e.ids
            if max_tokens is not None and len(ids) > max_tokens:
                log.warning("input line %d: %d source tokens, only the first %d are translated (the longest "
                            "source the model was trained on)", i, len(ids), max_tokens)
                ids = ids[:max_tokens]
            out.append([*ids, EOS_ID])
        return out

    def translate_ids(self, sources: list[list[int]], decoding: DecodingConfig | None = None,
                      batch_size: int | None = None) -> tuple[list[list[int]], list[np.ndarray]]:
        """Source ids (each ending in EOS) -> output ids (no EOS) and attention (len(out)+1, len(src)) each.
        `decoding` and `batch_size` override the translator's for this call only."""
        d, batch = decoding or self.decoding, batch_size or self.batch_size
        outs: list[list[int]] = [[] for _ in sources]
        attns: list[np.ndarray] = [np.zeros((0, 0))] * len(sources)
        order = sorted(range(len(sources)), key=lambda k: len(sources[k]))  # similar lengths batch together
        device = next(self.model.parameters()).device
        for start in range(0, len(order), batch):
            idx = order[start : start + batch]
            n = max(len(sources[k]) for k in idx)
            x = torch.full((len(idx), n), PAD_ID, dtype=torch.long)
            for b, k in enumerate(idx):
                x[b, : len(sources[k])] = torch.tensor(sources[k])
            x_len = torch.tensor([len(sources[k]) for k in idx])
            max_len = max_output_len(x_len, d.max_output_ratio)
            if d.beam_size == 1:
                ys, a = greedy(self.model, x.to(device), x_len, max_len)
                best = [(strip(ys[b].tolist()), a[b]) for b in range(len(idx))]
            else:
                nbest = beam_search(self.model, x.to(device), x_len, d.beam_size, max_len, d.length_penalty)
                best = [(hyps[0].ids, hyps[0].attention) for hyps in nbest]
            for (ids, a_b), k in zip(best, idx, strict=True):
                outs[k] = ids
                attns[k] = a_b[: len(ids) + 1, : len(sources[k])].cpu().numpy()
        return outs, attns

    def decode(self, ids: list[int]) -> str:
        return self.tgt_tok.decode(ids, skip_special_tokens=True)

    def translate(self, texts: list[str], decoding: DecodingConfig | None = None,
                  batch_size: int | None = None) -> list[str]:
        """One output per text, in order. A blank text gives a blank output (nothing is decoded for it); an
        over-long one is cut to `max_source_tokens` (see `encode`)."""
        d = decoding or self.decoding
        sources = self.encode(texts, d.max_source_tokens)
        filled = [i for i, t in enumerate(texts) if t.strip()]
        outs, _ = self.translate_ids([sources[i] for i in filled], d, batch_size)
        result = [""] * len(texts)
        for i, o in zip(filled, outs, strict=True):
            result[i] = self.decode(o)
        return result
