"""Loaders for WANDS, the WANDS product subset, ESCI judgments and the generic folder schema.

Every loader validates what it reads and raises :class:`~shopaug.errors.DataError` naming the
file, line and column. With ``skip_bad_rows=True`` bad rows are skipped instead, counted in
``Dataset.skipped`` (never silently dropped).

Why one module of this length: one loader per data set, sharing the table readers' error
conventions (file, line, column) and the checksum rules.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from shopaug.data.records import EVENTS, Dataset, Interaction, Judgment, Product, Query
from shopaug.data.tables import (
    RowProblems,
    check_readable,
    find_table,
    read_table,
    require_columns,
    sha256_of,
)
from shopaug.errors import DataError

logger = logging.getLogger(__name__)

WANDS_GAINS = {"Exact": 2, "Partial": 1, "Irrelevant": 0}
WANDS_EXACT_ONLY_GAINS = {"Exact": 1}
#: ESCI ratings as the OpenSearch judgment file writes them: Exact 100, Substitute 10,
#: Complement 1, Irrelevant 0. Gains follow the ESCI paper's E=3, S=2, C=1, I=0 ordering.
ESCI_GAINS = {"100": 3, "10": 2, "1": 1, "0": 0}

#: sha256 of the original WANDS files (wayfair/WANDS@3b74dcf) and of our product subset.
WANDS_CHECKSUMS = {
    "query.csv": "63b61660560fecc33ec490804c7e2b81402ee3e7c31a9cbb5e03736639f68e95",
    "label.csv": "c11fe81ad62f17f56f316b0ec9630ebe8fbe1393578cb0ca4f05c17253a180ef",
    "product.csv": "d993926254572e6eba96c8fd87cc549a17fb91ad3748308036eee4cf92b10ac6",
    "product_subset.tsv": "745df92a7227db699edff894e2b37c76f42f251c42a44821621880558b44d362",
}

PRODUCT_CSV_HELP = (
    "The full WANDS catalog (product.csv, 42,994 products, tab-separated) is not bundled. "
    "Download it from https://github.com/wayfair/WANDS (file dataset/product.csv, MIT licence; "
    "with git-lfs or the raw file link) and put it at {target}, or pass its path with "
    "--products PATH. Without it, use the 'wands-subset' data set (5,113 real products)."
)


def data_dir(explicit: str | Path | None = None) -> Path:
    """The data directory: the argument, else ``$SHOPAUG_DATA_DIR``, else ``./data``."""
    if explicit is not None:
        return Path(explicit)
    return Path(os.environ.get("SHOPAUG_DATA_DIR", "data"))


def verify_checksum(path: Path, expected: str | None, *, strict: bool = False) -> str:
    """Compute ``path``'s sha256; warn (raise when ``strict``) if it differs from ``expected``."""
    actual = sha256_of(path)
    if expected is not None and actual != expected:
        message = (
            f"checksum differs from the known original (sha256 {actual[:12]}..., expected "
            f"{expected[:12]}...): results may not compare with published figures"
        )
        if strict:
            raise DataError(message, path=path)
        logger.warning("%s: %s", path, message)
    return actual


def _wands_folder(root: Path) -> Path:
    folder = root / "wands"
    if not (folder / "query.csv").exists():
        raise DataError(
            f"WANDS files not found in {folder} (need query.csv and label.csv). Set "
            "SHOPAUG_DATA_DIR to the folder that holds 'wands/', or pass --data-dir. "
            "The files come from https://github.com/wayfair/WANDS (dataset/).",
            path=folder / "query.csv",
        )
    return folder


def _read_queries(path: Path, problems: RowProblems, *, sep: str | None = None) -> list[Query]:
    """Queries of a table with ``query_id`` and ``query`` (optional ``query_class``)."""
    frame = require_columns(
        read_table(path, sep=sep),
        path,
        ["query_id", "query"],
        aliases={"id": "query_id", "text": "query"},
    )
    classes = frame["query_class"] if "query_class" in frame.columns else [""] * len(frame)
    queries: list[Query] = []
    seen: set[str] = set()
    for row, (qid, text, qclass) in enumerate(zip(frame["query_id"], frame["query"], classes)):
        qid, text = str(qid).strip(), str(text).strip()
        if not text:
            problems.report("empty query text", path=path, row=row, field="query")
        elif qid in seen:
            problems.report(f"duplicate query_id {qid!r}", path=path, row=row, field="query_id")
        else:
            seen.add(qid)
            queries.append(Query(id=qid, text=text, query_class=str(qclass)))
    return queries


