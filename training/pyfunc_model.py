"""The registered MLflow model, as code (models-from-code): weights, tokenizers, the model config and the decoding
settings are artifacts read once in `load_context`; nothing is unpickled. No import-time side effects beyond
set_model."""

from typing import Any

import mlflow
from mlflow.pyfunc import PythonModel

DECODING_PARAMS = ("beam_size", "length_penalty", "max_output_ratio")


class AlignflowTranslator(PythonModel):
    def load_context(self, context: Any) -> None:
        from training.translator import Translator, read_decoding

        a = context.artifacts
        # A model registered before decoding.json existed decodes with the defaults (greedy).
        self.translator = Translator.from_files(a["weights"], a["model_config"], a["src_tokenizer"],
                                                a["tgt_tokenizer"], read_decoding(a.get("decoding")))

    # MLflow reads the type hints: it infers the signature's input and output (strings) from them and checks and
    # converts what callers send (a list, or a one-column DataFrame from `mlflow models serve`). The params schema
    # comes from the input example registry.py logs the model with.
    def predict(self, context: Any, model_input: list[str], params: dict[str, Any] | None = None) -> list[str]:
        """One translation per input, blank for blank. Params default to the settings the model was scored
        with (decoding.json); a request's beam_size, length_penalty or max_output_ratio overrides them."""
        params = params or {}
        decoding = self.translator.decoding.override(**{k: params.get(k) for k in DECODING_PARAMS})
        return self.translator.translate(model_input, decoding, params.get("batch_size"))


mlflow.models.set_model(AlignflowTranslator())
