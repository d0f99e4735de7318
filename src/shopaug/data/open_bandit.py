"""The Open Bandit Dataset (small version): ZOZOTOWN ad impressions with clicks and propensities.

Layout (see ``open-bandit-sample/PROVENANCE.md``)::

    <data dir>/open-bandit-sample/obd/<policy>/<campaign>/<campaign>.csv[.xz]
    <data dir>/open-bandit-sample/obd/<policy>/<campaign>/item_context.csv[.xz]

``policy`` is ``random`` (uniform logging policy) or ``bts`` (Bernoulli Thompson sampling);
``campaign`` is ``all``, ``men`` or ``women``. Each impression row is one item shown at one of
three slots (``position`` 1-3) with its ``click`` label, the logging policy's
``propensity_score``, four hashed user features and one ``user-item_affinity_<k>`` column per
item ``k`` of the campaign.

Items are joined only within one policy folder: the random and bts ``item_context`` files of
one campaign share ``item_id`` and ``item_feature_0`` but hash ``item_feature_1..3`` with
different tokens, so a token means nothing outside its own folder.

Every value is checked; a bad one raises :class:`~shopaug.errors.DataError` naming the file,
the line (header = line 1) and the column.

Example:
    >>> log = load_open_bandit("random", "men")  # doctest: +SKIP
    >>> log.n_items, len(log.impressions), int(log.impressions["click"].sum())  # doctest: +SKIP
    (34, 10000, 46)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from shopaug.data.loaders import data_dir
from shopaug.data.tables import data_line, read_table, require_columns
from shopaug.errors import DataError

logger = logging.getLogger(__name__)

FOLDER = "open-bandit-sample"
POLICIES = ("random", "bts")
CAMPAIGNS = ("all", "men", "women")
POSITIONS = (1, 2, 3)
USER_FEATURES = tuple(f"user_feature_{i}" for i in range(4))
ITEM_CATEGORICAL = tuple(f"item_feature_{i}" for i in (1, 2, 3))
IMPRESSION_COLUMNS = ("timestamp", "item_id", "position", "click", "propensity_score")
ITEM_COLUMNS = ("item_id", "item_feature_0", *ITEM_CATEGORICAL)
AFFINITY_PREFIX = "user-item_affinity_"
_SUFFIXES = (".csv", ".csv.xz", ".csv.gz")


@dataclass(frozen=True)
class BanditLog:
    """The impressions of one (policy, campaign) folder and the items of that same folder.

    Attributes:
        policy: ``random`` or ``bts``.
        campaign: ``all``, ``men`` or ``women``.
        impressions: One row per shown item, in time order: ``timestamp`` (UTC),
            ``item_id`` (int, 0..n_items-1), ``position`` (1-3), ``click`` (0/1),
            ``propensity_score`` (float in (0, 1]) and ``user_feature_0..3`` (str).
        items: ``item_id`` (int, 0..n_items-1 in order), ``item_feature_0`` (float) and
            ``item_feature_1..3`` (str tokens, meaningful only inside this folder).
        affinity: ``(len(impressions), n_items)`` float32, the user's affinity to every item.
        source: The impressions file.
    """

    policy: str
    campaign: str
    impressions: pd.DataFrame
    items: pd.DataFrame
    affinity: np.ndarray
    source: Path

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def name(self) -> str:
        return f"{self.policy}/{self.campaign}"

    def head(self, rows: int) -> BanditLog:
        """The first ``rows`` impressions in time order (a slice for quick runs)."""
        return BanditLog(
            self.policy,
            self.campaign,
            self.impressions.iloc[:rows].reset_index(drop=True),
            self.items,
            self.affinity[:rows],
            self.source,
        )


def _find(folder: Path, stem: str) -> Path:
    for suffix in _SUFFIXES:
        candidate = folder / f"{stem}{suffix}"
        if candidate.exists():
            return candidate
    raise DataError(
        f"file not found (looked for {', '.join(stem + s for s in _SUFFIXES)}); the Open Bandit "
        f"sample lives in <data dir>/{FOLDER}/obd/<policy>/<campaign>/: set SHOPAUG_DATA_DIR "
        "to the folder that holds it",
        path=folder / f"{stem}.csv",
    )


def _numbers(frame: pd.DataFrame, column: str, path: Path, kind: str) -> np.ndarray:
    """Column ``column`` as int64 or float64; the first unparsable cell is named."""
    parsed = pd.to_numeric(frame[column], errors="coerce")
    bad = parsed.isna().to_numpy().copy()
    if kind == "int":
        bad |= ~np.isclose(parsed.fillna(0).to_numpy(dtype=float) % 1, 0)
    else:
        bad |= ~np.isfinite(parsed.fillna(0).to_numpy(dtype=float))
    if bad.any():
        row = int(np.argmax(bad))
        expected = "an integer" if kind == "int" else "a finite number"
        raise DataError(
            f"value {frame[column].iloc[row]!r} is not {expected}",
            path=path,
            line=data_line(path, row),
            field=column,
        )
    return parsed.to_numpy(dtype=np.int64 if kind == "int" else np.float64)


def _first_bad(
    mask: np.ndarray, frame: pd.DataFrame, column: str, path: Path, expected: str
) -> None:
    if mask.any():
        row = int(np.argmax(mask))
        raise DataError(
            f"value {frame[column].iloc[row]!r}; expected {expected}",
            path=path,
            line=data_line(path, row),
            field=column,
        )


def _texts(frame: pd.DataFrame, column: str, path: Path) -> np.ndarray:
    values = frame[column].astype(str).str.strip()
    _first_bad((values == "").to_numpy(), frame, column, path, "a non-empty token")
    return values.to_numpy()


def read_items(path: Path) -> pd.DataFrame:
    """An ``item_context`` table: one row per item, ids 0..n-1 each exactly once."""
    frame = require_columns(read_table(path), path, list(ITEM_COLUMNS))
    if frame.empty:
        raise DataError("has no items", path=path)
    ids = _numbers(frame, "item_id", path, "int")
    seen: dict[int, int] = {}
    for row, item in enumerate(ids):
        if item in seen:
            raise DataError(
                f"item_id {item} appears again (first on line {data_line(path, seen[item])})",
                path=path,
                line=data_line(path, row),
                field="item_id",
            )
        seen[item] = row
    if sorted(seen) != list(range(len(ids))):
        missing = sorted(set(range(len(ids))) - set(seen))[:5]
        raise DataError(
            f"item ids must be 0..{len(ids) - 1} (one row each); missing {missing}",
            path=path,
            field="item_id",
        )
    items = pd.DataFrame(
        {
            "item_id": ids,
            "item_feature_0": _numbers(frame, "item_feature_0", path, "float"),
            **{column: _texts(frame, column, path) for column in ITEM_CATEGORICAL},
        }
    )
    return items.sort_values("item_id").reset_index(drop=True)


def read_impressions(path: Path, n_items: int) -> tuple[pd.DataFrame, np.ndarray]:
    """An impressions table checked against a catalog of ``n_items`` items.

    Returns:
        The impressions frame (see :class:`BanditLog`) in time order and the
        ``(rows, n_items)`` affinity matrix in the same order.
    """
    affinity_columns = [f"{AFFINITY_PREFIX}{k}" for k in range(n_items)]
    frame = require_columns(
        read_table(path), path, [*IMPRESSION_COLUMNS, *USER_FEATURES, *affinity_columns]
    )
    extra = [
        c for c in frame.columns if c.startswith(AFFINITY_PREFIX) and c not in affinity_columns
    ]
    if extra:
        raise DataError(
            f"affinity column(s) {', '.join(extra[:5])} name items outside the {n_items} items "
            "of item_context in the same folder",
            path=path,
        )
    if frame.empty:
        raise DataError("has no impressions", path=path)
    item_id = _numbers(frame, "item_id", path, "int")
    _first_bad((item_id < 0) | (item_id >= n_items), frame, "item_id", path, f"0..{n_items - 1}")
    position = _numbers(frame, "position", path, "int")
    _first_bad(~np.isin(position, POSITIONS), frame, "position", path, "1, 2 or 3")
    click = _numbers(frame, "click", path, "int")
    _first_bad(~np.isin(click, (0, 1)), frame, "click", path, "0 or 1")
    propensity = _numbers(frame, "propensity_score", path, "float")
    _first_bad((propensity <= 0) | (propensity > 1), frame, "propensity_score", path, "in (0, 1]")
    timestamp = pd.to_datetime(frame["timestamp"], errors="coerce", utc=True)
    _first_bad(timestamp.isna().to_numpy(), frame, "timestamp", path, "an ISO date-time")
    affinity = np.column_stack(
        [_numbers(frame, column, path, "float") for column in affinity_columns]
    ).astype(np.float32)
    impressions = pd.DataFrame(
        {
            "timestamp": timestamp,
            "item_id": item_id,
            "position": position,
            "click": click,
            "propensity_score": propensity,
            **{column: _texts(frame, column, path) for column in USER_FEATURES},
        }
    )
    order = np.argsort(impressions["timestamp"].to_numpy(), kind="stable")
    return impressions.iloc[order].reset_index(drop=True), affinity[order]


def load_open_bandit(policy: str, campaign: str, *, root: str | Path | None = None) -> BanditLog:
    """Load one (policy, campaign) folder of the Open Bandit sample.

    Args:
        policy: ``random`` or ``bts``.
        campaign: ``all``, ``men`` or ``women``.
        root: The data directory (default :func:`shopaug.data.loaders.data_dir`); the sample
            is read from ``root/open-bandit-sample/obd/<policy>/<campaign>/``.

    Raises:
        DataError: A file is missing, a column is missing, or a value is out of range (names
            the file, line and column).
        ValueError: ``policy`` or ``campaign`` is not one of the known names.
    """
    if policy not in POLICIES:
        raise ValueError(f"policy is {policy!r}; expected one of {', '.join(POLICIES)}")
    if campaign not in CAMPAIGNS:
        raise ValueError(f"campaign is {campaign!r}; expected one of {', '.join(CAMPAIGNS)}")
    folder = data_dir(root) / FOLDER / "obd" / policy / campaign
    items = read_items(_find(folder, "item_context"))
    source = _find(folder, campaign)
    impressions, affinity = read_impressions(source, len(items))
    logger.info(
        "open bandit %s/%s: %d impressions, %d clicks, %d items",
        policy,
        campaign,
        len(impressions),
        int(impressions["click"].sum()),
        len(items),
    )
    return BanditLog(policy, campaign, impressions, items, affinity, source)


def time_split(log: BanditLog, test_fraction: float) -> tuple[BanditLog, BanditLog]:
    """(earlier, later) parts of ``log`` by time; the later part holds ``test_fraction``.

    Raises:
        ValueError: ``test_fraction`` is not in (0, 1) or leaves a part empty.
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction is {test_fraction}; expected a number in (0, 1)")
    cut = round(len(log.impressions) * (1 - test_fraction))
    if cut <= 0 or cut >= len(log.impressions):
        raise ValueError(
            f"test_fraction {test_fraction} of {len(log.impressions)} impressions leaves a part "
            "empty"
        )
    frame = log.impressions
    early = BanditLog(
        log.policy,
        log.campaign,
        frame.iloc[:cut].reset_index(drop=True),
        log.items,
        log.affinity[:cut],
        log.source,
    )
    late = BanditLog(
        log.policy,
        log.campaign,
        frame.iloc[cut:].reset_index(drop=True),
        log.items,
        log.affinity[cut:],
        log.source,
    )
    return early, late


