"""Near-miss negatives: products that differ from a positive in exactly one attribute that the
query asks for ("blue velvet sofa" -> a *red* velvet sofa).

For each (query, positive product) pair the method picks the attributes whose value the query
names (falling back to the product type, then to any attribute), and for each makes a variant
that changes that attribute only:

1. a real catalog product, when one has the same category and the same value for every other
   extracted attribute, and is not a known positive of the query (``source="catalog"``);
2. otherwise a rewrite of the positive's title and description that swaps the value for another
   one seen in the catalog, on products of the same category when there are any (a new type
   must come from there: "rug" -> "runner", never "hive"); ``source="rule"``, the text in the
   ``product_text`` column under a synthetic id ``<pid>~<attribute>=<value>``. When a
   generator is configured it writes the new title instead (``source=<generator id>``); its
   text is used only if it passes validation (new value present, old value absent, every
   other attribute unchanged), else the rule rewrite is used and the rejection counted.

Rule rewrites beat a small base model at this (shared/ENVIRONMENT.md): keep the generator off
unless a strong one is at hand.

Example:
    >>> frame, stats = near_miss_negatives(dataset, dataset.positives(), NearMissConfig(seed=1))
    >>> frame[["query", "product_id", "source", "product_text"]].head(1)  # doctest: +SKIP
                 query          product_id source     product_text
    0  blue velvet sofa  p1~color=red       rule  red velvet sofa Sofas

Why one module of this length: the catalog search, the rule rewrite and the generator rewrite
are three ways to one validated near-miss, sharing the attribute checks.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import pandas as pd

from shopaug.augment.attributes import (
    AttributeVocabulary,
    differing_attributes,
    normalize_key,
    normalize_value,
    value_pattern,
)
from shopaug.augment.samples import VARIANT_TEXT_COLUMN, samples_frame
from shopaug.data.records import DEFAULT_TEXT_FIELDS, Dataset, Product
from shopaug.errors import ConfigError, DataError
from shopaug.llm.base import Generator
from shopaug.llm.prompts import LINE_STOP, rewrite_prompt

logger = logging.getLogger(__name__)

METHOD = "near-miss"
#: Alternative values tried per attribute before giving up on a rewrite.
_REWRITE_TRIES = 5


@dataclass
class NearMissConfig:
    """Settings of :func:`near_miss_negatives`.

    Attributes:
        attributes: attributes that may be swapped, in order of preference; None: every
            attribute the vocabulary extracts (the product type last).
        per_positive: variants per (query, positive) pair, each changing one attribute (the
            attributes the query names take turns).
        prefer_catalog: use a real catalog product when one is a near miss.
        seed: seeds every choice; the same seed gives the same frame.
        validate: check generator rewrites before use (see module docstring).
        generator: rewrites titles when set; None uses rule rewrites only.
        text_fields: product fields rendered into ``product_text`` for rewrites.
        max_tokens: most tokens of a generator rewrite.
        temperature: sampling temperature of generator rewrites.
    """

    attributes: tuple[str, ...] | None = None
    per_positive: int = 1
    prefer_catalog: bool = True
    seed: int = 0
    validate: bool = True
    generator: Generator | None = None
    text_fields: tuple[str, ...] = DEFAULT_TEXT_FIELDS
    max_tokens: int = 48
    temperature: float = 0.0

    def __post_init__(self) -> None:
        if self.attributes is not None:
            self.attributes = tuple(self.attributes)  # YAML gives lists
        if self.per_positive < 1:
            raise ConfigError(f"near_miss.per_positive must be >= 1, got {self.per_positive}")
        if self.attributes is not None and not self.attributes:
            raise ConfigError("near_miss.attributes is empty; give None to use every attribute")
        if self.max_tokens < 1:
            raise ConfigError(f"near_miss.max_tokens must be >= 1, got {self.max_tokens}")


@dataclass
class NearMissStats:
    """What :func:`near_miss_negatives` did.

    Attributes:
        pairs: (query, positive) pairs seen.
        made: negatives written (``from_catalog + rewritten``).
        from_catalog: real catalog products.
        rewritten: rewritten texts (rule or generator).
        by_generator: rewrites whose generator text passed validation.
        rejected: generator rewrites that failed validation (the rule rewrite was used).
        skipped: pairs that got no variant at all (no attribute, no alternative value).
        by_attribute: negatives per swapped attribute.
    """

    pairs: int = 0
    made: int = 0
    from_catalog: int = 0
    rewritten: int = 0
    by_generator: int = 0
    rejected: int = 0
    skipped: int = 0
    by_attribute: dict[str, int] = field(default_factory=dict)


class _Variant(NamedTuple):
    product_id: str
    source: str
    text: str | None  # None for catalog products
    attribute: str


def _rng(seed: int, *parts: str) -> np.random.Generator:
    digest = hashlib.blake2b("\x00".join([str(seed), *parts]).encode(), digest_size=8).digest()
    return np.random.default_rng(int.from_bytes(digest, "little"))


def swap_value(text: str, old: str, new: str) -> str:
    """``text`` with every whole-word occurrence of ``old`` replaced by ``new``."""
    return value_pattern(old).sub(new, text)


def rewrite_product(product: Product, attribute: str, old: str, new: str) -> Product:
    """The rule rewrite: ``old`` -> ``new`` in title, description and structured attributes."""
    attributes = {
        key: (new if normalize_key(key) == attribute and normalize_value(value) == old else value)
        for key, value in product.attributes.items()
    }
    return Product(
        id=f"{product.id}~{attribute}={new}",
        title=swap_value(product.title, old, new),
        text=swap_value(product.text, old, new),
        category=product.category,
        attributes=attributes,
    )


def variant_problem(
    vocabulary: AttributeVocabulary,
    original: Mapping[str, str],
    variant: Product,
    attribute: str,
    old: str,
    new: str,
    text_fields: Sequence[str] = DEFAULT_TEXT_FIELDS,
) -> str | None:
    """Why ``variant`` is not a one-attribute change of a product with attributes ``original``
    (``old`` -> ``new`` in ``attribute``), or None when it is."""
    text = variant.render(text_fields)
    if not value_pattern(new).search(text):
        return f"new value {new!r} missing"
    if value_pattern(old).search(text):
        return f"old value {old!r} still present"
    after = vocabulary.extract(variant)
    changed = differing_attributes(original, after)
    if changed != [attribute] or after.get(attribute) != new:
        return f"attributes changed: {changed} (expected only {attribute!r} -> {new!r})"
    return None


class _CatalogIndex:
    """attribute -> (category, other attributes) -> products with that attribute, lazily."""

    def __init__(self, products: Sequence[Product], extracted: Mapping[str, dict[str, str]]):
        self._products = products
        self._extracted = extracted
        self._by_attribute: dict[str, dict[tuple, list[tuple[str, str]]]] = {}

    @staticmethod
    def signature(product: Product, attributes: Mapping[str, str], attribute: str) -> tuple:
        others = tuple(sorted((k, v) for k, v in attributes.items() if k != attribute))
        return tuple(product.category), others

    def near_misses(self, product: Product, attribute: str) -> list[tuple[str, str]]:
        """(value, product id) of products differing from ``product`` only in ``attribute``."""
        groups = self._by_attribute.get(attribute)
        if groups is None:
            groups = {}
            for other in self._products:
                attributes = self._extracted[other.id]
                if attribute in attributes:
                    key = self.signature(other, attributes, attribute)
                    groups.setdefault(key, []).append((attributes[attribute], other.id))
            self._by_attribute[attribute] = groups
        return groups.get(self.signature(product, self._extracted[product.id], attribute), [])


def _query_attributes(
    query: str, attributes: Mapping[str, str], allowed: Sequence[str] | None
) -> list[str]:
    """Attributes to swap, best first: those the query names, else the type, else any."""
    if allowed is None:
        candidates = sorted(attributes, key=lambda key: (key == "type", key))
    else:
        candidates = [key for key in allowed if key in attributes]
    named = [key for key in candidates if value_pattern(attributes[key]).search(query)]
    if named:
        return named
    if "type" in candidates:
        return ["type"]
    return candidates


def near_miss_negatives(
    dataset: Dataset,
    positives: Mapping[str, set[str]],
    config: NearMissConfig,
    vocabulary: AttributeVocabulary | None = None,
) -> tuple[pd.DataFrame, NearMissStats]:
    """Near-miss negative samples for every (query, positive) pair; see the module docstring.

    Args:
        dataset: the catalog and queries (its judged positives are never used as negatives).
        positives: query id -> positive product ids to make variants of.
        config: what to swap, how many, seed, generator.
        vocabulary: attribute vocabulary; None learns it from ``dataset.products``.

    Returns:
        The samples frame (``method="near-miss"``, label 0, ``product_text`` set for rewrites),
        rows ordered by query id, positive id, variant; and the counts of what was done.

    Raises:
        DataError: a query or product id in ``positives`` is not in ``dataset``.
    """
    vocabulary = vocabulary or AttributeVocabulary.from_products(dataset.products)
    stats = NearMissStats()
    maker = _VariantMaker(dataset.products, vocabulary, config, stats)
    judged = dataset.positives()
    rows: list[dict[str, object]] = []
    for query_id in sorted(positives):
        query = dataset.query_by_id.get(query_id)
        if query is None:
            raise DataError(
                f"query id {query_id!r} is not in data set {dataset.name!r}", field="query_id"
            )
        known = set(positives[query_id]) | judged.get(query_id, set())
        used_products: set[str] = set()  # a catalog product is a negative once per query
        for product_id in sorted(positives[query_id]):
            if product_id not in dataset.product_index:
                raise DataError(
                    f"positive product id {product_id!r} of query {query_id!r} is not in the "
                    f"catalog of {dataset.name!r}",
                    field="product_id",
                )
            stats.pairs += 1
            made = maker.variants(
                dataset.product(product_id),
                query.text,
                known,
                used_products,
                _rng(config.seed, query_id, product_id),
            )
            if not made:
                stats.skipped += 1
            for product_id_out, source, text, attribute in made:
                stats.made += 1
                stats.by_attribute[attribute] = stats.by_attribute.get(attribute, 0) + 1
                rows.append(
                    {
                        "query_id": query_id,
                        "query": query.text,
                        "product_id": product_id_out,
                        "label": 0,
                        "kind": "negative",
                        "method": METHOD,
                        "source": source,
                        "seed": config.seed,
                        "score": float("nan"),
                        "rank": -1,
                        VARIANT_TEXT_COLUMN: text,
                    }
                )
    logger.info(
        "near-miss: %d negatives for %d pairs (%d catalog, %d rewritten, %d generator rewrites "
        "rejected, %d pairs skipped)",
        stats.made,
        stats.pairs,
        stats.from_catalog,
        stats.rewritten,
        stats.rejected,
        stats.skipped,
    )
    frame = samples_frame(rows)
    if VARIANT_TEXT_COLUMN not in frame.columns:
        frame[VARIANT_TEXT_COLUMN] = pd.Series(dtype=object)
    return frame, stats


class _VariantMaker:
    """Makes the variants of one (query, positive) pair; holds what all pairs share."""

    def __init__(
        self,
        products: Sequence[Product],
        vocabulary: AttributeVocabulary,
        config: NearMissConfig,
        stats: NearMissStats,
    ) -> None:
        self.vocabulary = vocabulary
        self.config = config
        self.stats = stats
        self.extracted = {product.id: vocabulary.extract(product) for product in products}
        self.index = _CatalogIndex(products, self.extracted)

    def variants(
        self,
        product: Product,
        query: str,
        known: set[str],
        used_products: set[str],
        rng: np.random.Generator,
    ) -> list[_Variant]:
        """Up to ``per_positive`` variants of ``product`` for ``query``; the attributes the query
        names take turns, an attribute leaves the turn when it has no variant left."""
        attributes = self.extracted[product.id]
        turn = _query_attributes(query, attributes, self.config.attributes)
        # Values a known positive has are acceptable to the shopper: never swap them in.
        used_values = {
            (key, value)
            for known_id in known
            for key, value in self.extracted.get(known_id, {}).items()
        }
        used_products.add(product.id)
        made: list[_Variant] = []
        while turn and len(made) < self.config.per_positive:
            attribute = turn.pop(0)
            variant = None
            if self.config.prefer_catalog:
                variant = self._from_catalog(
                    product, attribute, known, used_values, used_products, rng
                )
                if variant is not None:
                    self.stats.from_catalog += 1
            if variant is None:
                variant = self._rewritten(product, attribute, used_values, rng)
                if variant is not None:
                    self.stats.rewritten += 1
            if variant is not None:
                made.append(variant)
                turn.append(attribute)
        return made

    def _from_catalog(
        self,
        product: Product,
        attribute: str,
        known: set[str],
        used_values: set[tuple[str, str]],
        used_products: set[str],
        rng: np.random.Generator,
    ) -> _Variant | None:
        allowed = set(
            self.vocabulary.alternatives(attribute, self.extracted[product.id][attribute])
        )
        candidates = sorted(
            (other_id, value)
            for value, other_id in self.index.near_misses(product, attribute)
            if value in allowed
            and (attribute, value) not in used_values
            and other_id not in known
            and other_id not in used_products
        )
        if not candidates:
            return None
        chosen, value = candidates[int(rng.integers(len(candidates)))]
        used_products.add(chosen)
        used_values.add((attribute, value))
        return _Variant(chosen, "catalog", None, attribute)

    def _rewritten(
        self,
        product: Product,
        attribute: str,
        used_values: set[tuple[str, str]],
        rng: np.random.Generator,
    ) -> _Variant | None:
        config, vocabulary = self.config, self.vocabulary
        attributes = self.extracted[product.id]
        old = attributes[attribute]
        if not value_pattern(old).search(product.title):
            return None  # a value only in structured data: no text to rewrite
        # Values seen in the product's own category keep the variant plausible ("rug" ->
        # "runner", not "hive"); a type must come from there, other attributes may fall back.
        alternatives = vocabulary.alternatives(attribute, old, category=product.category)
        if not alternatives and attribute != "type":
            alternatives = vocabulary.alternatives(attribute, old)
        alternatives = [value for value in alternatives if (attribute, value) not in used_values]
        for position in rng.permutation(len(alternatives))[:_REWRITE_TRIES]:
            new = alternatives[int(position)]
            rule = rewrite_product(product, attribute, old, new)
            problem = variant_problem(
                vocabulary, attributes, rule, attribute, old, new, config.text_fields
            )
            if problem is not None:
                logger.debug("rule rewrite of %s (%s -> %s): %s", product.id, old, new, problem)
                continue
            used_values.add((attribute, new))
            variant, source = rule, "rule"
            if config.generator is not None:
                generated = _generator_variant(product, rule, old, new, config)
                problem = (
                    variant_problem(
                        vocabulary, attributes, generated, attribute, old, new, config.text_fields
                    )
                    if config.validate
                    else None
                )
                if problem is None:
                    variant, source = generated, config.generator.id
                    self.stats.by_generator += 1
                else:
                    self.stats.rejected += 1
                    logger.debug("generator rewrite of %s rejected: %s", product.id, problem)
            return _Variant(variant.id, source, variant.render(config.text_fields), attribute)
        return None


def _generator_variant(
    product: Product, rule: Product, old: str, new: str, config: NearMissConfig
) -> Product:
    """The rule variant with the title the generator wrote."""
    assert config.generator is not None
    prompt = rewrite_prompt(product.title, old, new)
    (title,) = config.generator.generate(
        [prompt],
        max_tokens=config.max_tokens,
        temperature=config.temperature,
        seed=config.seed,
        stop=[LINE_STOP],
    )
    return dataclasses.replace(rule, title=title.strip())
