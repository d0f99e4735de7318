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
        return float(self.scores(query, [leaf], leave_out=leave_out)[0])

    def scores(self, query: str, leaves: Sequence[str], *, leave_out: bool = False) -> np.ndarray:
        """:meth:`score` of each of ``leaves`` ``(len(leaves),)``, worked out for the distinct
        leaves at once (the same arithmetic, as arrays of leaves by query terms)."""
        result = np.zeros(len(leaves))
        words = list(terms(query))
        distinct = list(dict.fromkeys(leaf for leaf in leaves if leaf))
        if not words or not distinct:
            return result
        own = self._own.get(query, []) if leave_out else []
        own_total = sum(g for _, g in own)
        own_leaf = np.array([sum(g for item, g in own if item == leaf) for leaf in distinct])
        total = np.array([self._total.get(term, 0.0) - own_total for term in words])  # (t,)
        known = np.array([term in self._by_leaf for term in words])  # (t,)
        judged = np.array(  # (leaves, t)
            [
                [self._by_leaf[t].get(leaf, 0.0) if t in self._by_leaf else 0.0 for t in words]
                for leaf in distinct
            ]
        )
        in_leaf = np.where(known, judged - own_leaf[:, None], 0.0)
        positive = total > 0
        shares = np.where(positive, in_leaf / np.where(positive, total, 1.0), 0.0)
        value = dict(zip(distinct, shares.mean(axis=1)))
        for i, leaf in enumerate(leaves):
            if leaf:
                result[i] = value[leaf]
        return result


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
        # each field's terms per product as one flat array of term ids (CSR: row r owns
        # ids[starts[r]:starts[r + 1]], each term once), so the overlaps of a candidate list
        # are a few array operations
        self._term_id: dict[str, int] = {}
        self._title = _TermRows([terms(p.title) for p in products], self._term_id)
        self._category = _TermRows([terms(" ".join(p.category)) for p in products], self._term_id)
        self._text = _TermRows([terms(t) for t in self.texts], self._term_id)
        self._leaf = [p.category[-1] if p.category else "" for p in products]
        leaf_ids = {leaf: i for i, leaf in enumerate(dict.fromkeys(self._leaf))}
        # -1: no category, which matches no other product's leaf
        self._leaf_id = np.array([leaf_ids[x] if x else -1 for x in self._leaf], dtype=np.int64)

    @property
    def bm25_index(self) -> BM25Index:
        """The BM25 index of the ``bm25`` features (given or built here)."""
        return self._bm25

    def leaf(self, product_id: str) -> str:
        """The product's leaf category ("" without one)."""
        return self._leaf[self._row[product_id]]

    def rows(self, candidates: Sequence[str]) -> np.ndarray:
        """The catalog rows of product ids ``(len(candidates),)``."""
        return np.array([self._row[pid] for pid in candidates], dtype=np.int64)

    def matrix(
        self,
        query: str,
        query_vector: np.ndarray,
        candidates: Sequence[str],
        *,
        prior: ClassPrior | None = None,
        leave_out: bool = False,
        bm25_scores: np.ndarray | None = None,
    ) -> np.ndarray:
        """Features of ``candidates`` (product ids, first-stage order) for ``query``:
        ``(len(candidates), len(FEATURE_NAMES))``; ``leave_out`` for a query the ``prior``
        was built from; ``bm25_scores``: the query's :meth:`BM25Index.score_all` when the
        caller has it already (see :meth:`matrix_of_rows`)."""
        return self.matrix_of_rows(
            query,
            query_vector,
            self.rows(candidates),
            prior=prior,
            leave_out=leave_out,
            bm25_scores=bm25_scores,
        )

    def matrix_of_rows(
        self,
        query: str,
        query_vector: np.ndarray,
        rows: np.ndarray,
        *,
        prior: ClassPrior | None = None,
        leave_out: bool = False,
        bm25_scores: np.ndarray | None = None,
    ) -> np.ndarray:
        """:meth:`matrix` of candidates given as catalog ``rows`` ``(n,)``, computed over the
        whole list at once (no loop over candidates).

        ``bm25_scores`` ``(n_products,)`` is this index's BM25 of ``query`` for every product
        (:meth:`BM25Index.score_all` of :attr:`bm25_index`), when the caller has it already
        (the service scores BM25 once per request for the fusion and these features); None:
        scored here.
        """
        n = len(rows)
        if n == 0:
            return np.zeros((0, len(FEATURE_NAMES)))
        rows = np.asarray(rows, dtype=np.int64)
        if bm25_scores is None:
            bm25_scores = self._bm25.score_all(query)
        cosine = self.item_vectors[rows] @ query_vector  # (n,)
        bm25 = bm25_scores[rows].astype(np.float64)  # (n,)
        top = float(bm25.max())
        words = terms(query)
        asked = np.zeros(len(self._term_id) + 1, dtype=bool)  # the query's terms, by id
        asked[[self._term_id.get(w, len(self._term_id)) for w in words]] = True
        asked[-1] = False  # terms no product has
        title_hits = self._title.count(rows, asked)  # (n,) query terms in each title
        leaves = self._leaf_id[rows]  # (n,)
        listed = leaves[:CONSENSUS_DEPTH]
        by_dense = leaves[np.argsort(-cosine, kind="stable")[:CONSENSUS_DEPTH]]
        has_leaf = leaves >= 0
        features = np.zeros((n, len(FEATURE_NAMES)))
        features[:, 0] = np.arange(n) / n
        features[:, 1] = cosine
        features[:, 2] = _ranks(cosine) / n
        features[:, 3] = bm25
        features[:, 4] = bm25 / top if top > 0 else 0.0
        features[:, 5] = _ranks(bm25) / n
        if words:
            features[:, 6] = title_hits / len(words)
            features[:, 7] = self._category.count(rows, asked) / len(words)
            features[:, 8] = self._text.count(rows, asked) / len(words)
            features[:, 9] = title_hits == len(words)
        same_listed = (leaves[:, None] == listed[None, :]).sum(axis=1)  # (n,)
        same_dense = (leaves[:, None] == by_dense[None, :]).sum(axis=1)  # (n,)
        features[:, 10] = np.where(has_leaf, same_listed / len(listed), 0.0)
        features[:, 11] = np.where(has_leaf, same_dense / len(by_dense), 0.0)
        features[:, 12] = len(words)
        features[:, 13] = self._title.sizes[rows]
        if prior is not None:
            leaf_names = [self._leaf[r] for r in rows]
            features[:, 14] = prior.scores(query, leaf_names, leave_out=leave_out)
        return features


class _TermRows:
    """The term sets of a catalog field, as term ids in one flat array (CSR by product row).

    Args:
        sets: each product's terms.
        term_id: term -> id, shared by the fields and extended with their new terms.
    """

    def __init__(self, sets: Sequence[set[str]], term_id: dict[str, int]) -> None:
        ids = [term_id.setdefault(t, len(term_id)) for terms_of in sets for t in terms_of]
        self.ids = np.array(ids, dtype=np.int64)
        self.sizes = np.array([len(terms_of) for terms_of in sets], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.sizes)])

    def count(self, rows: np.ndarray, asked: np.ndarray) -> np.ndarray:
        """How many of the asked terms (``asked[term id]`` True) each of ``rows`` has
        ``(len(rows),)``."""
        sizes = self.sizes[rows]  # (n,)
        if sizes.sum() == 0:
            return np.zeros(len(rows), dtype=np.int64)
        # positions of every term of every row, row after row
        ends = np.cumsum(sizes)
        offsets = np.repeat(self.starts[rows] - (ends - sizes), sizes) + np.arange(ends[-1])
        owner = np.repeat(np.arange(len(rows)), sizes)
        found = asked[self.ids[offsets]]
        return np.bincount(owner[found], minlength=len(rows))
