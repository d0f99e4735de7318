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


def check_fold_index(index: int, *, n_folds: int, name: str = "fold") -> int:
    """``index`` if it is a valid 0-based fold number for ``n_folds`` folds.

    Negative numbers are refused rather than counted from the end, so ``-1`` never silently
    means the last fold.

    Args:
        index: the fold number to check.
        n_folds: how many folds there are.
        name: how the caller spells the setting (``--fold`` on the command line), for the error.

    Raises:
        ConfigError: naming ``name``, the valid range and the value given.
    """
    if n_folds < 2:
        raise ConfigError(f"folds must be at least 2, got {n_folds}")
    if not 0 <= index < n_folds:
        raise ConfigError(
            f"{name} must be in 0..{n_folds - 1} (0-based, {n_folds} folds), got {index}"
        )
    return index


def select_fold(
    query_ids: Sequence[str], index: int, *, n_folds: int = 5, seed: int = 0, name: str = "fold"
) -> Fold:
    """Fold ``index`` (0-based) of :func:`kfold_queries` over ``query_ids``, range-checked.

    The index is checked (see :func:`check_fold_index`) before the split is made.

    Example:
        >>> select_fold([f"q{i}" for i in range(10)], 1, n_folds=5).index
        1
    """
    check_fold_index(index, n_folds=n_folds, name=name)
    return kfold_queries(query_ids, n_folds=n_folds, seed=seed)[index]


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


#: The folds a run writes into its directory (:func:`write_folds`), read back by
#: :meth:`shopaug.retrieval.catalog.CatalogSource.test_fold`.
FOLDS_FILE = "folds.json"


def write_folds(folds: Sequence[Fold], path: str | Path, *, seed: int) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"seed": seed, "folds": [asdict(fold) for fold in folds]}
    path.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    return path
