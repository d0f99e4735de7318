"""UCI Online Retail: purchase lines -> cleaned baskets, product titles and a time-based split.

The raw file (``online-retail/online_retail.csv.xz`` under the data directory, see its
PROVENANCE.md) holds one row per invoice line. :func:`load_retail` applies these rules, in this
order, and counts the rows each one removes (``RetailData.cleaning``, also written to the run
manifest):

=======================  =========================================================================
rule                     rows removed
=======================  =========================================================================
``cancellation``         ``InvoiceNo`` starts with ``C`` (cancelled orders, negative quantities)
``adjustment``           ``InvoiceNo`` starts with ``A`` (bad-debt adjustments)
``non_product_code``     ``StockCode`` is postage, fees or manual lines: :data:`NON_PRODUCT_CODES`
                         or a ``gift_`` voucher
``missing_customer``     empty ``CustomerID`` (nobody to recommend to)
``non_positive_quantity``  ``Quantity <= 0`` (returns and corrections not marked as cancellations)
``non_positive_price``   ``UnitPrice <= 0`` (free lines, notes such as "damaged", "?")
=======================  =========================================================================

A product's title is the most frequent non-empty ``Description`` of its stock code among the kept
rows (ties: alphabetical), from rows before the cut date when it sold before the cut (so text
seen at training time never comes from the future), else from its own first rows.

:func:`time_split` cuts by invoice time. Training interactions are the invoice lines before
``cut``; the test basket of a customer is their first invoice at or after ``cut``, for every
customer with at least one invoice before it. The validation split is the same rule one step
earlier: training before ``cut - validation_days``, validation baskets from
``[cut - validation_days, cut)``. Model selection and early stopping read validation baskets
only; test baskets are read once, for the figure. Items first sold at or after ``cut`` are the
*new* items: they have a title but no training interaction, so only text can recommend them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from shopaug.data.tables import data_line, read_table, require_columns, sha256_of
from shopaug.errors import DataError

logger = logging.getLogger(__name__)

FOLDER = "online-retail"
FILE = "online_retail.csv.xz"
#: sha256 of the file as PROVENANCE.md lists it (checked with a warning, not an error).
CHECKSUM = "85965f5786965cc548d7105a7eccdfe5bce34fc3660e416f5c6e68594a816385"
COLUMNS = ("InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice")
CUSTOMER = "CustomerID"
#: Stock codes of lines that are not products (compared upper-case): postage, carriage,
#: discount, samples, manual, bank and marketplace fees, charity commission, bad-debt adjustment,
#: cushion pads used to even out prices.
NON_PRODUCT_CODES = frozenset(
    {"POST", "DOT", "M", "C2", "D", "S", "BANK CHARGES", "AMAZONFEE", "CRUK", "B", "PADS"}
)
VOUCHER_PREFIX = "GIFT_"
RENAMED = {"InvoiceNo": "invoice", "CustomerID": "customer_id", "StockCode": "item_id"}
#: The cleaning rules in the order they apply.
RULES = (
    "cancellation",
    "adjustment",
    "non_product_code",
    "missing_customer",
    "non_positive_quantity",
    "non_positive_price",
)


@dataclass(frozen=True)
class RetailData:
    """Cleaned purchase lines and product titles.

    Attributes:
        lines: One row per (invoice, item): ``invoice, customer_id, item_id, quantity,
            timestamp`` (``datetime64``), sorted by time, then invoice, then item.
        titles: Item id -> title (most frequent description; see :func:`product_titles`).
        cleaning: ``rows_read``, rows removed per rule of :data:`RULES`, ``malformed``
            (skipped only with ``skip_bad_rows``), ``rows_kept`` and ``lines`` (after merging
            repeated lines of one item in one invoice).
        source: The file read.
        checksum: Its sha256.
    """

    lines: pd.DataFrame
    titles: dict[str, str]
    cleaning: dict[str, int]
    source: str = ""
    checksum: str = ""

    def summary(self) -> dict[str, object]:
        """Counts for a manifest: cleaning rules, customers, items, invoices, date range."""
        return {
            "dataset": "online-retail",
            "cleaning": dict(self.cleaning),
            "customers": int(self.lines["customer_id"].nunique()),
            "items": len(self.titles),
            "invoices": int(self.lines["invoice"].nunique()),
            "first": str(self.lines["timestamp"].min()),
            "last": str(self.lines["timestamp"].max()),
        }


def retail_path(root: str | Path) -> Path:
    """The data file under the data directory ``root``, with a clear error when it is missing."""
    path = Path(root) / FOLDER / FILE
    if not path.exists():
        raise DataError(
            f"Online Retail file not found (expected {FOLDER}/{FILE} under the data directory). "
            "Set SHOPAUG_DATA_DIR to the folder that holds 'online-retail/', or pass --data-dir. "
            "The data is UCI Online Retail (id 352, CC BY 4.0).",
            path=path,
        )
    return path


def _parse_numbers(
    frame: pd.DataFrame, path: Path, *, skip_bad_rows: bool
) -> tuple[pd.DataFrame, int]:
    """Parse Quantity, UnitPrice and InvoiceDate; a bad value is an error naming its line."""
    quantity = pd.to_numeric(frame["Quantity"], errors="coerce")
    price = pd.to_numeric(frame["UnitPrice"], errors="coerce")
    when = pd.to_datetime(frame["InvoiceDate"], errors="coerce", format="%Y-%m-%d %H:%M:%S")
    bad = {
        "Quantity": quantity.isna() | quantity.ne(quantity.round()),
        "UnitPrice": price.isna(),
        "InvoiceDate": when.isna(),
    }
    bad_any = bad["Quantity"] | bad["UnitPrice"] | bad["InvoiceDate"]
    for column in ("InvoiceNo", "StockCode"):
        empty = frame[column].str.strip().eq("")
        bad[column] = empty
        bad_any |= empty
    if bad_any.any() and not skip_bad_rows:
        row = int(np.flatnonzero(bad_any.to_numpy())[0])
        column = next(c for c, mask in bad.items() if bool(mask.iloc[row]))
        expected = {
            "Quantity": "an integer",
            "UnitPrice": "a number",
            "InvoiceDate": "a date 'YYYY-MM-DD HH:MM:SS'",
            "InvoiceNo": "a non-empty invoice number",
            "StockCode": "a non-empty stock code",
        }[column]
        raise DataError(
            f"expected {expected}, got {frame[column].iloc[row]!r} "
            "(pass skip_bad_rows=True to skip and count such rows)",
            path=path,
            line=data_line(path, row),
            field=column,
        )
    out = frame.assign(Quantity=quantity, UnitPrice=price, InvoiceDate=when)
    return out.loc[~bad_any].copy(), int(bad_any.sum())


def _customer_ids(values: pd.Series) -> pd.Series:
    """``"17850.0"`` -> ``"17850"`` (the file writes ids as floats); empty stays empty."""
    text = values.str.strip()
    return text.str.replace(r"\.0+$", "", regex=True)


def clean_lines(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """Apply :data:`RULES` in order to parsed rows; returns the kept rows and rows removed per rule.

    Args:
        frame: Rows with the columns of :data:`COLUMNS` and ``CustomerID``, numbers parsed.
    """
    invoice = frame["InvoiceNo"].str.strip().str.upper()
    code = frame["StockCode"].str.strip().str.upper()
    customer = _customer_ids(frame[CUSTOMER])
    masks = {
        "cancellation": invoice.str.startswith("C"),
        "adjustment": invoice.str.startswith("A"),
        "non_product_code": code.isin(NON_PRODUCT_CODES) | code.str.startswith(VOUCHER_PREFIX),
        "missing_customer": customer.eq(""),
        "non_positive_quantity": frame["Quantity"] <= 0,
        "non_positive_price": frame["UnitPrice"] <= 0,
    }
    keep = pd.Series(True, index=frame.index)
    counts: dict[str, int] = {}
    for rule in RULES:
        removed = keep & masks[rule]
        counts[rule] = int(removed.sum())
        keep &= ~masks[rule]
    kept = frame.loc[keep].assign(
        InvoiceNo=invoice[keep], StockCode=frame["StockCode"].str.strip()[keep]
    )
    return kept.assign(CustomerID=customer[keep]), counts


def product_titles(rows: pd.DataFrame, cut: pd.Timestamp | None = None) -> dict[str, str]:
    """Item id -> its most frequent non-empty description (ties: alphabetically first).

    With ``cut``, an item sold before the cut takes its title from those rows only; an item first
    sold at or after it takes the title from its own rows.
    """
    described = rows.loc[rows["Description"].str.strip().ne(""), ["StockCode", "Description"]]
    described = described.assign(Description=described["Description"].str.strip())
    if cut is not None:
        when = rows.loc[described.index, "InvoiceDate"]
        first = when.groupby(described["StockCode"]).transform("min")
        described = described.loc[(when < cut) | (first >= cut)]
    counts = described.value_counts().reset_index(name="n")
    counts = counts.sort_values(["StockCode", "n", "Description"], ascending=[True, False, True])
    best = counts.drop_duplicates("StockCode")
    return dict(zip(best["StockCode"], best["Description"], strict=True))


def load_retail(
    root: str | Path | None = None,
    *,
    path: str | Path | None = None,
    title_cut: str | pd.Timestamp | None = None,
    skip_bad_rows: bool = False,
) -> RetailData:
    """Read and clean the Online Retail file.

    Args:
        root: Data directory holding ``online-retail/`` (see :func:`shopaug.data.data_dir`).
        path: The CSV (``.csv`` or ``.csv.xz``) itself; overrides ``root``.
        title_cut: Titles of items sold before this date come from rows before it.
        skip_bad_rows: Skip rows with an unparseable number, date or empty code and count them
            (``cleaning["malformed"]``) instead of raising.

    Raises:
        DataError: The file is missing, a column is missing, or a row is malformed (naming the
            file, line and column); or nothing is left after cleaning.
    """
    from shopaug.data.loaders import data_dir

    file = Path(path) if path is not None else retail_path(data_dir(root))
    frame = read_table(file)  # pandas reads .xz from the name
    frame = require_columns(frame, file, [*COLUMNS, CUSTOMER])
    rows_read = len(frame)
    parsed, malformed = _parse_numbers(frame, file, skip_bad_rows=skip_bad_rows)
    kept, counts = clean_lines(parsed)
    if kept.empty:
        raise DataError(f"no purchase line is left after cleaning ({counts})", path=file)
    cut = None if title_cut is None else pd.Timestamp(title_cut)
    titles = product_titles(kept, cut)
    untitled = ~kept["StockCode"].isin(titles.keys())
    counts["no_description"] = int(untitled.sum())
    kept = kept.loc[~untitled]
    lines = (
        kept.groupby(["InvoiceNo", "CustomerID", "StockCode"], sort=False)
        .agg(quantity=("Quantity", "sum"), timestamp=("InvoiceDate", "min"))
        .reset_index()
        .rename(columns=RENAMED)
    )
    lines = lines.sort_values(["timestamp", "invoice", "item_id"], kind="stable").reset_index(
        drop=True
    )
    lines["quantity"] = lines["quantity"].astype(np.int64)
    cleaning = {"rows_read": rows_read, "malformed": malformed, **counts}
    cleaning["rows_kept"] = len(kept)
    cleaning["lines"] = len(lines)
    used = set(lines["item_id"])
    logger.info("online-retail cleaning: %s", cleaning)
    return RetailData(
        lines=lines,
        titles={item: title for item, title in titles.items() if item in used},
        cleaning=cleaning,
        source=str(file),
        checksum=sha256_of(file),
    )


@dataclass(frozen=True)
class RetailSplit:
    """Training interactions and the next basket of each customer after the cut.

    Attributes:
        train: The lines (as :attr:`RetailData.lines`) before ``cut``.
        baskets: Customer id -> item ids of their first invoice at or after ``cut`` (customers
            with a training history only).
        cut: The cut date.
        new_items: Items first sold at or after ``cut`` (no training interaction).
        counts: Customers with a basket, customers after the cut without history (not
            evaluated), training lines.
    """

    train: pd.DataFrame
    baskets: dict[str, frozenset[str]]
    cut: pd.Timestamp
    new_items: frozenset[str]
    counts: dict[str, int] = field(default_factory=dict)

    def histories(self) -> dict[str, list[str]]:
        """Customer id -> item ids bought before the cut, oldest first (one per invoice line)."""
        grouped = self.train.groupby("customer_id", sort=False)["item_id"]
        return {str(customer): list(items) for customer, items in grouped}

    def item_counts(self) -> dict[str, int]:
        """Item id -> training lines (baskets holding it): the popularity nothing after the
        cut can change."""
        return {str(k): int(v) for k, v in self.train["item_id"].value_counts().items()}


def next_baskets(lines: pd.DataFrame, cut: pd.Timestamp, *, end: pd.Timestamp | None = None):
    """Split ``lines`` at ``cut``: (lines before, customer -> first basket in ``[cut, end)``,
    customers after the cut without history)."""
    before = lines.loc[lines["timestamp"] < cut]
    after = lines.loc[lines["timestamp"] >= cut]
    if end is not None:
        after = after.loc[after["timestamp"] < end]
    known = set(before["customer_id"])
    first = after.sort_values(["timestamp", "invoice"], kind="stable").drop_duplicates(
        "customer_id"
    )[["customer_id", "invoice"]]
    chosen = after.merge(first, on=["customer_id", "invoice"])
    baskets = {
        str(customer): frozenset(items)
        for customer, items in chosen.groupby("customer_id")["item_id"]
        if customer in known
    }
    cold = int(first["customer_id"].isin(known).eq(False).sum())
    return before, baskets, cold


def time_split(
    lines: pd.DataFrame,
    cut: str | pd.Timestamp,
    *,
    end: str | pd.Timestamp | None = None,
) -> RetailSplit:
    """Train on lines before ``cut``; each known customer's first invoice in ``[cut, end)``.

    Args:
        lines: :attr:`RetailData.lines`.
        cut: The cut date.
        end: Ignore invoices from this date on (the validation split ends at the test cut).

    Raises:
        DataError: No training line, or no customer with a basket after the cut.
    """
    cut = pd.Timestamp(cut)
    stop = None if end is None else pd.Timestamp(end)
    train, baskets, cold = next_baskets(lines, cut, end=stop)
    if train.empty or not baskets:
        raise DataError(
            f"the cut {cut} leaves {len(train)} training lines and {len(baskets)} customers "
            "with a later basket; choose a cut inside the data's date range",
            field="cut",
        )
    window = lines.loc[lines["timestamp"] >= cut]
    if stop is not None:
        window = window.loc[window["timestamp"] < stop]
    new_items = frozenset(set(window["item_id"]) - set(train["item_id"]))
    counts = {
        "train_lines": len(train),
        "train_customers": int(train["customer_id"].nunique()),
        "customers_with_basket": len(baskets),
        "customers_without_history": cold,
        "new_items": len(new_items),
    }
    return RetailSplit(
        train=train.reset_index(drop=True),
        baskets=baskets,
        cut=cut,
        new_items=new_items,
        counts=counts,
    )


@dataclass(frozen=True)
class RetailSplits:
    """The validation split (for selection) and the test split (for the figure)."""

    validation: RetailSplit
    test: RetailSplit


def validation_and_test(
    lines: pd.DataFrame, cut: str | pd.Timestamp, *, validation_days: int
) -> RetailSplits:
    """Test split at ``cut``; validation split at ``cut - validation_days``, ending at ``cut``."""
    if validation_days < 1:
        raise DataError(f"validation_days must be >= 1, got {validation_days}", field="validation")
    cut = pd.Timestamp(cut)
    valid_cut = cut - pd.Timedelta(days=validation_days)
    return RetailSplits(
        validation=time_split(lines, valid_cut, end=cut), test=time_split(lines, cut)
    )


def subsample_customers(
    data: RetailData, n_customers: int, *, seed: int, min_invoices: int = 2
) -> RetailData:
    """Keep ``n_customers`` customers with at least ``min_invoices`` invoices (seeded draw) and
    every line of theirs; the quick profile's small slice of the real data."""
    per_customer = data.lines.groupby("customer_id")["invoice"].nunique()
    eligible = np.sort(per_customer.index[per_customer >= min_invoices].to_numpy(dtype=str))
    if n_customers >= len(eligible):
        return data
    chosen = np.random.default_rng(seed).choice(eligible, size=n_customers, replace=False)
    lines = data.lines.loc[data.lines["customer_id"].isin(set(chosen.tolist()))]
    used = set(lines["item_id"])
    cleaning = {**data.cleaning, "subsampled_customers": int(n_customers)}
    return RetailData(
        lines=lines.reset_index(drop=True),
        titles={k: v for k, v in data.titles.items() if k in used},
        cleaning=cleaning,
        source=data.source,
        checksum=data.checksum,
    )
