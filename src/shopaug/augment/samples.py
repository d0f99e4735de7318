"""The samples table every augmentation method writes, with provenance, as deterministic Parquet."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

#: Column -> Arrow type of ``samples.parquet``; one row per (query, product) training pair.
SAMPLE_SCHEMA = pa.schema(
    [
        ("query_id", pa.string()),
        ("query", pa.string()),
        ("product_id", pa.string()),
        ("label", pa.int8()),  # 1 positive, 0 negative
        ("kind", pa.string()),  # "positive" | "negative"
        (
            "method",
            pa.string(),
        ),  # random, popular, bm25, dense, hybrid, near-miss, synthetic-queries, judged
        ("source", pa.string()),  # the model or rule that made the row
        ("seed", pa.int64()),
        ("score", pa.float64()),  # retriever score when there is one, else NaN
        ("rank", pa.int32()),  # retriever rank (1-based) when there is one, else -1
    ]
)
logger = logging.getLogger(__name__)

SAMPLE_COLUMNS = tuple(SAMPLE_SCHEMA.names)
#: Optional extra column: the text of a generated product variant (near-miss rewrites).
VARIANT_TEXT_COLUMN = "product_text"


def samples_frame(rows: list[dict[str, object]]) -> pd.DataFrame:
    """Rows -> a DataFrame with exactly the sample columns (plus ``product_text`` when present)."""
    frame = pd.DataFrame(rows)
    for column in SAMPLE_COLUMNS:
        if column not in frame.columns:
            frame[column] = pd.Series(dtype=object)
    columns = list(SAMPLE_COLUMNS)
    if VARIANT_TEXT_COLUMN in frame.columns:
        columns.append(VARIANT_TEXT_COLUMN)
    return frame[columns]


def write_samples(frame: pd.DataFrame, path: str | Path, *, scrub_pii: bool = True) -> Path:
    """Write ``frame`` as Parquet so that the same rows give byte-identical files.

    Rows are written in the given order (callers sort deterministically); no pandas index, no
    timestamps in the metadata. The file is written to a temporary name and renamed, so a crash
    never leaves a half-written file where a good one was. With ``scrub_pii``, e-mail
    addresses, phone numbers, card numbers, IBANs and street addresses in the ``query`` and
    ``product_text`` columns are replaced first (:mod:`shopaug.privacy.pii`) and the counts
    logged; ``frame`` itself is not changed.
    """
    path = Path(path)
    missing = [column for column in SAMPLE_COLUMNS if column not in frame.columns]
    if missing:
        raise ValueError(f"samples frame lacks columns {missing}")
    if scrub_pii:
        frame = _scrubbed(frame, path)
    fields = list(SAMPLE_SCHEMA)
    if VARIANT_TEXT_COLUMN in frame.columns:
        fields.append(pa.field(VARIANT_TEXT_COLUMN, pa.string()))
    schema = pa.schema(fields)
    table = pa.Table.from_pandas(
        frame[[f.name for f in fields]], schema=schema, preserve_index=False
    ).replace_schema_metadata(None)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp, compression="zstd", write_statistics=False)
    tmp.replace(path)
    return path


def _scrubbed(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    """A copy of ``frame`` whose text columns hold no personal data (the same frame when none)."""
    from shopaug.privacy.pii import default_scrubber

    scrubber = default_scrubber()
    replaced: dict[str, pd.Series] = {}
    for column in ("query", VARIANT_TEXT_COLUMN):
        if column not in frame.columns:
            continue
        values = frame[column]
        present = values.notna()
        texts, counts = scrubber.scrub_texts(values[present].astype(str))
        if counts:
            cleaned = values.copy()
            cleaned[present] = texts
            replaced[column] = cleaned
            logger.info("%s: replaced personal data in %r: %s", path, column, dict(counts))
    return frame.assign(**replaced) if replaced else frame


def read_samples(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"samples file {path} does not exist")
    frame = pq.read_table(path).to_pandas()
    missing = [column for column in SAMPLE_COLUMNS if column not in frame.columns]
    if missing:
        raise ValueError(f"{path}: not a shopaug samples file, it lacks columns {missing}")
    return frame
