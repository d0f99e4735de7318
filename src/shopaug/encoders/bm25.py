"""BM25 over product texts through ``bm25s`` (Lucene variant, English stop words, stems)."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

import numpy as np

logger = logging.getLogger(__name__)


_warned_no_stemmer = False


def _stemmer():
    """The English Snowball stemmer, or ``None`` (warned once) when PyStemmer is missing."""
    global _warned_no_stemmer
    try:
        import Stemmer  # PyStemmer

        return Stemmer.Stemmer("english")
    except ImportError:
        if not _warned_no_stemmer:
            logger.warning(
                "PyStemmer is not installed: BM25 runs without stemming, so its rankings and "
                "every result built on them (NDCG, mined negatives, audits) change; "
                "run `pip install PyStemmer` to match the documented results"
            )
            _warned_no_stemmer = True
        return None


class BM25Index:
    """A BM25 index over ``texts``; :meth:`search` returns rows into ``texts`` and scores.

    Args:
        texts: one text per product, in catalog order.
        k1, b: BM25 parameters (Lucene defaults 1.5 and 0.75 as in bm25s).
    """

    def __init__(self, texts: Sequence[str], *, k1: float = 1.5, b: float = 0.75) -> None:
        import bm25s

        logging.getLogger("bm25s").setLevel(logging.WARNING)  # it logs every index build
        from bm25s.stopwords import STOPWORDS_EN

        self._stemmer = _stemmer()
        # bm25s.tokenize's rules (token_pattern, stopwords="en"), applied per query in tokens()
        self._split = re.compile(r"(?u)\b\w\w+\b").findall
        self._stopwords = frozenset(STOPWORDS_EN)
        self.size = len(texts)
        tokens = bm25s.tokenize(
            list(texts), stopwords="en", stemmer=self._stemmer, show_progress=False
        )
        self._model = bm25s.BM25(k1=k1, b=b)
        self._model.index(tokens, show_progress=False)
        index = self._model.scores  # CSC: token id -> (product rows, score contributions)
        self._starts = index["indptr"]
        self._products = index["indices"]
        self._weights = np.asarray(index["data"], dtype=np.float32)
        self.id = f"bm25s-k1={k1}-b={b}{'-stem' if self._stemmer else ''}"

    def tokens(self, query: str) -> list[str]:
        """The query's BM25 terms, as ``bm25s.tokenize`` makes them (lower-cased words of two
        or more word characters, English stop words dropped, stemmed; repeats kept), without
        its per-call overhead (progress bars, a new stop-word set, a vocabulary per call)."""
        words = [word for word in self._split(query.lower()) if word not in self._stopwords]
        if self._stemmer is None or not words:
            return words
        return list(self._stemmer.stemWords(words))

    def search(self, queries: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` rows per query, shape (n_queries, k); -1 pads when fewer products match.

        Products with score 0 (no query term) are not returned, so a query that tokenizes to
        nothing (only stop words, punctuation or symbols) gets a row of -1. The same ranking
        as ``bm25s.BM25.retrieve`` (its scores and its top-k selection, ties included), one
        query after the other in this thread.
        """
        rows = np.full((len(queries), k), -1, dtype=np.int64)
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        for i, query in enumerate(queries):
            rows[i], scores[i] = self.top(self.score_all(query), k)
        return rows, scores

    def score_all(self, query: str) -> np.ndarray:
        """BM25 score of every product for ``query``, shape ``(size,)`` (0 without a query
        term). A query that tokenizes to nothing ("the", "!!!", an emoji) scores 0 everywhere
        (bm25s cannot take an empty query, so it is not asked)."""
        # bm25s's get_scores (the sum of each query token's precomputed column of the index,
        # token after token in float32), with one indexed add per token: a token's column
        # names each product once, so ``+=`` adds what ``np.add.at`` adds, at a fraction of
        # the cost
        vocabulary = self._model.vocab_dict
        scores = np.zeros(self.size, dtype=np.float32)
        for token in self.tokens(query):
            token_id = vocabulary.get(token)
            if token_id is None:
                continue
            start, end = self._starts[token_id], self._starts[token_id + 1]
            scores[self._products[start:end]] += self._weights[start:end]
        return scores

    def top(
        self, scores: np.ndarray, k: int, rows: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The best ``k`` rows of ``scores`` (from :meth:`score_all`) and their scores, each
        ``(k,)``, padded with -1 / ``-inf``; rows scoring 0 are left out. ``rows``: only these
        catalog rows, in the order of the whole catalog's ranking.

        The selection is bm25s's own (``bm25s.selection.topk``), so ties fall as in
        ``bm25s.BM25.retrieve`` and in every run evaluated with :meth:`search`.
        """
        found_rows = np.full(k, -1, dtype=np.int64)
        found_scores = np.full(k, -np.inf, dtype=np.float32)
        depth = min(k, self.size) if rows is None else self.size
        if depth == 0:
            return found_rows, found_scores
        # bm25s.selection.topk (numpy, sorted): the same partition and the same sort
        top_rows = np.argpartition(scores, -depth)[-depth:]
        order = np.flip(np.argsort(scores[top_rows]))
        top_rows = top_rows[order]
        top_scores = scores[top_rows]
        positive = top_scores > 0
        top_rows, top_scores = top_rows[positive], top_scores[positive]
        if rows is not None:
            keep = np.isin(top_rows, rows)
            top_rows, top_scores = top_rows[keep][:k], top_scores[keep][:k]
        found_rows[: len(top_rows)] = top_rows
        found_scores[: len(top_rows)] = top_scores
        return found_rows, found_scores