def _read_wands_labels(
    path: Path, problems: RowProblems, product_ids: set[str] | None, query_ids: set[str]
) -> tuple[list[Judgment], int]:
    """Judgments of ``label.csv``; with ``product_ids`` given, labels of other products are
    outside the catalog (counted, not errors)."""
    frame = require_columns(read_table(path, sep="\t"), path, ["query_id", "product_id", "label"])
    judgments: list[Judgment] = []
    outside = 0
    for row, (qid, pid, label) in enumerate(
        zip(frame["query_id"], frame["product_id"], frame["label"])
    ):
        if label not in WANDS_GAINS:
            problems.report(
                f"unknown label {label!r}; expected Exact, Partial or Irrelevant",
                path=path,
                row=row,
                field="label",
            )
            continue
        if qid not in query_ids:
            problems.report(f"unknown query_id {qid!r}", path=path, row=row, field="query_id")
            continue
        if product_ids is not None and pid not in product_ids:
            outside += 1
            continue
        judgments.append(Judgment(query_id=str(qid), product_id=str(pid), label=str(label)))
    return judgments, outside


def _wands_attributes(features: str) -> dict[str, str]:
    """``product_features`` of WANDS: ``name:value|name:value``."""
    attributes: dict[str, str] = {}
    for item in features.split("|"):
        name, sep, value = item.partition(":")
        if sep and name.strip() and value.strip():
            attributes[name.strip().lower()] = value.strip()
    return attributes


def _products_from_frame(
    frame: pd.DataFrame,
    path: Path,
    problems: RowProblems,
    *,
    id_column: str,
    title_column: str,
    text_column: str | None,
    category_column: str | None,
    category_sep: str,
    attributes_column: str | None = None,
) -> list[Product]:
    products: list[Product] = []
    seen: set[str] = set()
    columns = frame.columns
    for row, record in enumerate(frame.itertuples(index=False, name=None)):
        values = dict(zip(columns, record))
        pid = str(values[id_column]).strip()
        title = str(values[title_column]).strip()
        if not pid:
            problems.report("empty product id", path=path, row=row, field=id_column)
            continue
        if pid in seen:
            problems.report(f"duplicate product id {pid!r}", path=path, row=row, field=id_column)
            continue
        if not title:
            problems.report(
                f"empty product title for {pid!r}", path=path, row=row, field=title_column
            )
            continue
        seen.add(pid)
        category: tuple[str, ...] = ()
        if category_column and values.get(category_column):
            category = tuple(
                part.strip()
                for part in str(values[category_column]).split(category_sep)
                if part.strip()
            )
        attributes: dict[str, str] = {}
        if attributes_column and values.get(attributes_column):
            raw = str(values[attributes_column])
            if raw.lstrip().startswith("{"):
                try:
                    attributes = {str(k): str(v) for k, v in json.loads(raw).items()}
                except json.JSONDecodeError as error:
                    problems.report(
                        f"attributes is not a JSON object: {error}",
                        path=path,
                        row=row,
                        field=attributes_column,
                    )
                    continue
            else:
                attributes = _wands_attributes(raw)
        for key, value in values.items():
            if str(key).startswith("attr_") and str(value).strip():
                attributes[str(key)[5:]] = str(value).strip()
        products.append(
            Product(
                id=pid,
                title=title,
                text=str(values[text_column]).strip() if text_column else "",
                category=category,
                attributes=attributes,
            )
        )
    return products


def _finish(dataset: Dataset, problems: RowProblems) -> Dataset:
    dataset.skipped = dict(problems.skipped)
    if problems.total:
        logger.warning(
            "%s: skipped %d bad rows: %s", dataset.name, problems.total, problems.skipped
        )
    return dataset


