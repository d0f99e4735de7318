"""What the loop needs from a model, and how it turns a batch of groups into scores.

Two kinds of model train here, told apart by their methods (structural typing, no base class):

* :class:`EmbeddingModel` (a bi-encoder): ``embed(texts)`` gives one vector per text; the score
  of a (query, item) pair is the dot product of their vectors (the cosine when they are
  normalised).
* :class:`PairScoringModel` (a cross-encoder): ``score_pairs(queries, documents)`` gives one
  score per pair.
* :class:`TwoTowerModel` (an asymmetric bi-encoder, e.g. a query tower trained against frozen
  item vectors): ``embed_queries(texts)`` and ``embed_items(texts)``; the score is the dot
  product of a query vector and an item vector. A model with both towers is scored through them
  even when it also has ``embed``.

A model that tokenises (:class:`SequenceLengthModel`) also lets the loop size its training
sequence length from the data.

Both are ``torch.nn.Module`` s (the loop uses ``parameters``, ``state_dict``,
``load_state_dict``, ``train`` and ``eval``) with a ``save(directory)`` that writes safetensors.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from shopaug.train.config import TrainingExample

logger = logging.getLogger(__name__)


@runtime_checkable
class EmbeddingModel(Protocol):
    """A trainable bi-encoder: ``embed`` is differentiable, ``save`` writes safetensors."""

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """Vectors ``(len(texts), dim)`` with gradients."""
        ...

    def save(self, directory: str | Path) -> None:
        """Write the model (safetensors weights and whatever is needed to load it)."""
        ...


@runtime_checkable
class PairScoringModel(Protocol):
    """A trainable cross-encoder: ``score_pairs`` is differentiable, ``save`` writes safetensors."""

    def score_pairs(self, queries: Sequence[str], documents: Sequence[str]) -> torch.Tensor:
        """Scores ``(len(queries),)`` of the aligned (query, document) pairs, with gradients."""
        ...

    def save(self, directory: str | Path) -> None:
        """Write the model (safetensors weights and whatever is needed to load it)."""
        ...


@runtime_checkable
class TwoTowerModel(Protocol):
    """A trainable two-tower model: queries and items have their own encoders.

    Either tower may be frozen (the item side may even be a lookup of cached vectors); the
    vectors of both must share a dimension, and their dot product is the score.
    """

    def embed_queries(self, texts: Sequence[str]) -> torch.Tensor:
        """Query vectors ``(len(texts), dim)``."""
        ...

    def embed_items(self, texts: Sequence[str]) -> torch.Tensor:
        """Item vectors ``(len(texts), dim)``."""
        ...

    def save(self, directory: str | Path) -> None:
        """Write the model (safetensors weights and whatever is needed to load it)."""
        ...


@runtime_checkable
class SequenceLengthModel(Protocol):
    """A model whose training inputs are token sequences of a length the loop may choose."""

    @property
    def max_sequence_length(self) -> int:
        """The longest input the model reads (the cap of any training length)."""
        ...

    def token_counts(self, texts: Sequence[str]) -> np.ndarray:
        """Tokens per text, special tokens included, before truncation: ``(len(texts),)``."""
        ...

    def set_train_sequence_length(self, length: int) -> None:
        """Truncate training inputs at ``length`` tokens."""
        ...


TRAINABLE_MODELS = (TwoTowerModel, EmbeddingModel, PairScoringModel)
"""The kinds :func:`score_batch` scores, in the order it tries them."""


@dataclass(frozen=True)
class CandidateBatch:
    """The candidates of each group of a batch, positive first, without padding.

    Attributes:
        queries: One query per row.
        candidates: Per row: the positive, then the negatives (own, then in-batch ones).
        weights: Per-row weights.
    """

    queries: list[str]
    candidates: list[list[str]]
    weights: list[float]

    @property
    def width(self) -> int:
        """Columns of the padded score matrix: the longest candidate list."""
        return max(len(row) for row in self.candidates)

    def mask(self, device: torch.device | None = None) -> torch.Tensor:
        """Bool ``(batch, width)``; False marks padding."""
        mask = torch.zeros(len(self.candidates), self.width, dtype=torch.bool, device=device)
        for row, texts in enumerate(self.candidates):
            mask[row, : len(texts)] = True
        return mask


def build_candidates(
    examples: Sequence[TrainingExample],
    *,
    in_batch_negatives: bool,
    excluded: Sequence[Collection[str]] | None = None,
) -> CandidateBatch:
    """Lay out the candidates of each group: positive, own negatives, then in-batch negatives.

    A candidate whose text equals the row's positive (or repeats an earlier candidate of the
    row) is left out of that row: a copy of the positive scored as a negative would teach the
    model the opposite of the label, and a repeat would count one item twice in the softmax.
    Likewise the positive of another group with the same query text is not an in-batch
    negative of this row: it is relevant to the query too (a query with many judged positives
    would otherwise learn against its own positives whenever two of them share a batch).
    A text in ``excluded[i]`` (say, another purchase of row ``i``'s customer) is left out of
    row ``i`` the same way: a left-out candidate is a masked cell, ``-inf`` in a softmax.

    Args:
        examples: The groups of one batch.
        in_batch_negatives: Add the other groups' positives and negatives to each row.
        excluded: Optional, per group, texts that are never its negatives (own, sampled or
            in-batch); the group's positive stays.

    Returns:
        The candidate lists, positive first in every row.
    """
    if excluded is not None and len(excluded) != len(examples):
        raise ValueError(
            f"excluded holds {len(excluded)} collections for {len(examples)} groups; "
            "expected one per group"
        )
    rows: list[list[str]] = []
    dropped = 0
    for index, example in enumerate(examples):
        pool = list(example.negatives)
        if in_batch_negatives:
            for other_index, other in enumerate(examples):
                if other_index != index:
                    if other.query != example.query:
                        pool.append(other.positive)
                    pool.extend(other.negatives)
        row = [example.positive]
        seen = {example.positive}
        if excluded is not None:
            seen |= set(excluded[index])
        for text in pool:
            if text in seen:
                dropped += 1
                continue
            seen.add(text)
            row.append(text)
        rows.append(row)
    if dropped:
        logger.debug(
            "left out %d candidate(s) equal to a positive, excluded or repeated in a row", dropped
        )
    return CandidateBatch(
        queries=[example.query for example in examples],
        candidates=rows,
        weights=[example.weight for example in examples],
    )


def score_batch(
    model: EmbeddingModel | PairScoringModel | TwoTowerModel, batch: CandidateBatch
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores ``(batch, width)`` and mask ``(batch, width)`` of a candidate batch.

    A bi-encoder embeds the queries and each distinct candidate text once (a two-tower model
    embeds the queries with ``embed_queries`` and the candidates with ``embed_items``); a
    cross-encoder scores every valid (query, candidate) pair. Padding cells hold 0 and are False
    in the mask.

    Raises:
        TypeError: If ``model`` is none of the kinds of model.
    """
    if isinstance(model, TwoTowerModel | EmbeddingModel):
        texts: list[str] = []
        position: dict[str, int] = {}
        for row_texts in batch.candidates:
            for text in row_texts:
                if text not in position:
                    position[text] = len(texts)
                    texts.append(text)
        if isinstance(model, TwoTowerModel):
            query_vectors = model.embed_queries(batch.queries)  # (batch, dim)
            item_vectors = model.embed_items(texts)  # (unique, dim)
        else:
            query_vectors = model.embed(batch.queries)  # (batch, dim)
            item_vectors = model.embed(texts)  # (unique, dim)
        all_scores = query_vectors @ item_vectors.T  # (batch, unique)
        index = torch.zeros(len(batch.candidates), batch.width, dtype=torch.long)
        for row, candidates in enumerate(batch.candidates):
            index[row, : len(candidates)] = torch.tensor([position[t] for t in candidates])
        mask = batch.mask(all_scores.device)
        index = index.to(all_scores.device)
        scores = all_scores.gather(1, index).masked_fill(~mask, 0.0)  # (batch, width)
        return scores, mask
    if isinstance(model, PairScoringModel):
        pair_queries = [
            query for query, row in zip(batch.queries, batch.candidates, strict=True) for _ in row
        ]
        pair_documents = [text for row in batch.candidates for text in row]
        flat = model.score_pairs(pair_queries, pair_documents)  # (pairs,)
        mask = batch.mask(flat.device)
        scores = torch.zeros(mask.shape, dtype=flat.dtype, device=flat.device)
        scores = scores.masked_scatter(mask, flat)  # row-major order matches the flattening
        return scores, mask
    raise TypeError(
        f"{type(model).__name__} has neither embed(texts), embed_queries(texts) + "
        "embed_items(texts), nor score_pairs(queries, documents); see shopaug.train.trainable"
    )
