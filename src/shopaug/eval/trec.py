"""Read and write runs and judgments in the TREC formats that trec_eval, ranx and ir-measures read.

Run file, one line per retrieved product: ``query_id Q0 product_id rank score tag`` (rank is
1-based). Qrels file, one line per judgment: ``query_id 0 product_id gain``. Fields are separated
by single spaces, so an id holding whitespace cannot be written; it is rejected with an error
rather than silently split.

Scores are written with full precision (``repr``), because the tools re-sort each ranking by score
(trec_eval breaks ties by product id, not by rank): a ranking whose scores are not strictly
decreasing may be read back by them in another order, and a warning says so.

Example:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "run.trec"
    >>> _ = write_trec_run({"q1": [("p9", 2.5), ("p3", 1.0)]}, path, tag="bm25")
    >>> path.read_text().splitlines()[0]
    'q1 Q0 p9 1 2.5 bm25'
    >>> read_trec_run(path)
    {'q1': [('p9', 2.5), ('p3', 1.0)]}
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from shopaug.errors import DataError

logger = logging.getLogger(__name__)


def _check_id(value: object, *, field: str, query_id: str | None = None) -> str:
    where = "" if query_id is None else f"query {query_id!r}: "
    if not isinstance(value, str) or not value:
        raise DataError(f"{where}{field} must be a non-empty string, got {value!r}", field=field)
    if any(character.isspace() for character in value):
        raise DataError(
            f"{where}{field} {value!r} holds whitespace, which the space-separated TREC format "
            "cannot represent; map ids to whitespace-free strings first",
            field=field,
        )
    return value


def _format_number(value: float, *, field: str, query_id: str) -> str:
    number = float(value)
    if not math.isfinite(number):
        raise DataError(f"query {query_id!r}: {field} must be finite, got {value!r}", field=field)
    if number.is_integer() and field == "gain":
        return str(int(number))
    return repr(number)


def write_trec_run(
    run: Mapping[str, Sequence[tuple[str, float]]],
    path: str | Path,
    tag: str,
    depth: int = 100,
) -> Path:
    """Write a run as a TREC run file, queries in sorted order, each cut at ``depth``.

    Args:
        run: Query id -> ``[(product id, score), ...]`` in rank order, best first.
        path: File to write (parent folders are created).
        tag: Run name in the last column (no whitespace).
        depth: Products kept per query (>= 1).

    Returns:
        The path written.

    Raises:
        DataError: An id or the tag is empty or holds whitespace, a score is not finite, or a
            product is ranked twice for one query.
    """
    if depth < 1:
        raise ValueError(f"depth must be positive, got {depth}")
    _check_id(tag, field="tag")
    lines: list[str] = []
    reordered = 0
    for query_id in sorted(run):
        _check_id(query_id, field="query_id")
        seen: set[str] = set()
        previous = math.inf
        out_of_order = False
        for rank, (product_id, score) in enumerate(run[query_id][:depth], start=1):
            _check_id(product_id, field="product_id", query_id=query_id)
            if product_id in seen:
                raise DataError(
                    f"query {query_id!r}: product {product_id!r} appears twice in the ranking",
                    field="product_id",
                )
            seen.add(product_id)
            text = _format_number(score, field="score", query_id=query_id)
            out_of_order |= float(score) >= previous
            previous = float(score)
            lines.append(f"{query_id} Q0 {product_id} {rank} {text} {tag}")
        reordered += out_of_order
    if reordered:
        logger.warning(
            "%s: %d queries have tied or increasing scores; tools that sort by score may "
            "read them in another order than the ranks",
            path,
            reordered,
        )
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return target


def write_trec_qrels(qrels: Mapping[str, Mapping[str, float]], path: str | Path) -> Path:
    """Write judgments as a TREC qrels file (``query_id 0 product_id gain``), sorted by ids.

    Integral gains are written as integers (trec_eval needs them); others as floats.

    Args:
        qrels: Query id -> ``{product id: gain}``.
        path: File to write (parent folders are created).

    Returns:
        The path written.

    Raises:
        DataError: An id is empty or holds whitespace, or a gain is not finite.
    """
    lines: list[str] = []
    for query_id in sorted(qrels):
        _check_id(query_id, field="query_id")
        for product_id in sorted(qrels[query_id]):
            _check_id(product_id, field="product_id", query_id=query_id)
            gain = _format_number(qrels[query_id][product_id], field="gain", query_id=query_id)
            lines.append(f"{query_id} 0 {product_id} {gain}")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return target


def _parse_number(text: str, *, path: Path, line: int, field: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan  # reported below with the same message as inf
    if not math.isfinite(value):
        raise DataError(
            f"expected a finite number, got {text!r}", path=path, line=line, field=field
        )
    return value


def read_trec_run(path: str | Path) -> dict[str, list[tuple[str, float]]]:
    """Read a TREC run file; each query's products come back ordered by the rank column.

    Args:
        path: A file of ``query_id Q0 product_id rank score tag`` lines (blank lines allowed).

    Returns:
        Query id -> ``[(product id, score), ...]`` in rank order.

    Raises:
        DataError: A line without 6 fields, a non-integer rank, a non-numeric score, or a
            product or rank repeated within a query; the message names the file and line.
    """
    source = Path(path)
    entries: dict[str, list[tuple[int, str, float]]] = {}
    seen: dict[str, set[str]] = {}
    with source.open(encoding="utf-8") as handle:
        for number, raw in enumerate(handle, start=1):
            fields = raw.split()
            if not fields:
                continue
            if len(fields) != 6:
                raise DataError(
                    f"expected 6 fields 'query_id Q0 product_id rank score tag', got {len(fields)}",
                    path=source,
                    line=number,
                )
            query_id, _, product_id, rank_text, score_text, _ = fields
            if not rank_text.isdigit():
                raise DataError(
                    f"expected a positive integer rank, got {rank_text!r}",
                    path=source,
                    line=number,
                    field="rank",
                )
            score = _parse_number(score_text, path=source, line=number, field="score")
            products = seen.setdefault(query_id, set())
            if product_id in products:
                raise DataError(
                    f"product {product_id!r} appears twice for query {query_id!r}",
                    path=source,
                    line=number,
                    field="product_id",
                )
            products.add(product_id)
            entries.setdefault(query_id, []).append((int(rank_text), product_id, score))
    run: dict[str, list[tuple[str, float]]] = {}
    for query_id, rows in entries.items():
        rows.sort(key=lambda row: row[0])
        ranks = [row[0] for row in rows]
        if len(set(ranks)) != len(ranks):
            raise DataError(f"query {query_id!r} repeats a rank", path=source, field="rank")
        run[query_id] = [(product_id, score) for _, product_id, score in rows]
    return run


def read_trec_qrels(path: str | Path) -> dict[str, dict[str, float]]:
    """Read a TREC qrels file of ``query_id iteration product_id gain`` lines.

    Args:
        path: The qrels file (blank lines allowed; the iteration column is ignored).

    Returns:
        Query id -> ``{product id: gain}``; gains are floats (integral ones compare equal to
        ints).

    Raises:
        DataError: A line without 4 fields, a non-numeric gain, or a (query, product) pair
            judged twice; the message names the file and line.
    """
    source = Path(path)
    qrels: dict[str, dict[str, float]] = {}
    with source.open(encoding="utf-8") as handle:
        for number, raw in enumerate(handle, start=1):
            fields = raw.split()
            if not fields:
                continue
            if len(fields) != 4:
                raise DataError(
                    f"expected 4 fields 'query_id 0 product_id gain', got {len(fields)}",
                    path=source,
                    line=number,
                )
            query_id, _, product_id, gain_text = fields
            gain = _parse_number(gain_text, path=source, line=number, field="gain")
            judgments = qrels.setdefault(query_id, {})
            if product_id in judgments:
                raise DataError(
                    f"product {product_id!r} is judged twice for query {query_id!r}",
                    path=source,
                    line=number,
                    field="product_id",
                )
            judgments[product_id] = gain
    return qrels