def load_wands(
    root: str | Path | None = None,
    *,
    products_path: str | Path | None = None,
    skip_bad_rows: bool = False,
    strict_checksums: bool = False,
) -> Dataset:
    """Full WANDS: 42,994 products, 480 queries, 233,448 labels (needs the user's product.csv)."""
    folder = _wands_folder(data_dir(root))
    product_file = Path(products_path) if products_path else folder / "product.csv"
    if not product_file.exists() and not product_file.is_symlink():
        raise DataError(PRODUCT_CSV_HELP.format(target=folder / "product.csv"), path=product_file)
    problems = RowProblems(skip=skip_bad_rows)
    checksums = {
        name: verify_checksum(folder / name, WANDS_CHECKSUMS[name], strict=strict_checksums)
        for name in ("query.csv", "label.csv")
    }
    checksums["product.csv"] = verify_checksum(
        product_file, WANDS_CHECKSUMS["product.csv"], strict=strict_checksums
    )
    frame = require_columns(
        read_table(product_file, sep="\t"),
        product_file,
        ["product_id", "product_name", "product_class"],
    )
    for optional in ("category hierarchy", "product_description", "product_features"):
        if optional not in frame.columns:
            frame[optional] = ""
    products = _products_from_frame(
        frame,
        product_file,
        problems,
        id_column="product_id",
        title_column="product_name",
        text_column="product_description",
        category_column="category hierarchy",
        category_sep="/",
        attributes_column="product_features",
    )
    # The class is the most specific category: append it when the hierarchy lacks it.
    classes = dict(zip(frame["product_id"].astype(str), frame["product_class"].astype(str)))
    products = [_with_class(p, classes.get(p.id, "")) for p in products]
    queries = _read_queries(folder / "query.csv", problems, sep="\t")
    judgments, _ = _read_wands_labels(
        folder / "label.csv", problems, {p.id for p in products}, {q.id for q in queries}
    )
    dataset = Dataset(
        name="wands",
        products=products,
        queries=queries,
        judgments=judgments,
        gains=dict(WANDS_GAINS),
        source=str(folder),
        checksums=checksums,
    )
    return _finish(dataset, problems)


def _with_class(product: Product, product_class: str) -> Product:
    if not product_class or (product.category and product.category[-1] == product_class):
        return product
    return Product(
        id=product.id,
        title=product.title,
        text=product.text,
        category=(*product.category, product_class),
        attributes=product.attributes,
    )


def load_wands_subset(
    root: str | Path | None = None, *, skip_bad_rows: bool = False, strict_checksums: bool = False
) -> Dataset:
    """WANDS queries and labels over the 5,113-product subset in ``wands/product_subset.tsv``.

    Ranks over these products only: labels of other products are left out (counted in the log),
    and only queries with at least one Exact or Partial product in the subset are kept. The
    data set is named ``wands-subset`` everywhere so its numbers are never mistaken for
    full-catalog WANDS figures.
    """
    folder = _wands_folder(data_dir(root))
    product_file = folder / "product_subset.tsv"
    if not product_file.exists() and not product_file.is_symlink():
        raise DataError(
            "the WANDS product subset is missing (see shared/data/wands/PROVENANCE.md)",
            path=product_file,
        )
    problems = RowProblems(skip=skip_bad_rows)
    checksums = {
        name: verify_checksum(folder / name, WANDS_CHECKSUMS[name], strict=strict_checksums)
        for name in ("query.csv", "label.csv", "product_subset.tsv")
    }
    frame = require_columns(
        read_table(product_file, sep="\t"),
        product_file,
        ["product_id", "product_name", "product_class", "product_description_first500"],
    )
    products = _products_from_frame(
        frame,
        product_file,
        problems,
        id_column="product_id",
        title_column="product_name",
        text_column="product_description_first500",
        category_column="product_class",
        category_sep="|",
    )
    queries = _read_queries(folder / "query.csv", problems, sep="\t")
    judgments, outside = _read_wands_labels(
        folder / "label.csv", problems, {p.id for p in products}, {q.id for q in queries}
    )
    relevant = {j.query_id for j in judgments if WANDS_GAINS[j.label] > 0}
    kept_queries = [q for q in queries if q.id in relevant]
    judgments = [j for j in judgments if j.query_id in relevant]
    logger.info(
        "wands-subset: %d products, %d of %d queries have an Exact or Partial product in it, "
        "%d labels kept, %d labels of products outside the subset left out",
        len(products),
        len(kept_queries),
        len(queries),
        len(judgments),
        outside,
    )
    dataset = Dataset(
        name="wands-subset",
        products=products,
        queries=kept_queries,
        judgments=judgments,
        gains=dict(WANDS_GAINS),
        source=str(folder),
        checksums=checksums,
    )
    return _finish(dataset, problems)


