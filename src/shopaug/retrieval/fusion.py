"""A trained bi-encoder fused with BM25: reciprocal-rank fusion and a convex score fusion.

Both work on runs (query id -> ranked ``[(product id, score)]``): RRF scores a product
``sum_r 1 / (k + rank_r)``; the convex fusion scores it ``w * dense + (1 - w) * bm25`` after
min-max normalising each run's scores per query (a product missing from one run gets 0 there).
The convex weight is picked on validation queries, never on the queries a figure reports.

``shopaug run`` evaluates the fusions (:mod:`shopaug.experiment.runner`) and, when one is
chosen, writes it beside the served model as ``model/fusion.json``::

    {"method": "convex", "weight": 0.6}      or      {"method": "rrf"}

:func:`read_fusion` reads it into a :class:`FusionSpec`, which the service ranks with
(:mod:`shopaug.serve.catalog_backend`), so a served query is fused as the evaluation fused it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from shopaug.errors import ConfigError

if TYPE_CHECKING:
    from shopaug.retrieval.retrievers import BM25Retriever

Run = dict[str, list[tuple[str, float]]]

#: The fusion written beside a served model.
FUSION_FILE = "fusion.json"
FUSION_METHODS = ("convex", "rrf")
#: Results of each run fused per query (``fusion.depth`` of ``shopaug run``).
DEFAULT_FUSION_DEPTH = 200
DEFAULT_RRF_K = 60.0


def rrf_scores(
    rankings: Sequence[np.ndarray], *, rrf_k: float = DEFAULT_RRF_K
) -> tuple[np.ndarray, np.ndarray]:
    """RRF of rankings of integer keys (catalog rows, say), each best first: the distinct keys
    ``(m,)`` and their scores ``sum_r 1 / (rrf_k + rank_r)`` ``(m,)`` (float64, added run after
    run in ``rankings`` order, as :func:`rrf_fuse` adds them)."""
    keys, slots = np.unique(
        np.concatenate([*rankings, np.zeros(0, dtype=np.int64)]), return_inverse=True
    )
    scores = np.zeros(len(keys))
    start = 0
    for ranking in rankings:
        ranks = np.arange(1, len(ranking) + 1)
        np.add.at(scores, slots[start : start + len(ranking)], 1.0 / (rrf_k + ranks))
        start += len(ranking)
    return keys, scores


def convex_scores(
    dense: tuple[np.ndarray, np.ndarray], bm25: tuple[np.ndarray, np.ndarray], *, weight: float
) -> tuple[np.ndarray, np.ndarray]:
    """The convex fusion of two rankings of integer keys, each ``(keys, scores)``: the distinct
    keys ``(m,)`` and ``weight * dense + (1 - weight) * bm25`` of the per-ranking min-max
    normalised scores ``(m,)`` (a key missing from one ranking gets 0 there; a ranking whose
    scores are all equal normalises to 1)."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"weight must be in [0, 1], got {weight}")
    keys, slots = np.unique(np.concatenate([dense[0], bm25[0]]), return_inverse=True)
    parts = []
    for (ranked, values), part in zip((dense, bm25), np.split(slots, [len(dense[0])])):
        normalised = np.zeros(len(keys))
        if len(ranked):
            values = np.asarray(values, dtype=np.float64)
            low, high = values.min(), values.max()
            span = high - low
            normalised[part] = (values - low) / span if span > 0 else 1.0
        parts.append(normalised)
    return keys, weight * parts[0] + (1.0 - weight) * parts[1]


def best_keys(
    keys: np.ndarray, scores: np.ndarray, *, tie_keys: np.ndarray, depth: int
) -> tuple[np.ndarray, np.ndarray]:
    """The ``depth`` best ``keys`` by score and their scores, each ``(<= depth,)``; equal
    scores are ordered by ``tie_keys[key]`` (the rank of the product id, so ties fall as in
    :func:`rrf_fuse` and :func:`convex_fuse`)."""
    order = np.lexsort((tie_keys[keys], -scores))[:depth]
    return keys[order], scores[order]


