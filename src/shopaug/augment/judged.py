"""The samples a shop has without augmentation: judged positives, and judged-irrelevant products.

Two sources that baselines train on, in the same samples table as every augmentation method:

* ``positives``: the training queries' judged positives only; a model trained on them sees only
  in-batch negatives (what a plain sentence-transformers fine-tune does);
* ``human-negatives``: the same positives, and every product a person judged irrelevant for the
  query as its negatives (gain 0 in the judgments).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from shopaug.augment.mining import MiningConfig, positive_rows
from shopaug.augment.samples import samples_frame
from shopaug.data.records import Dataset

JUDGED_METHODS = ("positives", "human-negatives")


def judged_samples(
    dataset: Dataset, query_ids: Sequence[str], config: MiningConfig, *, negatives: bool
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Judged positives of ``query_ids`` (gain >= ``config.positive_min_gain``, capped at
    ``config.max_positives_per_query``), plus their judged-irrelevant products when
    ``negatives``. Returns the samples frame and counts."""
    positives = positive_rows(dataset, query_ids, config)
    qrels = dataset.qrels(query_ids=query_ids)
    method = "human-negatives" if negatives else "positives"
    rows: list[dict[str, object]] = []
    for qid in sorted(positives):
        text = dataset.query_by_id[qid].text
        for pid, gain in positives[qid]:
            rows.append(_row(qid, text, pid, "positive", "judged", f"labels:gain={gain}", config))
        if negatives:
            for pid in sorted(p for p, gain in qrels.get(qid, {}).items() if gain == 0):
                rows.append(_row(qid, text, pid, "negative", method, "labels:gain=0", config))
    frame = samples_frame(rows)
    counts = {
        "queries": len(positives),
        "positives": int((frame["kind"] == "positive").sum()) if len(frame) else 0,
        "negatives": int((frame["kind"] == "negative").sum()) if len(frame) else 0,
    }
    return frame, counts


def _row(
    qid: str, text: str, pid: str, kind: str, method: str, source: str, config: MiningConfig
) -> dict[str, object]:
    return {
        "query_id": qid,
        "query": text,
        "product_id": pid,
        "label": 1 if kind == "positive" else 0,
        "kind": kind,
        "method": method,
        "source": source,
        "seed": config.seed,
        "score": float("nan"),
        "rank": -1,
    }
