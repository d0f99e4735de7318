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


def rrf_fuse(runs: Sequence[Run], *, depth: int, rrf_k: float = 60.0) -> Run:
    """Reciprocal-rank fusion (Cormack et al. 2009) of ``runs``, ties broken by product id."""
    fused: Run = {}
    for qid in runs[0]:
        scores: dict[str, float] = {}
        for run in runs:
            for rank, (pid, _) in enumerate(run.get(qid, []), start=1):
                scores[pid] = scores.get(pid, 0.0) + 1.0 / (rrf_k + rank)
        fused[qid] = sorted(scores.items(), key=lambda item: (-item[1], item[0]))[:depth]
    return fused


def _normalised(ranked: list[tuple[str, float]]) -> dict[str, float]:
    if not ranked:
        return {}
    values = [score for _, score in ranked]
    low, high = min(values), max(values)
    span = high - low
    return {pid: (score - low) / span if span > 0 else 1.0 for pid, score in ranked}


def convex_fuse(dense: Run, bm25: Run, *, weight: float, depth: int) -> Run:
    """``weight * dense + (1 - weight) * bm25`` of per-query min-max normalised scores."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"weight must be in [0, 1], got {weight}")
    fused: Run = {}
    for qid in dense:
        a, b = _normalised(dense.get(qid, [])), _normalised(bm25.get(qid, []))
        scores = {
            pid: weight * a.get(pid, 0.0) + (1.0 - weight) * b.get(pid, 0.0) for pid in a.keys() | b
        }
        fused[qid] = sorted(scores.items(), key=lambda item: (-item[1], item[0]))[:depth]
    return fused


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
