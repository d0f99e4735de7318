"""Audit of augmented samples: are the negatives really negative, are they all popular items,
are there duplicates, and did anything of the test fold leak into training?

- False-negative rate: among negatives whose (query, product) pair humans judged, the share
  judged relevant (gain > 0: Exact or Partial on WANDS). Reported per method and per rank band.
  Negatives without a human judgment are counted as ``unjudged`` and left out of the rate.
- Popularity: the share of negatives from the tail of the catalog (head = the most popular
  products that cover 20 % of the catalog, by interactions, else by relevant judgments).
- Duplicates: repeated (query, product, kind) rows, and pairs that are both positive and negative.
- Leakage: with a fold, any sample whose query id, or query text, is a test query of that fold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from shopaug.augment.mining import popularity_counts
from shopaug.data.records import Dataset

RANK_BANDS = ((1, 10), (11, 30), (31, 100), (101, 10**9))
HEAD_SHARE = 0.2


def _band(rank: int) -> str:
    if rank < 1:
        return "unranked"
    for low, high in RANK_BANDS:
        if low <= rank <= high:
            return f"{low}-{high}" if high < 10**9 else f"{low}+"
    return "unranked"


def head_products(dataset: Dataset, head_share: float = HEAD_SHARE) -> tuple[set[str], str]:
    """The most popular ``head_share`` of the catalog (ties broken by id) and the count source."""
    counts, origin = popularity_counts(dataset)
    n_head = max(1, round(len(counts) * head_share))
    ids = np.array([p.id for p in dataset.products])
    order = np.lexsort((ids, -counts))
    return set(ids[order[:n_head]].tolist()), origin


def _rate(frame: pd.DataFrame) -> dict[str, float | int | None]:
    judged = frame[frame["judged"]]
    false = int(judged["false_negative"].sum())
    return {
        "negatives": len(frame),
        "judged": len(judged),
        "false_negatives": false,
        "false_negative_rate": (false / len(judged)) if len(judged) else None,
        "tail_share": float((~frame["head"]).mean()) if len(frame) else None,
    }


@dataclass
class AuditReport:
    payload: dict

    def table(self) -> list[tuple[str, str, str, str, str]]:
        """Rows (method, negatives, judged, false-negative rate, tail share) for the terminal."""

        def fmt(value: object) -> str:
            return (
                "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)
            )

        rows = []
        for method, values in self.payload["by_method"].items():
            rows.append(
                (
                    method,
                    fmt(values["negatives"]),
                    fmt(values["judged"]),
                    fmt(values["false_negative_rate"]),
                    fmt(values["tail_share"]),
                )
            )
        return rows


def audit_samples(
    samples: pd.DataFrame, dataset: Dataset, *, test_query_ids: Sequence[str] | None = None
) -> AuditReport:
    """Audit ``samples`` (the samples.parquet frame) against ``dataset``'s human labels."""
    qrels = dataset.qrels()
    head, origin = head_products(dataset)
    negatives = samples[samples["kind"] == "negative"].copy()
    gains = [
        qrels.get(q, {}).get(p) for q, p in zip(negatives["query_id"], negatives["product_id"])
    ]
    negatives["judged"] = [g is not None for g in gains]
    negatives["false_negative"] = [g is not None and g > 0 for g in gains]
    negatives["head"] = negatives["product_id"].isin(head)
    negatives["band"] = [_band(int(r)) for r in negatives["rank"]]

    by_method = {method: _rate(group) for method, group in negatives.groupby("method", sort=True)}
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
        "negatives": len(negatives),
        "false_negative_rate": overall["false_negative_rate"],
        "judged_negatives": overall["judged"],
        "tail_share": overall["tail_share"],
        "head_definition": f"top {HEAD_SHARE:.0%} of products by {origin}",
        "by_method": by_method,
        "by_rank_band": by_band,
        "duplicates": duplicates,
        "positive_and_negative_pairs": conflicting,
        "leakage": leakage,
        "methods": sorted(samples["method"].unique().tolist()),
    }
    return AuditReport(payload=payload)
