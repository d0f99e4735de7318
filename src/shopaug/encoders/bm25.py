"""BM25 over product texts through ``bm25s`` (Lucene variant, English stop words, stems)."""

from __future__ import annotations

import logging
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
        self._bm25s = bm25s
        self._stemmer = _stemmer()
        self.size = len(texts)
        tokens = bm25s.tokenize(
            list(texts), stopwords="en", stemmer=self._stemmer, show_progress=False
        )
        self._model = bm25s.BM25(k1=k1, b=b)
        self._model.index(tokens, show_progress=False)
        self.id = f"bm25s-k1={k1}-b={b}{'-stem' if self._stemmer else ''}"

    def search(self, queries: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` rows per query, shape (n_queries, k); -1 pads when fewer products match.

        Products with score 0 (no query term) are not returned, so a query that tokenizes to
        nothing (only stop words, punctuation or symbols) gets a row of -1.
        """
        k_eff = min(k, self.size)
        rows = np.full((len(queries), k), -1, dtype=np.int64)
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        if not queries or k_eff == 0:
            return rows, scores
        tokens = self._bm25s.tokenize(
            list(queries),
            stopwords="en",
            stemmer=self._stemmer,
            show_progress=False,
            return_ids=False,
        )
        # A query with no token left after stop words and the tokenizer ("the", "!!!", an
        # emoji) matches nothing; bm25s cannot take an empty query, so it is not asked.
        asked = [i for i, query_tokens in enumerate(tokens) if query_tokens]
        if not asked:
            return rows, scores
        found_rows, found_scores = self._model.retrieve(
            [tokens[i] for i in asked], k=k_eff, show_progress=False, n_threads=1
        )
        positive = found_scores > 0
        rows[asked, :k_eff] = np.where(positive, found_rows, -1)
        scores[asked, :k_eff] = np.where(positive, found_scores, -np.inf)
        return rows, scores

    def score_all(self, query: str) -> np.ndarray:
        """BM25 score of every product for ``query``, shape ``(size,)`` (0 without a query
        term)."""
        tokens = self._bm25s.tokenize(
            [query], stopwords="en", stemmer=self._stemmer, show_progress=False, return_ids=False
        )[0]
        if not tokens:
            return np.zeros(self.size, dtype=np.float32)
        return np.asarray(self._model.get_scores(tokens), dtype=np.float32)
