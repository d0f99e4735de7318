"""Turn samples.parquet rows into training groups (query, positive, negatives) of texts."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from shopaug.augment.samples import VARIANT_TEXT_COLUMN
from shopaug.data.records import Dataset
from shopaug.train.config import TrainingExample


def pool_samples(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate sample frames; a (query, product, kind) pair appears once (first wins)."""
    pooled = pd.concat(list(frames), ignore_index=True)
    if VARIANT_TEXT_COLUMN not in pooled.columns:
        pooled[VARIANT_TEXT_COLUMN] = None
    pooled = pooled.drop_duplicates(subset=["query_id", "product_id", "kind"], keep="first")
    return pooled.sort_values(["query_id", "kind", "product_id"], kind="mergesort").reset_index(
        drop=True
    )


def product_text(row_text: object, product_id: str, dataset: Dataset, fields: Sequence[str]) -> str:
    """A generated variant's own text, else the catalog product's rendered text."""
    if isinstance(row_text, str) and row_text:
        return row_text
    return dataset.product(product_id).render(fields)


def build_examples(
    samples: pd.DataFrame,
    dataset: Dataset,
    *,
    text_fields: Sequence[str],
    negatives_per_example: int,
    seed: int,
) -> list[TrainingExample]:
    """One group per positive row; its negatives are drawn (seeded, without replacement) from the
    same query's negative rows. Queries without negatives still train through in-batch ones."""
    rng = np.random.default_rng(seed)
    examples: list[TrainingExample] = []
    texts = samples.get(VARIANT_TEXT_COLUMN)
    samples = samples.assign(_text=texts if texts is not None else None)
    for _, group in samples.groupby("query_id", sort=True):
        query = str(group["query"].iloc[0])
        positives = group[group["kind"] == "positive"]
        negatives = group[group["kind"] == "negative"]
        negative_texts = [
            product_text(t, p, dataset, text_fields)
            for t, p in zip(negatives["_text"], negatives["product_id"])
        ]
        for pid, text in zip(positives["product_id"], positives["_text"]):
            chosen: list[str] = []
            if negative_texts:
                size = min(negatives_per_example, len(negative_texts))
                picks = rng.choice(len(negative_texts), size=size, replace=False)
                chosen = [negative_texts[i] for i in sorted(picks)]
            examples.append(
                TrainingExample(
                    query=query,
                    positive=product_text(text, pid, dataset, text_fields),
                    negatives=chosen,
                )
            )
    return examples
