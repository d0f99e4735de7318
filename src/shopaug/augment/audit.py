"""Audit of augmented samples: are the negatives really negative, are they all popular items,
are there duplicates, and did anything of the test fold leak into training?

- False-negative rates: among negatives whose (query, product) pair humans judged, the share
  judged Exact (the data set's highest gain: WANDS Exact = 2), and, separately, the share judged
  Exact or Partial (any gain > 0: WANDS Exact 2 or Partial 1; WANDS judges many products
  Partial). Reported per method and per rank band. Negatives without a human judgment are
  counted as ``unjudged`` and left out of both rates.
- Popularity: the share of negatives from the tail of the catalog. Head and tail come from
  :func:`shopaug.eval.segments.popularity_segments` (the most popular 20 % of the catalog, by
  interactions, else by relevant judgments), the same split the evaluation's segments use.
- Duplicates: repeated (query, product, kind) rows, and pairs that are both positive and negative.
- Leakage: with a fold, any sample whose query id, or query text, is a test query of that fold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd

from shopaug.augment.mining import popularity_counts
from shopaug.data.records import Dataset
from shopaug.eval.segments import HEAD, popularity_segments

RANK_BANDS = ((1, 10), (11, 30), (31, 100), (101, 10**9))
HEAD_SHARE = 0.2
#: Keys of each row of :attr:`AuditReport.per_method`, in order.
PER_METHOD_KEYS = (
    "method",
    "negatives",
    "judged",
    "unjudged",
    "exact",
    "exact_or_partial",
    "fn_rate_exact",
    "fn_rate_exact_or_partial",
    "tail",
    "tail_share",
)


def _band(rank: int) -> str:
    if rank < 1:
        return "unranked"
    for low, high in RANK_BANDS:
        if low <= rank <= high:
            return f"{low}-{high}" if high < 10**9 else f"{low}+"
    return "unranked"


def head_products(
    dataset: Dataset, head_share: float = HEAD_SHARE, *, query_ids: Sequence[str] | None = None
) -> tuple[set[str], str]:
    """The head of the catalog and where its popularity came from.

    The split is :func:`shopaug.eval.segments.popularity_segments` (the top
    ``ceil(head_share * n_products)`` products, ties broken by id) over
    :func:`shopaug.augment.mining.popularity_counts`.

    Args:
        dataset: The data set whose catalog is split.
        head_share: Fraction of products in the head, in (0, 1).
        query_ids: Count popularity over these queries' judgments and interactions only;
            ``None`` (default) over the whole data set, which is fine for describing samples or
            segmenting results but not for choosing training samples.

    Returns:
        ``(head product ids, "interactions" or "judgments")``.
    """
    counts, origin = popularity_counts(dataset, query_ids=query_ids)
    popularity = {product.id: float(count) for product, count in zip(dataset.products, counts)}
    segments = popularity_segments(popularity, head_share=head_share)
    return {pid for pid, segment in segments.items() if segment == HEAD}, origin


def _rate(frame: pd.DataFrame) -> dict[str, float | int | None]:
    judged = int(frame["judged"].sum())
    exact = int(frame["exact"].sum())
    exact_or_partial = int(frame["exact_or_partial"].sum())
    tail = int((~frame["head"]).sum())
    return {
        "negatives": len(frame),
        "judged": judged,
        "unjudged": len(frame) - judged,
        "exact": exact,
        "exact_or_partial": exact_or_partial,
        "fn_rate_exact": (exact / judged) if judged else None,
        "fn_rate_exact_or_partial": (exact_or_partial / judged) if judged else None,
        # The Exact-or-Partial count and rate under their older names.
        "false_negatives": exact_or_partial,
        "false_negative_rate": (exact_or_partial / judged) if judged else None,
        "tail": tail,
        "tail_share": (tail / len(frame)) if len(frame) else None,
    }


@dataclass
class AuditReport:
    """What :func:`audit_samples` found.

    Attributes:
        payload: The whole audit as JSON-ready dicts (see :func:`audit_samples`).
        per_method: One JSON-ready row per negative-sample method, sorted by method, with the
            keys of :data:`PER_METHOD_KEYS`; also ``payload["per_method"]``.
    """

    payload: dict
    per_method: list[dict[str, float | int | str | None]] = field(default_factory=list)

    def table(self) -> list[tuple[str, str, str, str, str]]:
        """Rows (method, negatives, judged, false-negative rate Exact or Partial, tail share) for
        the terminal."""

        def fmt(value: object) -> str:
            return (
                "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)
            )

        return [
            (
                str(row["method"]),
                fmt(row["negatives"]),
                fmt(row["judged"]),
                fmt(row["fn_rate_exact_or_partial"]),
                fmt(row["tail_share"]),
            )
            for row in self.per_method
        ]


def audit_samples(
    samples: pd.DataFrame,
    dataset: Dataset,
    *,
    test_query_ids: Sequence[str] | None = None,
    head_share: float = HEAD_SHARE,
) -> AuditReport:
    """Audit ``samples`` (the samples.parquet frame) against ``dataset``'s human labels.

    A negative is *judged* when humans labelled its (query, product) pair. It counts as
    ``exact`` when that label has the data set's highest gain (WANDS Exact = 2) and as
    ``exact_or_partial`` when its gain is above 0 (WANDS Exact or Partial); the two rates divide
    these counts by the judged negatives, so unjudged ones never count as false negatives.

    Args:
        samples: Sample rows with at least ``query_id, query, product_id, kind, method, rank``.
        dataset: The data set with the human labels (all queries, not only training ones).
        test_query_ids: The fold's test queries; when given, leakage into the samples is
            counted by query id and by query text.
        head_share: Fraction of the catalog that is the popular head (see :func:`head_products`).

    Returns:
        An :class:`AuditReport`. ``report.per_method`` is a list of JSON-ready dicts, one per
        method sorted by name, ready for ``metrics.json``::

            [{"method": str, "negatives": int, "judged": int, "unjudged": int,
              "exact": int, "exact_or_partial": int,
              "fn_rate_exact": float | None, "fn_rate_exact_or_partial": float | None,
              "tail": int, "tail_share": float | None}]

        (rates are ``None`` when no negative is judged). ``report.payload`` holds the totals
        (the same keys at top level), ``per_method``, ``by_method`` (method -> row),
        ``by_rank_band``, ``duplicates``, ``positive_and_negative_pairs``, ``leakage`` and
        ``head_definition``. ``false_negative_rate`` and ``false_negatives`` are the
        Exact-or-Partial rate and count under their older names.

    Example:
        >>> from shopaug.data.demo import generate_demo
        >>> from shopaug.augment.mining import MiningConfig, sample_baseline_negatives
        >>> demo = generate_demo(seed=0, n_products=50, n_queries=5)
        >>> ids = [q.id for q in demo.queries]
        >>> frame, _ = sample_baseline_negatives(demo, ids, MiningConfig(method="random"))
        >>> row = audit_samples(frame, demo).per_method[0]
        >>> row["method"], row["negatives"]
        ('random', 25)
    """
    qrels = dataset.qrels()
    top_gain = max(dataset.gains.values(), default=1)
    head, origin = head_products(dataset, head_share)
    negatives = samples[samples["kind"] == "negative"].copy()
    gains = [
        qrels.get(q, {}).get(p) for q, p in zip(negatives["query_id"], negatives["product_id"])
    ]
    negatives["judged"] = [g is not None for g in gains]
    negatives["exact"] = [g is not None and g > 0 and g >= top_gain for g in gains]
    negatives["exact_or_partial"] = [g is not None and g > 0 for g in gains]
    negatives["head"] = negatives["product_id"].isin(head)
    negatives["band"] = [_band(int(r)) for r in negatives["rank"]]

    by_method = {
        str(method): _rate(group) for method, group in negatives.groupby("method", sort=True)
    }
    per_method = [
        {key: ({"method": method} | values)[key] for key in PER_METHOD_KEYS}
        for method, values in by_method.items()
    ]
    by_band: dict[str, dict[str, dict[str, float | int | None]]] = {}
    for (method, band), group in negatives.groupby(["method", "band"], sort=True):
        by_band.setdefault(str(method), {})[str(band)] = _rate(group)

    key = ["query_id", "product_id", "kind"]
    duplicates = int(samples.duplicated(subset=key).sum())
    pair_kinds = samples.groupby(["query_id", "product_id"])["kind"].nunique()
    conflicting = int((pair_kinds > 1).sum())
    positives = samples[samples["kind"] == "positive"]

    leakage: dict[str, object] = {"checked": test_query_ids is not None}
    if test_query_ids is not None:
        test_ids = set(test_query_ids)
        test_texts = {
            dataset.query_by_id[q].text.strip().lower()
            for q in test_ids
            if q in dataset.query_by_id
        }
        by_id = samples["query_id"].isin(test_ids)
        by_text = samples["query"].str.strip().str.lower().isin(test_texts)
        leakage.update(
            {
                "rows_with_test_query_id": int(by_id.sum()),
                "rows_with_test_query_text": int(by_text.sum()),
                "leaked_queries": sorted(set(samples.loc[by_id | by_text, "query_id"]))[:20],
            }
        )
    overall = _rate(negatives)
    payload = {
        "dataset": dataset.name,
        "samples": len(samples),
        "positives": len(positives),
        **overall,
        "judged_negatives": overall["judged"],
        "head_definition": f"top {head_share:.0%} of products by {origin}",
        "per_method": per_method,
        "by_method": by_method,
        "by_rank_band": by_band,
        "duplicates": duplicates,
        "positive_and_negative_pairs": conflicting,
        "leakage": leakage,
        "methods": sorted(samples["method"].unique().tolist()),
    }
    return AuditReport(payload=payload, per_method=per_method)
