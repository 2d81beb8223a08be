"""The registered MLflow model, as code (models-from-code): weights, tokenizers, the model config and the decoding
settings are artifacts read once in `load_context`; nothing is unpickled. No import-time side effects beyond
set_model."""

from typing import Any

import mlflow
from mlflow.pyfunc import PythonModel

DECODING_PARAMS = ("beam_size", "length_penalty", "max_output_ratio")


def _texts(model_input) -> list[str]:  # noqa: ANN001 -- a list, a Series or a one-column DataFrame
    if hasattr(model_input, "iloc"):
        model_input = model_input.iloc[:, 0] if model_input.ndim == 2 else model_input
    return [str(t) for t in model_input]


class AlignflowTranslator(PythonModel):
    def load_context(self, context: Any) -> None:
        from training.translator import Translator, read_decoding

        a = context.artifacts
        # A model registered before decoding.json existed decodes with the defaults (greedy).
        self.translator = Translator.from_files(a["weights"], a["model_config"], a["src_tokenizer"],
                                                a["tgt_tokenizer"], read_decoding(a.get("decoding")))

    # No type hints on model_input on purpose: MLflow would then infer the signature from them and drop the
    # params schema that registry.py logs explicitly (list[str] -> list[str], params beam_size, ...).
    def predict(self, context, model_input, params=None):  # noqa: ANN001, ANN201
        """One translation per input, blank for blank. Params default to the settings the model was scored
        with (decoding.json); a request's beam_size, length_penalty or max_output_ratio overrides them."""
        params = params or {}
        decoding = self.translator.decoding.override(**{k: params.get(k) for k in DECODING_PARAMS})
        return self.translator.translate(_texts(model_input), decoding, params.get("batch_size"))


mlflow.models.set_model(AlignflowTranslator())
