"""Reading user tables (CSV, TSV, Parquet, JSONL); errors name the file, line and column."""

from __future__ import annotations

import gzip
import hashlib
import logging
import re
import stat
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from shopaug.errors import DataError

logger = logging.getLogger(__name__)

TABLE_SUFFIXES = (".csv", ".tsv", ".parquet", ".jsonl", ".csv.gz", ".tsv.gz", ".jsonl.gz")


def check_readable(path: str | Path) -> Path:
    """``path`` as a :class:`Path` if it is a regular file this process can open.

    Raises:
        DataError: naming the file: it does not exist, is a broken symbolic link, a folder,
            not a regular file (a FIFO would block the reader), or cannot be opened
            (permission denied, I/O error).
    """
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        if path.is_symlink():
            raise DataError(
                f"is a broken symbolic link (it points to {path.readlink()}, which does not "
                "exist); fix the link or put the file there",
                path=path,
            ) from None
        raise DataError("file does not exist", path=path) from None
    except OSError as error:
        raise DataError(f"cannot be read: {error.strerror or error}", path=path) from error
    if stat.S_ISDIR(mode):
        raise DataError(
            "is a folder, expected a file (a table: .csv, .tsv, .parquet or .jsonl, "
            "optionally .gz)",
            path=path,
        )
    if not stat.S_ISREG(mode):
        raise DataError(
            "is not a regular file (a pipe, socket or device); expected a file", path=path
        )
    try:
        with open(path, "rb"):
            pass
    except PermissionError as error:
        raise DataError(
            "cannot be read: permission denied; give this user read access (chmod)", path=path
        ) from error
    except OSError as error:
        raise DataError(f"cannot be read: {error.strerror or error}", path=path) from error
    return path


def sha256_of(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes (:class:`DataError` naming the file if unreadable)."""
    digest = hashlib.sha256()
    path = check_readable(path)
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def find_table(folder: Path, stem: str) -> Path | None:
    """The file ``folder/stem.<suffix>`` for the first suffix that exists, or None.

    A broken symbolic link counts as existing, so that reading it names the link.
    """
    for suffix in TABLE_SUFFIXES:
        candidate = folder / f"{stem}{suffix}"
        if candidate.exists() or candidate.is_symlink():
            return candidate
    return None


def _first_bad_utf8_line(path: Path) -> tuple[int | None, str]:
    """1-based line and reason of the first line that is not UTF-8 (readers decode in chunks,
    so their byte offsets are not file offsets); gzip files are read decompressed."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rb") as handle:
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
        DataError: the file is missing, unreadable (see :func:`check_readable`), a truncated
            or corrupt gzip or Parquet file, not UTF-8, or a row has the wrong number of fields.
    """
    path = check_readable(path)
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
        try:
            line, reason = _first_bad_utf8_line(path)
        except (OSError, EOFError, zlib.error):
            line, reason = None, error.reason
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
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:
        raise DataError(
            f"is a truncated or corrupt gzip file ({error}); compress it again", path=path
        ) from error
    except (ValueError, OSError) as error:  # pandas' readers, pyarrow (ArrowInvalid, IOError)
        kind = "a truncated or corrupt Parquet file" if name.endswith(".parquet") else None
        detail = f"is {kind} ({error})" if kind else f"cannot be parsed: {error}"
        raise DataError(detail, path=path) from error


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