#: Columns of :func:`impression_table` and :func:`candidate_table` that describe a context and
#: an item (what a CTR model reads); categorical ones hold strings.
CATEGORICAL_FEATURES = (*USER_FEATURES, "campaign", "item", *ITEM_CATEGORICAL)
NUMERIC_FEATURES = ("item_feature_0", "affinity", "affinity_total")


def _item_columns(log: BanditLog, item_ids: np.ndarray) -> dict[str, np.ndarray]:
    items = log.items.set_index("item_id").loc[item_ids]
    # hashed tokens mean something only inside their own folder: keep the folder in the value
    return {
        "campaign": np.full(item_ids.size, log.campaign, dtype=object),
        "item": np.char.add(f"{log.campaign}:", item_ids.astype(str)).astype(object),
        "item_feature_0": items["item_feature_0"].to_numpy(dtype=np.float64),
        **{
            column: (f"{log.name}:" + items[column].astype(str)).to_numpy(dtype=object)
            for column in ITEM_CATEGORICAL
        },
    }


def impression_table(log: BanditLog) -> pd.DataFrame:
    """One row per logged impression: the features of :data:`CATEGORICAL_FEATURES` and
    :data:`NUMERIC_FEATURES`, ``position``, ``click``, ``propensity_score`` and ``item_id``.

    ``affinity`` is the user's affinity to the shown item, ``affinity_total`` the sum over
    every item of the campaign (how active the user was)."""
    frame = log.impressions
    item_ids = frame["item_id"].to_numpy()
    rows = np.arange(len(frame))
    return pd.DataFrame(
        {
            **{column: frame[column].to_numpy(dtype=object) for column in USER_FEATURES},
            **_item_columns(log, item_ids),
            "affinity": log.affinity[rows, item_ids].astype(np.float64),
            "affinity_total": log.affinity.sum(axis=1).astype(np.float64),
            "position": frame["position"].to_numpy(),
            "click": frame["click"].to_numpy(),
            "propensity_score": frame["propensity_score"].to_numpy(),
            "item_id": item_ids,
        }
    )


