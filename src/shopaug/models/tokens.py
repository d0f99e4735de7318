"""Tokenise each text once, pad per batch, and size the sequence length from the data.

Training visits the same product texts many times (every epoch, and as in-batch negatives of
other groups), and a Hugging Face tokenizer call costs about as much per text as a short
forward pass on two CPU cores. :class:`TokenCache` keeps each text's token ids, so a text is
tokenised the first time it is seen and only looked up afterwards; a batch is padded to its own
longest member, not to a fixed length. :func:`length_covering` picks the smallest maximum length
that leaves a given share of the texts untruncated (product titles are short: all-MiniLM's 256
tokens would mostly be padding budget that is never used).

Example:
    >>> cache = TokenCache(tokenizer, max_length=64)  # doctest: +SKIP
    >>> batch = cache.batch(["blue velvet sofa", "oak desk"])  # doctest: +SKIP
    >>> batch["input_ids"].shape  # doctest: +SKIP
    torch.Size([2, 5])
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)


def length_covering(token_counts: Sequence[int] | np.ndarray, *, coverage: float, cap: int) -> int:
    """The smallest length ``L <= cap`` such that at least ``coverage`` of the counts are ``<= L``.

    Args:
        token_counts: Token count of each text, special tokens included.
        coverage: Share of texts that must fit untruncated, in ``(0, 1]``.
        cap: The model's maximum length; the answer never exceeds it.

    Returns:
        The length (at least 1).

    Raises:
        ValueError: If ``token_counts`` is empty, ``coverage`` is outside ``(0, 1]`` or ``cap``
            is below 1.

    Example:
        >>> length_covering([3, 5, 5, 9], coverage=0.75, cap=128)
        5
    """
    counts = np.sort(np.asarray(token_counts, dtype=np.int64))
    if counts.size == 0:
        raise ValueError("length_covering needs at least one token count, got none")
    if not 0 < coverage <= 1:
        raise ValueError(f"coverage must be in (0, 1], got {coverage!r}")
    if cap < 1:
        raise ValueError(f"cap must be at least 1, got {cap!r}")
    needed = math.ceil(coverage * counts.size - 1e-9)  # texts that must fit
    length = int(counts[max(needed, 1) - 1])
    return max(1, min(length, cap))


class TokenCache:
    """Token ids per text, computed once; batches padded to their longest member.

    Ids are stored without special tokens and untruncated, so one cache serves any maximum
    length: :meth:`batch` truncates the content to ``max_length`` minus the special tokens and
    adds them (the tokenizer's own, found by tokenising a probe text with and without them),
    which gives what ``tokenizer(texts, truncation=True, max_length=...,
    padding=True)`` gives for a single-sequence input.

    Args:
        tokenizer: A Hugging Face tokenizer (``__call__`` with ``add_special_tokens``,
            ``pad_token_id``, ``model_input_names``, ``padding_side``).
        max_length: Longest sequence :meth:`batch` returns, special tokens included.
        max_texts: Texts kept at most; past it the oldest entries are dropped (a catalog of a
            million titles holds well under 1 GB of ids).
    """

    def __init__(self, tokenizer: Any, *, max_length: int, max_texts: int = 1_000_000) -> None:
        if max_length < 1:
            raise ValueError(f"max_length must be at least 1, got {max_length!r}")
        if max_texts < 1:
            raise ValueError(f"max_texts must be at least 1, got {max_texts!r}")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.max_texts = max_texts
        self._ids: dict[str, tuple[int, ...]] = {}
        self._prefix, self._suffix = _special_tokens(tokenizer)
        self._special = len(self._prefix) + len(self._suffix)
        pad = tokenizer.pad_token_id
        self._pad_id = 0 if pad is None else int(pad)
        self._token_types = "token_type_ids" in getattr(tokenizer, "model_input_names", ())
        self._padding_left = getattr(tokenizer, "padding_side", "right") == "left"

    def __len__(self) -> int:
        return len(self._ids)

    def ids(self, texts: Sequence[str]) -> list[tuple[int, ...]]:
        """Content ids (no special tokens, untruncated) of ``texts``; new texts in one call."""
        known = self._ids
        missing = list(dict.fromkeys(text for text in texts if text not in known))
        if not missing:
            return [known[text] for text in texts]
        encoded = self.tokenizer(missing, add_special_tokens=False, truncation=False)
        fresh = dict(zip(missing, map(tuple, encoded["input_ids"]), strict=True))
        found = [fresh[text] if text in fresh else known[text] for text in texts]
        known.update(fresh)
        overflow = len(known) - self.max_texts
        if overflow > 0:
            for text in list(itertools.islice(known, overflow)):
                del known[text]
        return found

    def counts(self, texts: Sequence[str]) -> np.ndarray:
        """Token count of each text with special tokens, before truncation; ``(len(texts),)``."""
        return np.array([len(ids) + self._special for ids in self.ids(texts)], dtype=np.int64)

    def batch(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """``input_ids``, ``attention_mask`` (and ``token_type_ids`` when the model takes them),
        each ``(len(texts), longest)`` int64, truncated to :attr:`max_length`."""
        content = max(self.max_length - self._special, 0)
        prefix, suffix = self._prefix, self._suffix
        rows = [prefix + ids[:content] + suffix for ids in self.ids(texts)]
        width = max((len(row) for row in rows), default=0)
        input_ids = torch.full((len(rows), width), self._pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for index, row in enumerate(rows):
            span = slice(width - len(row), width) if self._padding_left else slice(0, len(row))
            input_ids[index, span] = torch.tensor(row, dtype=torch.long)
            attention_mask[index, span] = 1
        features = {"input_ids": input_ids}
        if self._token_types:
            features["token_type_ids"] = torch.zeros_like(input_ids)
        features["attention_mask"] = attention_mask
        return features


def _special_tokens(tokenizer: Any) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The ids a tokenizer puts before and after one sequence's content (``[CLS]``, ``[SEP]``).

    Raises:
        ValueError: If the content does not appear whole inside the tokenised probe.
    """
    probe = "shop"
    content = list(tokenizer([probe], add_special_tokens=False)["input_ids"][0])
    full = list(tokenizer([probe], add_special_tokens=True)["input_ids"][0])
    for start in range(len(full) - len(content) + 1):
        if full[start : start + len(content)] == content:
            return tuple(full[:start]), tuple(full[start + len(content) :])
    raise ValueError(
        f"{type(tokenizer).__name__} does not keep a text's tokens whole between its special "
        "tokens; TokenCache cannot add them itself"
    )
