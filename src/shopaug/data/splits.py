"""Query-level k-fold splits: a query's judgments are all in train or all in test."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from shopaug.errors import ConfigError


@dataclass(frozen=True)
class Fold:
    index: int
    train: tuple[str, ...]
    test: tuple[str, ...]


def kfold_queries(query_ids: Sequence[str], *, n_folds: int = 5, seed: int = 0) -> list[Fold]:
    """Split query ids into ``n_folds`` folds with a seeded permutation of the sorted ids.

    The result does not depend on the input order. Each query is in exactly one test fold.
    """
    ids = sorted(set(query_ids))
    if n_folds < 2:
        raise ConfigError(f"folds must be at least 2, got {n_folds}")
    if len(ids) < n_folds:
        raise ConfigError(f"{len(ids)} queries cannot be split into {n_folds} folds")
    order = np.random.default_rng(seed).permutation(len(ids))
    parts = np.array_split(order, n_folds)
    folds = []
    for index, part in enumerate(parts):
        test = sorted(ids[i] for i in part)
        test_set = set(test)
        folds.append(
            Fold(index=index, train=tuple(q for q in ids if q not in test_set), test=tuple(test))
        )
    return folds


def validation_split(
    train_ids: Sequence[str], *, fraction: float = 0.1, seed: int = 0
) -> tuple[list[str], list[str]]:
    """Carve a validation set from the train folds: (train, validation), both sorted."""
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"validation fraction must be in (0, 1), got {fraction}")
    ids = sorted(train_ids)
    n_valid = max(1, round(len(ids) * fraction))
    order = np.random.default_rng(seed + 1_000_003).permutation(len(ids))
    valid = sorted(ids[i] for i in order[:n_valid])
    valid_set = set(valid)
    return [q for q in ids if q not in valid_set], valid


def write_folds(folds: Sequence[Fold], path: str | Path, *, seed: int) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"seed": seed, "folds": [asdict(fold) for fold in folds]}
    path.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    return path