def candidate_table(log: BanditLog, *, position: int) -> pd.DataFrame:
    """Every item of the campaign for every logged context, at one ``position``:
    ``len(impressions) * n_items`` rows, context-major (row ``i * n_items + a`` is item ``a``
    in context ``i``), with the columns of :func:`impression_table` except the logged
    ``click`` and ``propensity_score``."""
    n, n_items = len(log.impressions), log.n_items
    item_ids = np.tile(np.arange(n_items), n)
    contexts = np.repeat(np.arange(n), n_items)
    frame = log.impressions
    return pd.DataFrame(
        {
            **{column: frame[column].to_numpy(dtype=object)[contexts] for column in USER_FEATURES},
            **_item_columns(log, item_ids),
            "affinity": log.affinity.reshape(-1).astype(np.float64),
            "affinity_total": np.repeat(log.affinity.sum(axis=1), n_items).astype(np.float64),
            "position": np.full(n * n_items, position),
            "item_id": item_ids,
        }
    )


__all__ = [
    "CAMPAIGNS",
    "CATEGORICAL_FEATURES",
    "NUMERIC_FEATURES",
    "POLICIES",
    "BanditLog",
    "candidate_table",
    "impression_table",
    "load_open_bandit",
    "read_impressions",
    "read_items",
    "time_split",
]
