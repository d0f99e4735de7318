"""Reading user tables (CSV, TSV, Parquet, JSONL); errors name the file, line and column."""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from shopaug.errors import DataError

logger = logging.getLogger(__name__)

TABLE_SUFFIXES = (".csv", ".tsv", ".parquet", ".jsonl", ".csv.gz", ".tsv.gz", ".jsonl.gz")


def sha256_of(path: str | Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def find_table(folder: Path, stem: str) -> Path | None:
    """The file ``folder/stem.<suffix>`` for the first suffix that exists, or None."""
    for suffix in TABLE_SUFFIXES:
        candidate = folder / f"{stem}{suffix}"
        if candidate.exists():
            return candidate
    return None


def _first_bad_utf8_line(path: Path) -> tuple[int | None, str]:
    """1-based line and reason of the first line that is not UTF-8 (readers decode in chunks,
    so their byte offsets are not file offsets)."""
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as error:
                return number, f"byte {error.start + 1} of the line: {error.reason}"
    return None, "undecodable bytes"


def read_table(path: str | Path, *, sep: str | None = None) -> pd.DataFrame:
    """Read a table with every column as text (no NaN guessing, no type coercion).

    Args:
        path: a ``.csv``, ``.tsv``, ``.parquet`` or ``.jsonl`` file (optionally ``.gz``).
        sep: field separator for text files; default from the suffix (tab for ``.tsv``).

    Raises:
        DataError: the file is missing, not UTF-8, or a row has the wrong number of fields.
    """
    path = Path(path)
    if not path.exists():
        raise DataError("file does not exist", path=path)
    name = path.name.lower()
    try:
        if name.endswith(".parquet"):
            frame = pd.read_parquet(path)
            return frame.astype({c: "string" for c in frame.columns}).fillna("").astype(object)
        if name.endswith((".jsonl", ".jsonl.gz")):
            frame = pd.read_json(path, lines=True, dtype=False)
            return frame.astype(object).where(frame.notna(), "").astype(str).astype(object)
        if sep is None:
            sep = "\t" if ".tsv" in name else ","
        return pd.read_csv(
            path,
            sep=sep,
            dtype=str,
            keep_default_na=False,
            na_filter=False,
            encoding="utf-8",
            quoting=3 if sep == "\t" else 0,  # tabs: no quoting, as in WANDS
        )
    except UnicodeDecodeError as error:
        line, reason = (
            _first_bad_utf8_line(path) if not name.endswith(".gz") else (None, error.reason)
        )
        raise DataError(
            f"is not valid UTF-8 ({reason}); save the file as UTF-8",
            path=path,
            line=line,
        ) from error
    except pd.errors.ParserError as error:
        match = re.search(r"line (\d+)", str(error))
        raise DataError(
            f"malformed row: {error}", path=path, line=int(match.group(1)) if match else None
        ) from error
    except ValueError as error:  # pandas' JSON reader
        raise DataError(f"cannot be parsed: {error}", path=path) from error


def require_columns(
    frame: pd.DataFrame,
    path: Path,
    required: Sequence[str],
    *,
    aliases: dict[str, str] | None = None,
) -> pd.DataFrame:
    """Rename known aliases and fail with the missing column names and the columns found."""
    if aliases:
        frame = frame.rename(columns={a: c for a, c in aliases.items() if a in frame.columns})
    missing = [column for column in required if column not in frame.columns]
    if missing:
        found = ", ".join(map(str, frame.columns)) or "(none)"
        raise DataError(
            f"missing column(s) {', '.join(missing)}; "
            f"expected {', '.join(required)}, found {found}",
            path=path,
        )
    return frame


def data_line(path: Path, row: int) -> int:
    """1-based line of 0-based data row ``row`` (header counts as line 1 for text tables)."""
    name = path.name.lower()
    if name.endswith((".jsonl", ".jsonl.gz")):
        return row + 1
    if name.endswith(".parquet"):
        return row + 1  # row number; Parquet has no lines
    return row + 2


@dataclass
class RowProblems:
    """Bad rows found while validating; raised at once or, when skipping, counted and reported."""

    skip: bool
    skipped: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)

    def report(self, message: str, *, path: Path, row: int, field: str | None = None) -> None:
        error = DataError(message, path=path, line=data_line(path, row), field=field)
        if not self.skip:
            raise error
        key = f"{path.name}: {message.split(' (')[0]}"
        self.skipped[key] = self.skipped.get(key, 0) + 1
        if len(self.examples) < 10:
            self.examples.append(str(error))
        logger.warning("skipping %s", error)

    @property
    def total(self) -> int:
        return sum(self.skipped.values())
