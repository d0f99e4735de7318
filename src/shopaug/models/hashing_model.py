"""A hashing model with a trainable linear map: the small model of tests and demos.

See :mod:`shopaug.models.model_dir` for the directory layout. The map starts as the identity,
so an untrained model gives exactly the :class:`~shopaug.encoders.base.HashingEncoder`
vectors; fine-tuning moves it like any other bi-encoder (it is an ``EmbeddingModel``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.numpy import save_file
from torch import nn

from shopaug.encoders.base import HashingEncoder
from shopaug.errors import ConfigError
from shopaug.models.model_dir import (
    DEFAULT_HASHING_DIM,
    HASHING_KIND,
    MODEL_DESCRIPTOR,
    PROJECTION_FILE,
    hashing_model_id,
    read_descriptor,
    read_projection,
    write_hashing_model,
)


class HashingProjection(nn.Module):
    """``normalize(W @ hashing_features(text))``; an Encoder and a trainable EmbeddingModel.

    Args:
        dim: hashing buckets and output size.
        weight: the map ``W``, shape ``(dim, dim)``; default the identity.

    Example:
        >>> model = HashingProjection(64)
        >>> model.encode(["blue sofa"]).shape
        (1, 64)
    """

    def __init__(self, dim: int = DEFAULT_HASHING_DIM, weight: np.ndarray | None = None) -> None:
        super().__init__()
        self.features = HashingEncoder(dim)
        self.linear = nn.Linear(dim, dim, bias=False)
        with torch.no_grad():
            if weight is None:
                self.linear.weight.copy_(torch.eye(dim))
            else:
                self.linear.weight.copy_(torch.from_numpy(np.asarray(weight, dtype=np.float32)))

    @property
    def id(self) -> str:
        """:func:`~shopaug.models.model_dir.hashing_model_id` of ``W`` (the version of the
        directory :meth:`save` writes); changes when training changes ``W``."""
        return hashing_model_id(self.linear.weight.detach().cpu().numpy())

    @property
    def dim(self) -> int:
        return int(self.features.dim)

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """Differentiable L2-normalised vectors ``(len(texts), dim)``."""
        features = torch.from_numpy(self.features.encode(list(texts)))  # (batch, dim)
        return F.normalize(self.linear(features), dim=-1)  # (batch, dim)

    def encode(self, texts: Sequence[str], *, show_progress: bool = False) -> np.ndarray:
        """L2-normalised float32 vectors ``(len(texts), dim)``, without gradients."""
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        with torch.no_grad():
            return self.embed(texts).cpu().numpy().astype(np.float32)

    def save(self, directory: str | Path) -> None:
        """Write the descriptor and ``projection.safetensors`` into ``directory``."""
        directory = write_hashing_model(directory, self.dim)
        weight = np.ascontiguousarray(self.linear.weight.detach().cpu().numpy())
        save_file({"weight": weight}, str(directory / PROJECTION_FILE))

    @classmethod
    def load(cls, directory: str | Path) -> HashingProjection:
        """Read a hashing model directory (identity map when it has no weights file).

        Raises:
            FileNotFoundError: there is no descriptor.
            ConfigError: the descriptor is malformed or of another kind, or the weights do
                not have the descriptor's shape.
        """
        directory = Path(directory)
        descriptor = read_descriptor(directory)
        if descriptor is None:
            raise FileNotFoundError(f"{directory / MODEL_DESCRIPTOR} does not exist")
        if descriptor["kind"] != HASHING_KIND:
            raise ConfigError(
                f"{directory / MODEL_DESCRIPTOR}: kind {descriptor['kind']!r}, expected "
                f"{HASHING_KIND!r}"
            )
        dim = int(descriptor["dim"])
        return cls(dim, read_projection(directory, dim))
