"""The registered MLflow model, as code (models-from-code): weights, tokenizers and the model config are
artifacts read once in `load_context`; nothing is unpickled. No import-time side effects beyond set_model."""

from typing import Any

import mlflow
from mlflow.pyfunc import PythonModel


class AlignflowTranslator(PythonModel):
    def load_context(self, context: Any) -> None:
        from training.translator import Translator

        a = context.artifacts
        self.translator = Translator.from_files(a["weights"], a["model_config"], a["src_tokenizer"],
                                                a["tgt_tokenizer"])

    def predict(self, model_input: list[str], params: dict[str, Any] | None = None) -> list[str]:
        return self.translator.translate([str(t) for t in model_input])


mlflow.models.set_model(AlignflowTranslator())
