"""Trainable ranking models and model directories; weights saved and loaded with safetensors.

* :class:`BiEncoder`: sentence-transformers bi-encoder (MiniLM by default); an ``Encoder`` for
  retrieval and an ``EmbeddingModel`` for :func:`shopaug.train.fit`.
* :class:`CrossEncoderReranker`: MiniLM over (query, product) pairs with a linear head; a
  ``PairScoringModel`` for :func:`shopaug.train.fit`.
* :mod:`shopaug.models.model_dir`: a model directory -> an encoder or a trainable model with
  ONE id (:func:`~shopaug.models.model_dir.model_version`);
  :mod:`shopaug.models.hashing_model`: the small hashing model of tests and demos;
  :mod:`shopaug.models.registry`: a run's model versions and its ``current`` pointer.

Both models take ``lora=LoraSettings(r=...)`` to train LoRA adapters (needs ``peft``). The
classes are imported on first use, so ``import shopaug.models.model_dir`` (what the service
needs) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shopaug.models.bi_encoder import BiEncoder
    from shopaug.models.cross_encoder import CrossEncoderReranker
    from shopaug.models.lora import LoraSettings

__all__ = ["BiEncoder", "CrossEncoderReranker", "LoraSettings"]

_HOMES = {
    "BiEncoder": "shopaug.models.bi_encoder",
    "CrossEncoderReranker": "shopaug.models.cross_encoder",
    "LoraSettings": "shopaug.models.lora",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'shopaug.models' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
