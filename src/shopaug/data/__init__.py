"""Data: typed records, loaders (WANDS, wands-subset, ESCI, generic folders, demo), splits."""

from __future__ import annotations

from pathlib import Path

from shopaug.data.records import (
    DEFAULT_TEXT_FIELDS,
    Dataset,
    Interaction,
    Judgment,
    Product,
    Query,
)
from shopaug.data.splits import (
    Fold,
    check_fold_index,
    kfold_queries,
    select_fold,
    validation_split,
    write_folds,
)

BUILTIN_DATASETS = ("demo", "wands-subset", "wands", "esci")


def load_dataset(
    name_or_path: str,
    *,
    data_dir: str | Path | None = None,
    products_path: str | Path | None = None,
    skip_bad_rows: bool = False,
    seed: int | None = None,
    demo_seed: int | None = None,
) -> Dataset:
    """Load a built-in data set by name, or a folder in the generic schema by path.

    Args:
        name_or_path: ``demo``, ``wands-subset``, ``wands``, ``esci`` or a folder.
        data_dir: where ``wands/`` and ``esci-subset/`` live (default ``$SHOPAUG_DATA_DIR``).
        products_path: a product file given on the command line (WANDS product.csv, ESCI text).
        skip_bad_rows: skip and count bad rows instead of stopping at the first.
        seed: the caller's run seed. Accepted so that a run config can be passed through, but
            it never changes the data: a data set's identity does not depend on the run seed.
            New code should not pass it.
        demo_seed: seed of the demo catalog (default :data:`shopaug.data.demo.DEMO_SEED`, which
            is the data set named ``demo``; another value gives a catalog named
            ``demo-seed<N>``). Ignored for other data sets.
    """
    from shopaug.data import demo, loaders

    del seed  # the run seed does not choose the data (see the docstring)
    if name_or_path == "demo":
        return demo.generate_demo(seed=demo.DEMO_SEED if demo_seed is None else demo_seed)
    if name_or_path == "wands-subset":
        return loaders.load_wands_subset(data_dir, skip_bad_rows=skip_bad_rows)
    if name_or_path == "wands":
        return loaders.load_wands(
            data_dir, products_path=products_path, skip_bad_rows=skip_bad_rows
        )
    if name_or_path == "esci":
        return loaders.load_esci(data_dir, products_path=products_path, skip_bad_rows=skip_bad_rows)
    return loaders.load_folder(name_or_path, skip_bad_rows=skip_bad_rows)


__all__ = [
    "BUILTIN_DATASETS",
    "DEFAULT_TEXT_FIELDS",
    "Dataset",
    "Fold",
    "Interaction",
    "Judgment",
    "Product",
    "Query",
    "check_fold_index",
    "kfold_queries",
    "load_dataset",
    "select_fold",
    "validation_split",
    "write_folds",
]