def _fuse_ids(
    runs: Sequence[list[tuple[str, float]]],
    depth: int,
    fuse: Callable[[list[tuple[np.ndarray, np.ndarray]]], tuple[np.ndarray, np.ndarray]],
) -> list[tuple[str, float]]:
    """One query's runs fused by ``fuse`` over integer keys: the product ids numbered in
    sorted order, so the key is its own tie-break."""
    ids = sorted({pid for run in runs for pid, _ in run})
    number = {pid: i for i, pid in enumerate(ids)}
    arrays = [
        (
            np.array([number[pid] for pid, _ in run], dtype=np.int64),
            np.array([score for _, score in run], dtype=np.float64),
        )
        for run in runs
    ]
    keys, scores = fuse(arrays)
    keys, scores = best_keys(keys, scores, tie_keys=np.arange(len(ids)), depth=depth)
    return [(ids[key], float(score)) for key, score in zip(keys.tolist(), scores.tolist())]


def rrf_fuse(runs: Sequence[Run], *, depth: int, rrf_k: float = 60.0) -> Run:
    """Reciprocal-rank fusion (Cormack et al. 2009) of ``runs``, ties broken by product id
    (:func:`rrf_scores` per query)."""

    def fuse(arrays: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
        return rrf_scores([keys for keys, _ in arrays], rrf_k=rrf_k)

    return {qid: _fuse_ids([run.get(qid, []) for run in runs], depth, fuse) for qid in runs[0]}


def convex_fuse(dense: Run, bm25: Run, *, weight: float, depth: int) -> Run:
    """``weight * dense + (1 - weight) * bm25`` of per-query min-max normalised scores
    (:func:`convex_scores` per query), ties broken by product id."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"weight must be in [0, 1], got {weight}")

    def fuse(arrays: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
        return convex_scores(arrays[0], arrays[1], weight=weight)

    return {qid: _fuse_ids([dense.get(qid, []), bm25.get(qid, [])], depth, fuse) for qid in dense}


def pick_weight(
    dense: Run,
    bm25: Run,
    *,
    weights: Sequence[float],
    depth: int,
    score: Callable[[Run], float],
) -> float:
    """The weight of ``weights`` whose convex fusion scores best (``score`` reads validation
    queries only); the smallest weight wins a tie."""
    best_weight, best_value = weights[0], float("-inf")
    for weight in weights:
        value = score(convex_fuse(dense, bm25, weight=weight, depth=depth))
        if value > best_value + 1e-12:
            best_weight, best_value = weight, value
    return float(best_weight)


@dataclass(frozen=True)
class FusionSpec:
    """How a dense run and a BM25 run are fused (the content of ``fusion.json``).

    Attributes:
        method: ``"convex"`` or ``"rrf"``.
        weight: the dense side's weight of the convex fusion (None for RRF).
        depth: results of each run fused per query.
        rrf_k: the RRF constant.
    """

    method: str
    weight: float | None = None
    depth: int = DEFAULT_FUSION_DEPTH
    rrf_k: float = DEFAULT_RRF_K

    def __post_init__(self) -> None:
        if self.method not in FUSION_METHODS:
            raise ValueError(f"method must be one of {FUSION_METHODS}, got {self.method!r}")
        if self.method == "convex" and (self.weight is None or not 0.0 <= self.weight <= 1.0):
            raise ValueError(f"a convex fusion needs a weight in [0, 1], got {self.weight!r}")
        if self.depth < 1:
            raise ValueError(f"depth must be 1 or more, got {self.depth}")

    def fuse(self, dense: Run, bm25: Run, *, depth: int) -> Run:
        """The fused run, ``depth`` results per query of ``dense``."""
        if self.method == "rrf":
            return rrf_fuse([dense, bm25], depth=depth, rrf_k=self.rrf_k)
        assert self.weight is not None  # checked in __post_init__
        return convex_fuse(dense, bm25, weight=self.weight, depth=depth)

    def fuse_rows(
        self,
        dense: tuple[np.ndarray, np.ndarray],
        bm25: tuple[np.ndarray, np.ndarray],
        *,
        tie_keys: np.ndarray,
        depth: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        """One query's fusion over catalog rows: ``dense`` and ``bm25`` are ``(rows,
        scores)`` best first (no padding), ``tie_keys[row]`` the rank of the row's product id;
        the best ``depth`` rows and their fused scores, as :meth:`fuse` ranks the same runs."""
        if self.method == "rrf":
            keys, scores = rrf_scores([dense[0], bm25[0]], rrf_k=self.rrf_k)
        else:
            assert self.weight is not None  # checked in __post_init__
            keys, scores = convex_scores(dense, bm25, weight=self.weight)
        return best_keys(keys, scores, tie_keys=tie_keys, depth=depth)

    def describe(self) -> str:
        """``dense + bm25 (convex, weight 0.6)`` or ``dense + bm25 (rrf)``."""
        if self.method == "rrf":
            return "dense + bm25 (rrf)"
        return f"dense + bm25 (convex, weight {self.weight:g})"

    def to_json(self) -> dict[str, Any]:
        payload: dict[str, Any] = {"method": self.method, "depth": self.depth}
        if self.method == "convex":
            payload["weight"] = self.weight
        else:
            payload["rrf_k"] = self.rrf_k
        return payload


def bm25_run(
    bm25: BM25Retriever,
    product_ids: Sequence[str],
    queries: dict[str, str],
    *,
    depth: int,
) -> Run:
    """BM25's top ``depth`` of each query (query id -> text); ``product_ids[row]`` names a row
    of the catalog ``bm25`` indexes. Products without a query term are left out."""
    query_ids = list(queries)
    rows, scores = bm25.search([queries[q] for q in query_ids], depth)  # (n_queries, depth)
    return {
        qid: [(product_ids[int(r)], float(s)) for r, s in zip(rows[i], scores[i]) if int(r) >= 0]
        for i, qid in enumerate(query_ids)
    }


def read_fusion(model_dir: str | Path) -> FusionSpec | None:
    """The :class:`FusionSpec` in ``model_dir/fusion.json``, or None when there is no file.

    The file holds ``method`` (``"convex"`` with ``weight`` in [0, 1], or ``"rrf"``) and
    optionally ``depth`` (default 200) and ``rrf_k`` (default 60).

    Raises:
        ConfigError: the file is not such an object; the message names the file and field.
    """
    path = Path(model_dir) / FUSION_FILE
    if not path.is_file():
        return None
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(payload, dict):
        raise ConfigError(f"{path}: expected a JSON object with a 'method', got {payload!r}")
    unknown = sorted(set(payload) - {"method", "weight", "depth", "rrf_k"})
    if unknown:
        raise ConfigError(
            f"{path}: unknown fields {unknown}; expected method, weight, depth, rrf_k"
        )
    method = payload.get("method")
    if method not in FUSION_METHODS:
        raise ConfigError(f"{path}: field 'method' must be one of {FUSION_METHODS}, got {method!r}")
    weight = payload.get("weight")
    if method == "convex" and (
        not isinstance(weight, int | float) or isinstance(weight, bool) or not 0 <= weight <= 1
    ):
        raise ConfigError(f"{path}: field 'weight' must be a number in [0, 1], got {weight!r}")
    depth = payload.get("depth", DEFAULT_FUSION_DEPTH)
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
        raise ConfigError(f"{path}: field 'depth' must be a positive integer, got {depth!r}")
    rrf_k = payload.get("rrf_k", DEFAULT_RRF_K)
    if not isinstance(rrf_k, int | float) or isinstance(rrf_k, bool) or rrf_k <= 0:
        raise ConfigError(f"{path}: field 'rrf_k' must be a positive number, got {rrf_k!r}")
    return FusionSpec(
        method=str(method),
        weight=None if method == "rrf" else float(weight),  # type: ignore[arg-type]
        depth=depth,
        rrf_k=float(rrf_k),
    )
