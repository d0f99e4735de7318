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

``exclusions`` (query text -> item texts) names further items that are never a group's
negatives: in the recommendation task, a customer's other purchases before the cut are not
negatives of that customer's examples. They are passed to the sampler as its ``exclude`` rows,
and :class:`SampledBatch` carries them on (``excluded``) so that
:func:`~shopaug.train.trainable.build_candidates` leaves them out of the group's own and
in-batch negatives as well: a left-out column scores like a padding cell, ``-inf`` in the
softmax, so the masked loss never pushes such an item down for that query.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping, Sequence
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
        excluded: Per group, the item texts that must not be scored as its negatives (its
            query's ``NegativeSampling.exclusions``); ``None`` without exclusions.
    """

    examples: list[TrainingExample]
    items: np.ndarray
    log_q: list[dict[str, float]] | None
    excluded: list[frozenset[str]] | None = None

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
        exclusions: Query text -> item texts never drawn for (nor scored as negatives of) the
            groups with that query, e.g. a customer's other purchases; texts outside
            ``catalog`` are still kept out of the candidate rows. ``None``: only each group's
            positive is excluded.

    Raises:
        ConfigError: If ``n`` is not a positive integer, or the catalog and the sampler differ
            in size.
    """

    catalog: Sequence[str]
    sampler: NegativeSampler
    n: int
    log_q_correction: bool = False
    exclusions: Mapping[str, Collection[str]] | None = None

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

    @cached_property
    def _excluded(self) -> dict[str, tuple[frozenset[str], np.ndarray]]:
        """Query -> (excluded texts, their catalog rows as a sorted int64 array)."""
        excluded: dict[str, tuple[frozenset[str], np.ndarray]] = {}
        for query, texts in (self.exclusions or {}).items():
            kept = frozenset(texts)
            rows = sorted({self._rows[text] for text in kept if text in self._rows})
            excluded[query] = (kept, np.array(rows, dtype=np.int64))
        return excluded

    def check_loss(self, loss: str) -> None:
        """Raise :class:`ConfigError` if the logQ correction is on and ``loss`` cannot take it."""
        if self.log_q_correction and loss not in LOG_Q_LOSSES:
            raise ConfigError(
                f"NegativeSampling.log_q_correction needs TrainConfig.loss in "
                f"{sorted(LOG_Q_LOSSES)}, got {loss!r}; set log_q_correction=False"
            )

    def fingerprint(self) -> str:
        """sha256 of what decides the draws: catalog, sampler kind and probabilities, n, logQ,
        exclusions."""
        digest = hashlib.sha256()
        for text in self.catalog:
            digest.update(text.encode())
            digest.update(b"\n")
        digest.update(f"{type(self.sampler).__name__}:{self.n}:{self.log_q_correction}".encode())
        probabilities = getattr(self.sampler, "probabilities", None)
        if probabilities is not None:
            digest.update(np.ascontiguousarray(probabilities, dtype=np.float64).tobytes())
        for query in sorted(self._excluded):
            digest.update(f"\x00{query}\x00".encode())
            digest.update("\n".join(sorted(self._excluded[query][0])).encode())
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
        empty = (frozenset[str](), np.empty(0, dtype=np.int64))
        excluded = [self._excluded.get(example.query, empty) for example in batch]
        sample = self.sampler.sample(
            query_rows=np.arange(len(batch), dtype=np.int64),
            positive_rows=positive_rows,
            n=self.n,
            rng=rng,
            exclude=[rows for _, rows in excluded] if self._excluded else None,
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
            excluded=[texts for texts, _ in excluded] if self._excluded else None,
        )
