"""The registered MLflow model, as code (models-from-code): weights, tokenizers and the model config are
artifacts read once in `load_context`; nothing is unpickled. No import-time side effects beyond set_model."""

from typing import Any

import mlflow
from mlflow.pyfunc import PythonModel


def _texts(model_input) -> list[str]:  # noqa: ANN001 -- a list, a Series or a one-column DataFrame
    if hasattr(model_input, "iloc"):
        model_input = model_input.iloc[:, 0] if model_input.ndim == 2 else model_input
    return [str(t) for t in model_input]


class AlignflowTranslator(PythonModel):
    def load_context(self, context: Any) -> None:
        from training.translator import Translator

        a = context.artifacts
        self.translator = Translator.from_files(a["weights"], a["model_config"], a["src_tokenizer"],
                                                a["tgt_tokenizer"])

    # No type hints on model_input on purpose: MLflow would then infer the signature from them and drop the
    # `beam_size` params schema that registry.py logs explicitly (list[str] -> list[str], params beam_size).
    def predict(self, context, model_input, params=None):  # noqa: ANN001, ANN201
        beam_size = int((params or {}).get("beam_size", 1))
        return self.translator.translate(_texts(model_input), beam_size=beam_size)


mlflow.models.set_model(AlignflowTranslator())
