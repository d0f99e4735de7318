"""The MLflow pyfunc model of a shopaug model directory (logged from code, never pickled).

:func:`shopaug.train.tracking.log_model_dir` logs this file as the model's code and the
model directory as its ``model_dir`` artifact; ``mlflow.pyfunc.load_model`` runs the file, whose
last line names the model. ``predict`` takes a frame with a ``text`` column and returns the
float32 vectors ``(n, dim)`` of the query encoder, or of the catalog (item) encoder with
``params={"side": "item"}`` (they differ for a query tower). Loading needs ``shopaug[train]``.

Example:
    >>> model = mlflow.pyfunc.load_model("models:/<model id>")  # doctest: +SKIP
    >>> model.predict(pd.DataFrame({"text": ["red sofa"]})).shape  # doctest: +SKIP
    (1, 384)
"""

from __future__ import annotations

from typing import Any

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel

SIDES = ("query", "item")


class ShopaugEncoderModel(PythonModel):
    """Texts -> vectors with the towers of a shopaug model directory."""

    def load_context(self, context: Any) -> None:
        from shopaug.models.model_dir import load_towers

        self._towers = load_towers(context.artifacts["model_dir"])

    # no type hints on the inputs: MLflow would read them as a schema; the logged signature is it
    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        side = (params or {}).get("side", "query")
        if side not in SIDES:
            raise ValueError(f"params side must be one of {SIDES}, got {side!r}")
        if "text" not in getattr(model_input, "columns", ()):
            raise ValueError("model_input must be a frame with a 'text' column (strings)")
        encoder = self._towers.query if side == "query" else self._towers.item
        texts = [str(text) for text in model_input["text"]]
        return np.asarray(encoder.encode(texts), dtype=np.float32)  # (n, dim)


mlflow.models.set_model(ShopaugEncoderModel())
