"""A run's catalog and its vectors under a model: what the service and the online loop rank.

* :class:`CatalogSource`: where a run's catalog comes from (its ``config.yaml``, the
  ``products`` file included) and its test folds (``folds.json``): the one reader of both.
* :class:`RunCatalog`: the products and their rendered texts, loaded once.
* :func:`encode_catalog`: the catalog's vectors under an encoder, through the embedding cache
  (keyed by the model's one id, so a promoted copy of a model costs no re-encoding).
* :func:`load_model_catalog`: a model directory's encoders
  (:func:`shopaug.models.model_dir.load_towers`) and the catalog's vectors under its *item*
  encoder: a query tower's catalog comes from its frozen item model (through its adapter), not
  from its query encoder.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from shopaug.data import Dataset, kfold_queries, load_dataset
from shopaug.data.records import DEFAULT_TEXT_FIELDS, Product
from shopaug.data.splits import FOLDS_FILE
from shopaug.encoders.base import Encoder
from shopaug.encoders.cache import build_encoder
from shopaug.errors import ConfigError
from shopaug.models.model_dir import Towers, load_towers

logger = logging.getLogger(__name__)

RUN_CONFIG = "config.yaml"
#: How many directories above a model directory are searched for the run's config.yaml
#: (run/model, run/models/v0001-x and run/online/round-0001/model are all found).
_CONFIG_SEARCH_DEPTH = 4


@dataclass(frozen=True)
class CatalogSource:
    """What a run directory says about its data: the ``data``, ``data_dir``, ``products``,
    ``text_fields``, ``seed`` and ``folds`` of its config.yaml, and its ``folds.json``. The one
    reader of those files for every consumer of a run (serve, online, simulate)."""

    data: str
    data_dir: str | None
    text_fields: tuple[str, ...]
    seed: int = 0
    products: str | None = None
    folds: int = 5
    run_dir: Path | None = None

    @classmethod
    def from_run_dir(cls, run_dir: str | Path) -> CatalogSource:
        """Read ``run_dir/config.yaml``.

        Raises:
            ConfigError: the file is missing or has no ``data`` field; the message names it.
        """
        path = Path(run_dir) / RUN_CONFIG
        if not path.is_file():
            raise ConfigError(f"{path} does not exist; expected the run's config.yaml")
        payload = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(payload, dict) or not payload.get("data"):
            raise ConfigError(f"{path}: field 'data' (data set name or folder) is missing")
        fields = payload.get("text_fields") or DEFAULT_TEXT_FIELDS
        data_dir = payload.get("data_dir")
        products = payload.get("products")
        return cls(
            data=str(payload["data"]),
            data_dir=None if data_dir in (None, "") else str(data_dir),
            text_fields=tuple(str(f) for f in fields),
            seed=int(payload.get("seed", 0) or 0),
            products=None if products in (None, "") else str(products),
            folds=int(payload.get("folds", 5) or 5),
            run_dir=Path(run_dir),
        )

    def load(self) -> Dataset:
        """The data set this source names (with the run's ``products`` file when it had one).

        Raises:
            ConfigError: the run's ``products`` file is gone; the message names it.
        """
        if self.products is not None and not Path(self.products).is_file():
            raise ConfigError(
                f"{self.run_dir or 'the run'}: config.yaml names the product file "
                f"{self.products}, which does not exist any more; restore it (the run's "
                "catalog was read from it)"
            )
        return load_dataset(self.data, data_dir=self.data_dir, products_path=self.products)

    def test_fold(self, dataset: Dataset, index: int = 0) -> list[str]:
        """The test query ids of fold ``index``: from the run's ``folds.json``, or, for a run
        directory without one, the folds ``shopaug run`` writes for this data set, the
        config's ``folds`` and ``seed`` (:func:`shopaug.data.kfold_queries`)."""
        path = None if self.run_dir is None else self.run_dir / FOLDS_FILE
        if path is not None and path.is_file():
            try:
                payload = json.loads(path.read_text(encoding="utf-8"))
                return [str(q) for q in payload["folds"][index]["test"]]
            except (ValueError, KeyError, IndexError, TypeError) as error:
                raise ConfigError(
                    f"{path}: expected {{'folds': [{{'test': [query ids]}}, ...]}} with a fold "
                    f"{index}: {error}"
                ) from error
        splits = kfold_queries([q.id for q in dataset.queries], n_folds=self.folds, seed=self.seed)
        return [str(q) for q in splits[index].test]


def find_run_dir(model_dir: str | Path) -> Path:
    """The nearest directory at or above ``model_dir`` that holds a config.yaml.

    Raises:
        ConfigError: none within a few levels.
    """
    start = Path(model_dir).resolve()
    for candidate in [start, *start.parents][: _CONFIG_SEARCH_DEPTH + 1]:
        if (candidate / RUN_CONFIG).is_file():
            return candidate
    raise ConfigError(
        f"no {RUN_CONFIG} at or up to {_CONFIG_SEARCH_DEPTH} levels above {model_dir}; "
        "expected a model directory inside a run directory"
    )


@dataclass(frozen=True)
class RunCatalog:
    """The products of a run's data set and their texts (rendered with the run's fields)."""

    products: tuple[Product, ...]
    texts: tuple[str, ...]

    @property
    def product_ids(self) -> tuple[str, ...]:
        return tuple(product.id for product in self.products)

    @classmethod
    def from_dataset(cls, dataset: Dataset, text_fields: tuple[str, ...]) -> RunCatalog:
        """The catalog of ``dataset``.

        Raises:
            ConfigError: the data set has no product text.
        """
        if not dataset.has_text:
            raise ConfigError(
                f"data set {dataset.name!r} has no product text; nothing can be ranked"
            )
        texts = dataset.product_texts(text_fields)
        logger.info("catalog %s: %d products", dataset.name, len(texts))
        return cls(tuple(dataset.products), tuple(texts))


def encode_catalog(
    encoder: Encoder, texts: tuple[str, ...] | list[str], cache_dir: str | Path | None = None
) -> np.ndarray:
    """The vectors ``(len(texts), dim)`` of ``texts`` under ``encoder``, through the embedding
    cache in ``cache_dir`` (default ``$SHOPAUG_CACHE_DIR`` or ~/.cache/shopaug)."""
    cached = build_encoder(encoder, cache_dir)
    try:
        return cached.encode(list(texts))
    finally:
        cached.cache.close()


def load_model_catalog(
    model_dir: str | Path, texts: tuple[str, ...] | list[str], cache_dir: str | Path | None = None
) -> tuple[Towers, np.ndarray]:
    """The encoders of ``model_dir`` and the vectors ``(len(texts), dim)`` of ``texts`` under
    its item encoder, through the embedding cache (see :func:`encode_catalog`).

    Queries go through ``towers.query``; ``towers.version`` is the model version.

    Raises:
        FileNotFoundError: ``model_dir`` is not a model directory.
        ConfigError: its descriptor or weights are malformed.
    """
    towers = load_towers(model_dir)
    return towers, encode_catalog(towers.item, texts, cache_dir)
