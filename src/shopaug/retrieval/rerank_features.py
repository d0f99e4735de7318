"""Features of (query, candidate product) pairs for a learning-to-rank reranker.

A first stage gives each query a list of candidates; :class:`RerankFeatures` describes every
candidate by signals that need no training and are cheap on a CPU:

=====================  =====================================================================
``list_position``      position in the first stage's list, divided by the list length
``dense_cosine``       cosine of the query and the product under the base encoder
``dense_rank``         rank of ``dense_cosine`` among the list's candidates (0 = best) / length
``bm25``               BM25 score of the product's text for the query
``bm25_share``         ``bm25`` divided by the list's highest BM25 score (0 when none matches)
``bm25_rank``          rank of ``bm25`` among the list's candidates / length
``title_overlap``      share of the query's terms found in the product title
``category_overlap``   share of the query's terms found in the product's category path
``text_overlap``       share of the query's terms found in the rendered text
``all_in_title``       1 when every query term is in the title
``class_consensus``    share of the list's first 10 candidates in the product's leaf category
``class_consensus_dense``  the same share among the 10 candidates closest under the encoder
``query_terms``        number of query terms
``title_terms``        number of title terms
``class_prior``        how often training queries with the query's terms had relevant products
                       in the product's leaf category (:class:`ClassPrior`; 0 without one)
=====================  =====================================================================

Terms are lower-cased alphanumeric tokens with a trailing plural ``s`` removed.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from shopaug.data.records import Product
from shopaug.encoders.bm25 import BM25Index

FEATURE_NAMES = (
    "list_position",
    "dense_cosine",
    "dense_rank",
    "bm25",
    "bm25_share",
    "bm25_rank",
    "title_overlap",
    "category_overlap",
    "text_overlap",
    "all_in_title",
    "class_consensus",
    "class_consensus_dense",
    "query_terms",
    "title_terms",
    "class_prior",
)

_TOKEN = re.compile(r"[a-z0-9]+")
CONSENSUS_DEPTH = 10


def terms(text: str) -> set[str]:
    """Lower-cased alphanumeric tokens, a trailing plural ``s`` removed (``chairs``: ``chair``)."""
    return {t[:-1] if len(t) > 3 and t.endswith("s") else t for t in _TOKEN.findall(text.lower())}


def _overlap(query: set[str], text: set[str]) -> float:
    return len(query & text) / len(query) if query else 0.0


def _ranks(values: np.ndarray) -> np.ndarray:
    """0 for the largest value, 1 for the next, ... (ties in list order)."""
    order = np.argsort(-values, kind="stable")
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.arange(len(values))
    return ranks


class ClassPrior:
    """Which leaf categories the training queries' relevant products are in, by query term.

    ``score(query, leaf)`` is the mean over the query's terms ``t`` of ``n(t, leaf) / n(t)``:
    ``n(t)`` is the gain-weighted count of relevant (query, product) judgments of training
    queries containing ``t``, ``n(t, leaf)`` of those in ``leaf`` (a term never seen gives 0).
    Built from training queries only; ``leave_out`` removes one training query's own
    judgments, so that its features do not contain its label.

    Args:
        judged: ``(query text, leaf category, gain)`` of the training queries' relevant products.
    """

    def __init__(self, judged: Iterable[tuple[str, str, float]]) -> None:
        self.judged = [(str(q), str(leaf), float(g)) for q, leaf, g in judged]
        self._total: defaultdict[str, float] = defaultdict(float)
        self._by_leaf: dict[str, defaultdict[str, float]] = defaultdict(lambda: defaultdict(float))
        self._own: dict[str, list[tuple[str, float]]] = defaultdict(list)
        for query, leaf, gain in self.judged:
            self._own[query].append((leaf, gain))
            for term in terms(query):
                self._total[term] += gain
                self._by_leaf[term][leaf] += gain

    def score(self, query: str, leaf: str, *, leave_out: bool = False) -> float:
        words = terms(query)
        if not words or not leaf:
            return 0.0
        own = self._own.get(query, []) if leave_out else []
        own_total = sum(g for _, g in own)
        own_leaf = sum(g for item, g in own if item == leaf)
        shares = []
        for term in words:
            total = self._total.get(term, 0.0) - own_total
            in_leaf = self._by_leaf[term].get(leaf, 0.0) - own_leaf if term in self._by_leaf else 0
            shares.append(in_leaf / total if total > 0 else 0.0)
        return float(np.mean(shares))


@dataclass
class RerankFeatures:
    """Builds the feature matrix of a query's candidate list (see the module doc).

    Args:
        products: the catalog (titles, categories).
        texts: each product's rendered text, in ``products`` order.
        item_vectors: the catalog under the base encoder, L2-normalised, ``(n_products, dim)``.
        bm25: a BM25 index of ``texts`` built elsewhere (None: one is built here).
    """

    products: Sequence[Product]
    texts: Sequence[str]
    item_vectors: np.ndarray
    bm25: BM25Index | None = None

    def __post_init__(self) -> None:
        products = self.products
        self._row = {product.id: row for row, product in enumerate(products)}
        self._bm25 = self.bm25 if self.bm25 is not None else BM25Index(self.texts)
        self._title_terms = [terms(p.title) for p in products]
        self._category_terms = [terms(" ".join(p.category)) for p in products]
        self._text_terms = [terms(t) for t in self.texts]
        self._leaf = [p.category[-1] if p.category else "" for p in products]

    def leaf(self, product_id: str) -> str:
        """The product's leaf category ("" without one)."""
        return self._leaf[self._row[product_id]]

    def matrix(
        self,
        query: str,
        query_vector: np.ndarray,
        candidates: Sequence[str],
        *,
        prior: ClassPrior | None = None,
        leave_out: bool = False,
    ) -> np.ndarray:
        """Features of ``candidates`` (product ids, first-stage order) for ``query``:
        ``(len(candidates), len(FEATURE_NAMES))``; ``leave_out`` for a query the ``prior``
        was built from."""
        n = len(candidates)
        if n == 0:
            return np.zeros((0, len(FEATURE_NAMES)))
        rows = np.array([self._row[pid] for pid in candidates])
        cosine = self.item_vectors[rows] @ query_vector  # (n,)
        bm25 = self._bm25.score_all(query)[rows].astype(np.float64)  # (n,)
        top = float(bm25.max())
        words = terms(query)
        leaves = [self._leaf[r] for r in rows]
        listed = leaves[:CONSENSUS_DEPTH]
        by_dense = [leaves[i] for i in np.argsort(-cosine, kind="stable")[:CONSENSUS_DEPTH]]
        features = np.zeros((n, len(FEATURE_NAMES)))
        features[:, 0] = np.arange(n) / n
        features[:, 1] = cosine
        features[:, 2] = _ranks(cosine) / n
        features[:, 3] = bm25
        features[:, 4] = bm25 / top if top > 0 else 0.0
        features[:, 5] = _ranks(bm25) / n
        for i, row in enumerate(rows):
            title = self._title_terms[row]
            features[i, 6] = _overlap(words, title)
            features[i, 7] = _overlap(words, self._category_terms[row])
            features[i, 8] = _overlap(words, self._text_terms[row])
            features[i, 9] = float(bool(words) and words <= title)
            leaf = leaves[i]
            features[i, 10] = sum(x == leaf for x in listed) / len(listed) if leaf else 0.0
            features[i, 11] = sum(x == leaf for x in by_dense) / len(by_dense) if leaf else 0.0
            features[i, 13] = len(title)
            if prior is not None:
                features[i, 14] = prior.score(query, leaf, leave_out=leave_out)
        features[:, 12] = len(words)
        return features
