"""Extra negatives for each training batch, drawn through the sampler protocol.

``fit(..., negative_sampling=NegativeSampling(...))`` asks a
:class:`~shopaug.samplers.NegativeSampler` for ``n`` catalog items per group at every step,
appends their texts to the group's own negatives (before
:func:`~shopaug.train.trainable.build_candidates`, so in-batch sharing and de-duplication apply
to them as to any negative) and, with ``log_q_correction``, gives the InfoNCE loss the sampled
columns' log proposal probabilities (0 in the positive, own and in-batch columns)::

    from shopaug.samplers import SamplerConfig, build_sampler
    sampler = build_sampler(SamplerConfig(name="popularity", alpha=0.75),
                            n_items=len(catalog_texts), counts=click_counts)
    sampling = NegativeSampling(catalog=catalog_texts, sampler=sampler, n=4,
                                log_q_correction=True)
    fit(model, examples, config, run_dir=..., negative_sampling=sampling)

Each step's generator is seeded by ``(config.seed, step)`` only, so a resumed run draws what an
uninterrupted one would have drawn (for samplers without state between calls: every sampler
but ``dynamic``, whose score cache and refresh counter are not checkpointed).

Positives are mapped to catalog rows by their text (the first row of a repeated text) and never
come back as their group's negatives. The protocol always excludes a positive row, so a positive
that is not in the catalog is given a stand-in row drawn by the same generator: that one random
item is left out of its group's draw.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np
import torch

from shopaug.errors import ConfigError
from shopaug.samplers import NegativeSampler
from shopaug.samplers.base import check_int
from shopaug.train.config import TrainingExample
from shopaug.train.trainable import CandidateBatch

SAMPLING_STREAM = 2
"""Third seed word of a step's generator, ``[seed, step, 2]``: apart from :func:`epoch_order`'s
``[seed, epoch]`` and the length-bucket shuffle's ``[seed, epoch, 1]``."""

LOG_Q_LOSSES = frozenset({"infonce"})
"""Losses (``TrainConfig.loss``) that take a ``log_q`` correction."""


@dataclass(frozen=True)
class SampledBatch:
    """One step's batch with its sampled negatives appended.

    Attributes:
        examples: The batch's groups, each with its ``n`` sampled texts after its own negatives.
        items: ``(batch, n)`` int64 catalog rows drawn for each group.
        log_q: Per group, the sampled text -> log proposal probability; ``None`` without the
            logQ correction.
    """

    examples: list[TrainingExample]
    items: np.ndarray
    log_q: list[dict[str, float]] | None

    def log_q_columns(self, candidates: CandidateBatch, *, like: torch.Tensor) -> torch.Tensor:
        """``(batch, width)`` log_q of the candidate columns, in ``like``'s dtype and device.

        A column holds its sampled text's log_q when that text was drawn for the row and is not
        one of the row's own negatives; the positive, own, in-batch and padding columns hold 0.
        """
        values = torch.zeros(like.shape, dtype=like.dtype)
        if self.log_q is not None:
            for row, (texts, drawn) in enumerate(
                zip(candidates.candidates, self.log_q, strict=True)
            ):
                for column, text in enumerate(texts[1:], start=1):
                    if text in drawn:
                        values[row, column] = drawn[text]
        return values.to(like.device)


@dataclass(frozen=True)
class NegativeSampling:
    """How :func:`~shopaug.train.fit` draws each group's extra negatives.

    Attributes:
        catalog: Item texts; text ``i`` is the item of sampler row ``i``.
        sampler: Built by :func:`shopaug.samplers.build_sampler` (or any
            :class:`~shopaug.samplers.NegativeSampler`) over ``len(catalog)`` items.
        n: Negatives drawn per group and step, at least 1.
        log_q_correction: Subtract the sampled columns' ``log_q`` from their logits
            (InfoNCE only; Yi et al., RecSys 2019).

    Raises:
        ConfigError: If ``n`` is not a positive integer, or the catalog and the sampler differ
            in size.
    """

    catalog: Sequence[str]
    sampler: NegativeSampler
    n: int
    log_q_correction: bool = False

    def __post_init__(self) -> None:
        check_int(self.n, name="NegativeSampling.n (negatives per group)", minimum=1)
        if len(self.catalog) != self.sampler.n_items:
            raise ConfigError(
                f"NegativeSampling.catalog has {len(self.catalog)} texts but the sampler draws "
                f"from {self.sampler.n_items} items; build the sampler with "
                "n_items=len(catalog)"
            )

    @cached_property
    def _rows(self) -> dict[str, int]:
        rows: dict[str, int] = {}
        for row, text in enumerate(self.catalog):
            rows.setdefault(text, row)
        return rows

    def check_loss(self, loss: str) -> None:
        """Raise :class:`ConfigError` if the logQ correction is on and ``loss`` cannot take it."""
        if self.log_q_correction and loss not in LOG_Q_LOSSES:
            raise ConfigError(
                f"NegativeSampling.log_q_correction needs TrainConfig.loss in "
                f"{sorted(LOG_Q_LOSSES)}, got {loss!r}; set log_q_correction=False"
            )

    def fingerprint(self) -> str:
        """sha256 of what decides the draws: catalog, sampler kind and probabilities, n, logQ."""
        digest = hashlib.sha256()
        for text in self.catalog:
            digest.update(text.encode())
            digest.update(b"\n")
        digest.update(f"{type(self.sampler).__name__}:{self.n}:{self.log_q_correction}".encode())
        probabilities = getattr(self.sampler, "probabilities", None)
        if probabilities is not None:
            digest.update(np.ascontiguousarray(probabilities, dtype=np.float64).tobytes())
        return digest.hexdigest()

    def draw(self, batch: Sequence[TrainingExample], *, seed: int, step: int) -> SampledBatch:
        """Draw ``n`` negatives per group of ``batch`` with a generator seeded by ``(seed, step)``.

        Returns:
            The groups with the sampled texts appended to their negatives.
        """
        rng = np.random.default_rng([seed, step, SAMPLING_STREAM])
        known = [self._rows.get(example.positive) for example in batch]
        positive_rows = np.array(
            [row if row is not None else int(rng.integers(self.sampler.n_items)) for row in known],
            dtype=np.int64,
        )
        sample = self.sampler.sample(
            query_rows=np.arange(len(batch), dtype=np.int64),
            positive_rows=positive_rows,
            n=self.n,
            rng=rng,
        )
        examples: list[TrainingExample] = []
        log_q: list[dict[str, float]] = []
        for example, items, item_log_q in zip(batch, sample.items, sample.log_q, strict=True):
            texts = [self.catalog[item] for item in items.tolist()]
            examples.append(replace(example, negatives=[*example.negatives, *texts]))
            own = set(example.negatives)
            log_q.append(
                {
                    text: float(value)
                    for text, value in zip(texts, item_log_q.tolist(), strict=True)
                    if text not in own
                }
            )
        return SampledBatch(
            examples=examples,
            items=sample.items,
            log_q=log_q if self.log_q_correction else None,
        )
