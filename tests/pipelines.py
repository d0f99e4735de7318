"""Served pipelines for tests: a small LambdaMART reranker saved as ``model/reranker/``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def write_reranker(folder: Path, *, top_k: int = 20) -> Path:
    """A LambdaMART over the reranker's features, trained on random features with a planted
    signal (the first feature), saved into ``folder``."""
    pytest.importorskip("lightgbm")
    from shopaug.models.ltr_reranker import LambdaMartReranker, LambdaMartSettings
    from shopaug.retrieval.rerank_features import FEATURE_NAMES, ClassPrior
    from shopaug.retrieval.reranking import save_feature_reranker

    rng = np.random.default_rng(0)
    features = rng.normal(size=(200, len(FEATURE_NAMES)))
    gains = (features[:, 0] > 0).astype(int) * 2
    model = LambdaMartReranker(
        LambdaMartSettings(trees=10, leaves=4, min_data_in_leaf=5), feature_names=FEATURE_NAMES
    )
    model.fit(features, gains, [20] * 10)
    return save_feature_reranker(folder, model, ClassPrior([("sofa", "Sofas", 2.0)]), top_k=top_k)
