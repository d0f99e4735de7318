"""Trainable ranking models, saved and loaded with safetensors only.

* :class:`BiEncoder`: sentence-transformers bi-encoder (MiniLM by default); an ``Encoder`` for
  retrieval and an ``EmbeddingModel`` for :func:`shopaug.train.fit`.
* :class:`CrossEncoderReranker`: MiniLM over (query, product) pairs with a linear head; a
  ``PairScoringModel`` for :func:`shopaug.train.fit`.

Both take ``lora=LoraSettings(r=...)`` to train LoRA adapters (needs ``peft``). Both import
torch; transformers and sentence-transformers load when a model is built.
"""

from __future__ import annotations

from shopaug.models.bi_encoder import BiEncoder
from shopaug.models.cross_encoder import CrossEncoderReranker
from shopaug.models.lora import LoraSettings

__all__ = ["BiEncoder", "CrossEncoderReranker", "LoraSettings"]