def load_esci(
    root: str | Path | None = None,
    *,
    products_path: str | Path | None = None,
    skip_bad_rows: bool = False,
) -> Dataset:
    """ESCI judgments from the OpenSearch judgment file (150 US queries, 6,678 judgments).

    The subset ships no product text: pass ``products_path`` (a table with ``product_id`` and
    ``product_title``, optional ``product_description``) to rank. Without it products carry their
    ASIN as title, which is enough for ``data check`` and audits but not for retrieval.
    """
    folder = data_dir(root) / "esci-subset"
    path = folder / "opensearch_esci_us_judgments.json"
    if not path.exists() and not path.is_symlink():
        raise DataError("ESCI judgment file not found; set SHOPAUG_DATA_DIR", path=path)
    try:
        ratings = json.loads(check_readable(path).read_text(encoding="utf-8"))["judgmentRatings"]
    except UnicodeDecodeError as error:
        raise DataError(f"is not valid UTF-8 ({error.reason})", path=path) from error
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise DataError(f"not an OpenSearch judgment file: {error}", path=path) from error
    queries: list[Query] = []
    judgments: list[Judgment] = []
    asins: list[str] = []
    seen_asins: set[str] = set()
    for number, entry in enumerate(ratings):
        qid = f"esci-{number}"
        queries.append(Query(id=qid, text=str(entry["query"]).strip()))
        for rating in entry["ratings"]:
            label = str(int(float(rating["rating"])))
            judgments.append(Judgment(query_id=qid, product_id=str(rating["docId"]), label=label))
            if rating["docId"] not in seen_asins:
                seen_asins.add(rating["docId"])
                asins.append(rating["docId"])
    problems = RowProblems(skip=skip_bad_rows)
    if products_path is not None:
        product_file = Path(products_path)
        frame = require_columns(
            read_table(product_file),
            product_file,
            ["product_id", "product_title"],
            aliases={"title": "product_title", "id": "product_id"},
        )
        has_text = "product_description" in frame.columns
        products = _products_from_frame(
            frame,
            product_file,
            problems,
            id_column="product_id",
            title_column="product_title",
            text_column="product_description" if has_text else None,
            category_column=None,
            category_sep="|",
        )
        known = {p.id for p in products}
        judgments = [j for j in judgments if j.product_id in known]
    else:
        products = [Product(id=asin, title=asin) for asin in asins]
    dataset = Dataset(
        name="esci",
        products=products,
        queries=queries,
        judgments=judgments,
        gains=dict(ESCI_GAINS),
        source=str(folder),
        checksums={path.name: sha256_of(path)},
    )
    dataset.has_text = products_path is not None
    return _finish(dataset, problems)


GENERIC_SCHEMA = """\
A data folder holds four tables, each as .csv, .tsv, .parquet or .jsonl (UTF-8):
  products      product_id, title; optional text, category ('A > B > C'), attributes
                (a JSON object) and attr_<name> columns
  queries       query_id, query
  judgments     query_id, product_id, grade (an integer gain, 0 = irrelevant)
  interactions  (optional) user_id, product_id, event (impression|click|add_to_cart|purchase);
                optional session_id, query_id, position, timestamp
"""


