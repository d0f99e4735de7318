"""A trained feature reranker as a unit that can be saved beside a model and served.

``shopaug run`` writes ``model/reranker/`` when the reranker it chose on validation is
LambdaMART over :mod:`shopaug.retrieval.rerank_features` (``reranker.kind: lambdamart``):
the LightGBM model, the category prior's training judgments and how many of the first stage's
results it reorders. ``shopaug serve`` loads it with the model and reranks the top ``top_k`` of
every search the way the run evaluated it::

    model/reranker/lambdamart.txt    LightGBM text model
    model/reranker/lambdamart.json   settings and feature names
    model/reranker/reranker.json     {"kind": "lambdamart", "top_k": 100,
                                      "prior": [[query, leaf, gain], ...]}
    model/reranker/encoder/          only when model/ holds a fine-tuned encoder: the base
                                     encoder the features were computed with

The features' encoder (``dense_cosine``, ``class_consensus_dense``) is the *base* encoder in
training (no fine-tuned model scores its own training queries). When the first stage is the
base encoder, the service reuses its vectors; when it is a fine-tuned model, ``encoder/``
holds the base encoder so the served features are the evaluated ones (one more query encoding
per new query).

Serving splits :meth:`FeatureReranker.rerank` into its two stages, :meth:`~FeatureReranker.
features_of` (the candidates' feature matrix, over catalog rows, with the request's BM25
scores when the service has them) and :meth:`~FeatureReranker.order` (one LightGBM prediction
for the whole list), so each can be timed and nothing is computed twice.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shopaug.data.records import Product
from shopaug.encoders.base import Encoder
from shopaug.encoders.bm25 import BM25Index
from shopaug.errors import ConfigError
from shopaug.models.ltr_reranker import LambdaMartReranker
from shopaug.retrieval.rerank_features import FEATURE_NAMES, ClassPrior, RerankFeatures

RERANKER_DIR = "reranker"
RERANKER_FILE = "reranker.json"
#: The base encoder of the features, inside the reranker folder, when the first stage differs.
FEATURES_ENCODER_DIR = "encoder"


def save_feature_reranker(
    directory: str | Path, model: LambdaMartReranker, prior: ClassPrior, top_k: int
) -> Path:
    """Write ``model``, ``prior`` and ``top_k`` into ``directory`` (created)."""
    folder = Path(directory)
    model.save(folder)
    payload = {"kind": "lambdamart", "top_k": top_k, "prior": [list(t) for t in prior.judged]}
    (folder / RERANKER_FILE).write_text(json.dumps(payload), "utf-8")
    return folder


@dataclass
class FeatureReranker:
    """LambdaMART over candidate features, ready to rerank served results.

    ``query_encoder`` encodes the query for the features when they use another encoder than
    the first stage's (``encoder/``); None: the first stage's query vector is used."""

    model: LambdaMartReranker
    prior: ClassPrior
    top_k: int
    features: RerankFeatures
    query_encoder: Encoder | None = None

    @classmethod
    def load(
        cls,
        directory: str | Path,
        products: Sequence[Product],
        texts: Sequence[str],
        item_vectors: np.ndarray,
        query_encoder: Encoder | None = None,
        *,
        bm25: BM25Index | None = None,
    ) -> FeatureReranker:
        """The reranker saved in ``directory`` over this catalog; ``item_vectors`` (and
        ``query_encoder``, when not the first stage's) are those of the features' encoder;
        ``bm25``: the BM25 index of ``texts`` when the caller has one (the service shares its
        first stage's), else one is built.

        Raises:
            ConfigError: the folder is not a saved reranker (the message names the file).
        """
        folder = Path(directory)
        path = folder / RERANKER_FILE
        try:
            payload = json.loads(path.read_text("utf-8"))
            top_k = int(payload["top_k"])
            prior = ClassPrior((q, leaf, float(g)) for q, leaf, g in payload["prior"])
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ConfigError(f"{path}: not a saved reranker: {error}") from error
        if top_k < 1:
            raise ConfigError(f"{path}: top_k must be at least 1, got {top_k}")
        model = LambdaMartReranker.load(folder)
        if model.feature_names and model.feature_names != FEATURE_NAMES:
            raise ConfigError(
                f"{folder}: the reranker was trained on features {model.feature_names}; this "
                f"version computes {FEATURE_NAMES}: retrain it with `shopaug run`"
            )
        features = RerankFeatures(products, texts, item_vectors, bm25=bm25)
        return cls(model, prior, top_k, features, query_encoder)

    def rerank(
        self,
        query: str,
        query_vector: np.ndarray,
        ranked: Sequence[tuple[str, float]],
        *,
        bm25_scores: np.ndarray | None = None,
    ) -> list[tuple[str, float]]:
        """``ranked`` with its top ``top_k`` reordered by the model (the rest keep their order);
        ``query_vector`` is the first stage's (replaced by ``query_encoder``'s when set);
        ``bm25_scores``: the query's BM25 of every product when the caller has it."""
        head = list(ranked[: self.top_k])
        if not head:
            return []
        if self.query_encoder is not None:
            query_vector = self.query_encoder.encode([query])[0]
        rows = self.features.rows([pid for pid, _ in head])
        features = self.features_of(query, query_vector, rows, bm25_scores=bm25_scores)
        order, scores = self.order(features)
        reordered = [(head[i][0], float(scores[i])) for i in order]
        return reordered + list(ranked[self.top_k :])

    def features_of(
        self,
        query: str,
        query_vector: np.ndarray,
        rows: np.ndarray,
        *,
        bm25_scores: np.ndarray | None = None,
    ) -> np.ndarray:
        """The features ``(len(rows), n_features)`` of the candidates at catalog ``rows``
        (first-stage order); ``query_vector`` is the features' encoder's."""
        return self.features.matrix_of_rows(
            query, query_vector, rows, prior=self.prior, bm25_scores=bm25_scores
        )

    def order(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The candidates' new order (positions, best first; ties keep the first stage's
        order) and their model scores, each ``(n,)``, from one prediction of the list."""
        scores = self.model.score(features)  # (n,)
        return np.argsort(-scores, kind="stable"), scores