def load_folder(path: str | Path, *, skip_bad_rows: bool = False) -> Dataset:
    """A user's own data in the generic schema (see :data:`GENERIC_SCHEMA`)."""
    folder = Path(path)
    if not folder.is_dir():
        raise DataError(
            f"not a folder and not a known data set name.\n{GENERIC_SCHEMA}", path=folder
        )
    problems = RowProblems(skip=skip_bad_rows)
    tables: dict[str, Path] = {}
    for stem in ("products", "queries", "judgments"):
        found = find_table(folder, stem)
        if found is None:
            raise DataError(
                f"missing table '{stem}' (.csv, .tsv, .parquet or .jsonl).\n{GENERIC_SCHEMA}",
                path=folder / f"{stem}.csv",
            )
        tables[stem] = found
    product_frame = require_columns(
        read_table(tables["products"]),
        tables["products"],
        ["product_id", "title"],
        aliases={"id": "product_id", "product_title": "title", "name": "title"},
    )
    products = _products_from_frame(
        product_frame,
        tables["products"],
        problems,
        id_column="product_id",
        title_column="title",
        text_column="text" if "text" in product_frame.columns else None,
        category_column="category" if "category" in product_frame.columns else None,
        category_sep=">",
        attributes_column="attributes" if "attributes" in product_frame.columns else None,
    )
    queries = _read_queries(tables["queries"], problems)
    judgments = _generic_judgments(tables["judgments"], problems, products, queries)
    grades = sorted({int(j.label) for j in judgments})
    interactions = _generic_interactions(folder, problems, products, queries)
    dataset = Dataset(
        name=folder.name,
        products=products,
        queries=queries,
        judgments=judgments,
        gains={str(g): g for g in grades},
        interactions=interactions,
        source=str(folder),
        checksums={p.name: sha256_of(p) for p in tables.values()},
    )
    return _finish(dataset, problems)


def _generic_judgments(
    path: Path, problems: RowProblems, products: Iterable[Product], queries: Iterable[Query]
) -> list[Judgment]:
    frame = require_columns(
        read_table(path),
        path,
        ["query_id", "product_id", "grade"],
        aliases={"label": "grade", "relevance": "grade"},
    )
    product_ids = {p.id for p in products}
    query_ids = {q.id for q in queries}
    judgments: list[Judgment] = []
    seen: set[tuple[str, str]] = set()
    for row, (qid, pid, grade) in enumerate(
        zip(frame["query_id"], frame["product_id"], frame["grade"])
    ):
        qid, pid, grade = str(qid).strip(), str(pid).strip(), str(grade).strip()
        try:
            value = int(float(grade))
        except ValueError:
            problems.report(f"grade {grade!r} is not a number", path=path, row=row, field="grade")
            continue
        if value < 0:
            problems.report(f"grade {value} is negative", path=path, row=row, field="grade")
        elif qid not in query_ids:
            problems.report(f"unknown query_id {qid!r}", path=path, row=row, field="query_id")
        elif pid not in product_ids:
            problems.report(f"unknown product_id {pid!r}", path=path, row=row, field="product_id")
        elif (qid, pid) in seen:
            problems.report(f"duplicate judgment for ({qid!r}, {pid!r})", path=path, row=row)
        else:
            seen.add((qid, pid))
            judgments.append(Judgment(query_id=qid, product_id=pid, label=str(value)))
    return judgments


def _generic_interactions(
    folder: Path, problems: RowProblems, products: Iterable[Product], queries: Iterable[Query]
) -> list[Interaction]:
    path = find_table(folder, "interactions")
    if path is None:
        return []
    frame = require_columns(read_table(path), path, ["user_id", "product_id", "event"])
    product_ids = {p.id for p in products}
    query_ids = {q.id for q in queries}
    interactions: list[Interaction] = []
    for row, values in enumerate(frame.to_dict("records")):
        pid, event = str(values["product_id"]).strip(), str(values["event"]).strip()
        qid = str(values.get("query_id", "")).strip()
        if event not in EVENTS:
            problems.report(
                f"unknown event {event!r}; expected one of {', '.join(EVENTS)}",
                path=path,
                row=row,
                field="event",
            )
            continue
        if pid not in product_ids:
            problems.report(f"unknown product_id {pid!r}", path=path, row=row, field="product_id")
            continue
        if qid and qid not in query_ids:
            problems.report(f"unknown query_id {qid!r}", path=path, row=row, field="query_id")
            continue
        try:
            position = int(values["position"]) if str(values.get("position", "")).strip() else None
            timestamp = (
                float(values["timestamp"]) if str(values.get("timestamp", "")).strip() else None
            )
        except ValueError as error:
            problems.report(f"not a number: {error}", path=path, row=row)
            continue
        interactions.append(
            Interaction(
                user_id=str(values["user_id"]),
                product_id=pid,
                event=event,
                session_id=str(values.get("session_id", "")),
                query_id=qid,
                position=position,
                timestamp=timestamp,
            )
        )
    return interactions
