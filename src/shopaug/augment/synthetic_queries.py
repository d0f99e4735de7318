"""Synthetic queries for products that have none (the long tail, new items), written by a
generator from few-shot examples of real queries, filtered hard, and kept only when the query
brings its product back (round trip).

Pipeline, per selected product and sample ``n`` (``0 <= n < queries_per_product``):

1. prompt: ``few_shot`` real queries with a product judged best for each ("Product: <title>
   (<class>)\\nQuery: <query>" blocks, :mod:`shopaug.llm.prompts`), then the target product with
   the query left open; the generator completes one line (stops ``"\\n"`` and ``" ("``,
   :data:`~shopaug.llm.prompts.QUERY_STOPS`) with seed ``seed + n``. The examples are drawn
   to look like the queries wanted (:func:`is_clean_example`);
2. filters, first failing reason counted: ``empty``, ``too_long``, ``format_leak`` (parentheses,
   "Product:"/"Query:", the full title copied), ``invented_number`` (a number the product text
   does not contain), ``duplicate`` (same query twice for a product);
3. round trip: the query is searched over the catalog with the given retriever; it is kept only
   if its product ranks in the top ``round_trip_top_k``. The cut is looser than top 10 on
   purpose: real WANDS queries bring their Exact product into the top 10 only about a quarter
   of the time (shared/ENVIRONMENT.md).

Every kept query becomes a positive sample row (``method="synthetic-queries"``, ``source`` = the
generator id, ``query_id`` = ``syn-<product id>-<n>``, ``rank`` = its round-trip rank).

Example:
    >>> frame, stats = synthetic_queries(dataset, TemplateGenerator(), retriever,
    ...                                  SyntheticQueryConfig(max_products=100))
    >>> stats.kept, stats.dropped  # doctest: +SKIP
    (151, {'empty': 0, 'too_long': 0, 'format_leak': 3, ...})
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from shopaug.augment.samples import samples_frame
from shopaug.data.records import Dataset, Product
from shopaug.encoders.base import tokenize
from shopaug.errors import ConfigError
from shopaug.llm.base import Generator
from shopaug.llm.prompts import QUERY_STOPS, QueryExample, query_prompt

logger = logging.getLogger(__name__)

METHOD = "synthetic-queries"

#: queries, k -> for each query, the ids of the top-k products, best first.
RoundTripRetriever = Callable[[Sequence[str], int], list[list[str]]]

#: Filter reasons, in the order they are checked.
DROP_REASONS = (
    "empty",
    "too_long",
    "format_leak",
    "invented_number",
    "duplicate",
    "round_trip",
)

_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_LEAK_MARKERS = ("(", ")", "product:", "query:")
_QUOTES = "\"'`“”‘’"
#: Few-shot example queries: plain words only, 2 to 6 of them.
_EXAMPLE_QUERY = re.compile(r"[a-z][a-z '&-]*")
_EXAMPLE_MIN_WORDS = 2
_EXAMPLE_MAX_WORDS = 6
#: A title this long (in words) that reappears whole in the query was copied, not rewritten.
_COPY_MIN_TITLE_WORDS = 3


@dataclass
class SyntheticQueryConfig:
    """Settings of :func:`synthetic_queries`.

    Attributes:
        products: ``unjudged`` (products without any judgment: the long tail, new items) or
            ``all``.
        max_products: most products to write queries for, drawn with ``seed``; None: all.
        queries_per_product: samples per product (seeds ``seed``, ``seed + 1``, ...).
        few_shot: real (query, best product) examples in the prompt.
        round_trip_top_k: keep a query if its product is in this many retrieved; None: no
            round trip (every filtered query is kept, rank -1).
        max_query_words: longer queries are dropped (``too_long``).
        max_query_chars: longer queries are dropped (``too_long``).
        temperature: sampling temperature.
        max_tokens: most tokens per completion.
        seed: seeds product and example choice and generation.
        batch_size: prompts per generator call.
        show_progress: show a progress bar.
    """

    products: Literal["unjudged", "all"] = "unjudged"
    max_products: int | None = 1000
    queries_per_product: int = 2
    few_shot: int = 5
    round_trip_top_k: int | None = 50
    max_query_words: int = 8
    max_query_chars: int = 80
    temperature: float = 0.8
    max_tokens: int = 16
    seed: int = 0
    batch_size: int = 64
    show_progress: bool = False

    def __post_init__(self) -> None:
        if self.products not in ("unjudged", "all"):
            raise ConfigError(
                f"synthetic_queries.products must be 'unjudged' or 'all', got {self.products!r}"
            )
        positive = {
            "queries_per_product": self.queries_per_product,
            "max_query_words": self.max_query_words,
            "max_query_chars": self.max_query_chars,
            "max_tokens": self.max_tokens,
            "batch_size": self.batch_size,
        }
        if self.max_products is not None:
            positive["max_products"] = self.max_products
        if self.round_trip_top_k is not None:
            positive["round_trip_top_k"] = self.round_trip_top_k
        for name, value in positive.items():
            if value < 1:
                raise ConfigError(f"synthetic_queries.{name} must be >= 1, got {value}")
        if self.few_shot < 0:
            raise ConfigError(f"synthetic_queries.few_shot must be >= 0, got {self.few_shot}")
        if self.temperature < 0:
            raise ConfigError(f"synthetic_queries.temperature must be >= 0, got {self.temperature}")


@dataclass
class SyntheticQueryStats:
    """What :func:`synthetic_queries` did: ``generated = kept + sum(dropped.values())``."""

    products: int = 0
    examples: int = 0
    generated: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))
    kept: int = 0


def _rng(seed: int, purpose: str) -> np.random.Generator:
    digest = hashlib.blake2b(f"{seed}\x00{purpose}".encode(), digest_size=8).digest()
    return np.random.default_rng(int.from_bytes(digest, "little"))


def product_class(product: Product) -> str:
    """The narrowest category of ``product`` (its class), or "" when it has none."""
    return product.category[-1] if product.category else ""


def few_shot_examples(dataset: Dataset, k: int, seed: int) -> list[QueryExample]:
    """``k`` real queries, each with a product judged with the top gain for it, drawn with
    ``seed`` (the same examples open every prompt, so a local model caches that prefix).

    A small base model copies the shape of its examples, so the draw prefers queries that
    look like the ones wanted (:func:`is_clean_example`), each from a different product class;
    it falls back to other classes' duplicates, then to the remaining queries, only when
    there are too few.
    """
    if k == 0 or not dataset.gains:
        return []
    top_gain = max(dataset.gains.values())
    best: dict[str, str] = {}
    for judgment in sorted(dataset.judgments, key=lambda j: (j.query_id, j.product_id)):
        if (
            dataset.gains.get(judgment.label, 0) == top_gain
            and judgment.query_id not in best
            and judgment.query_id in dataset.query_by_id
            and judgment.product_id in dataset.product_index
        ):
            best[judgment.query_id] = judgment.product_id
    query_ids = sorted(best)
    drawn = [query_ids[int(pick)] for pick in _rng(seed, "few-shot").permutation(len(query_ids))]
    pairs = [(dataset.query_by_id[q].text, dataset.product(best[q])) for q in drawn]
    clean = [(query, product) for query, product in pairs if is_clean_example(query, product)]
    classes: set[str] = set()
    one_per_class = []
    for query, product in clean:
        if product_class(product) not in classes:
            classes.add(product_class(product))
            one_per_class.append((query, product))
    chosen: list[tuple[str, Product]] = []
    for query, product in [*one_per_class, *clean, *pairs]:
        if len(chosen) == k:
            break
        if all(query != other for other, _ in chosen):
            chosen.append((query, product))
    return [QueryExample(product.title, product_class(product), query) for query, product in chosen]


def is_clean_example(query: str, product: Product) -> bool:
    """Whether a real query shows the model what to write: 2 to 6 plain words (letters,
    spaces, hyphens, apostrophes, "&"; no digits: a small model shown numbers invents them),
    sharing a word with its product's title or
    class, and passing the filters generated queries must pass (:func:`query_problem`)."""
    text = " ".join(query.lower().split())
    words = tokenize(text)
    if not _EXAMPLE_MIN_WORDS <= len(words) <= _EXAMPLE_MAX_WORDS:
        return False
    if not _EXAMPLE_QUERY.fullmatch(text):
        return False
    product_words = set(tokenize(product.title)) | set(tokenize(product_class(product)))
    if not set(words) & product_words:
        return False
    return (
        query_problem(text, product, SyntheticQueryConfig(max_query_words=_EXAMPLE_MAX_WORDS))
        is None
    )


def select_products(dataset: Dataset, config: SyntheticQueryConfig) -> list[Product]:
    """The products to write queries for, in catalog order (see ``config.products``)."""
    if config.products == "unjudged":
        judged = {judgment.product_id for judgment in dataset.judgments}
        candidates = [product for product in dataset.products if product.id not in judged]
    else:
        candidates = list(dataset.products)
    if config.max_products is not None and len(candidates) > config.max_products:
        rows = _rng(config.seed, "products").choice(
            len(candidates), size=config.max_products, replace=False
        )
        candidates = [candidates[int(row)] for row in sorted(rows)]
    return candidates


def clean_completion(text: str) -> str:
    """The first line of a completion, lower-cased, quotes and trailing dots stripped."""
    line = text.strip().split("\n", 1)[0] if text.strip() else ""
    line = " ".join(line.split()).strip(_QUOTES + " .")
    return line.lower()


def query_problem(query: str, product: Product, config: SyntheticQueryConfig) -> str | None:
    """The first filter reason (of :data:`DROP_REASONS`, round trip and duplicates aside) that
    ``query`` fails for ``product``, or None when it passes."""
    words = tokenize(query)
    if not words:
        return "empty"
    if len(words) > config.max_query_words or len(query) > config.max_query_chars:
        return "too_long"
    lowered = query.lower()
    if any(marker in lowered for marker in _LEAK_MARKERS):
        return "format_leak"
    title = tokenize(product.title)
    if len(title) >= _COPY_MIN_TITLE_WORDS and any(
        words[start : start + len(title)] == title for start in range(len(words) - len(title) + 1)
    ):
        return "format_leak"
    known_numbers = set(
        _NUMBER.findall(product.render(("title", "category", "text", "attributes")))
    )
    if any(number not in known_numbers for number in _NUMBER.findall(query)):
        return "invented_number"
    return None


def synthetic_queries(
    dataset: Dataset,
    generator: Generator,
    retriever: RoundTripRetriever | None,
    config: SyntheticQueryConfig,
) -> tuple[pd.DataFrame, SyntheticQueryStats]:
    """Synthetic positive (query, product) samples; see the module docstring.

    Args:
        dataset: catalog, and the real queries and judgments the few-shot examples come from
            (pass the train split only, so no test query leaks into prompts).
        generator: writes the queries.
        retriever: searches the catalog for the round trip; may be None only when
            ``config.round_trip_top_k`` is None.
        config: what to generate and how hard to filter.

    Returns:
        The samples frame (one positive row per kept query, in catalog order) and the counts.

    Raises:
        ConfigError: a round trip is asked for but no retriever is given.
        ValueError: the retriever answers with a wrong number of result lists.
        GeneratorError: the generator failed (see its message).
    """
    if retriever is None and config.round_trip_top_k is not None:
        raise ConfigError(
            "synthetic_queries.round_trip_top_k is set but no retriever was given; pass one or "
            "set round_trip_top_k to None"
        )
    stats = SyntheticQueryStats()
    examples = few_shot_examples(dataset, config.few_shot, config.seed)
    stats.examples = len(examples)
    if config.few_shot and len(examples) < config.few_shot:
        logger.warning(
            "only %d few-shot examples (asked for %d): %r has few queries with a top-gain product",
            len(examples),
            config.few_shot,
            dataset.name,
        )
    products = select_products(dataset, config)
    stats.products = len(products)
    prompts = [query_prompt(examples, p.title, product_class(p)) for p in products]

    candidates: list[tuple[int, int, str]] = []  # (product row, sample, query)
    seen: set[tuple[int, str]] = set()
    batches = [
        (sample, start)
        for sample in range(config.queries_per_product)
        for start in range(0, len(prompts), config.batch_size)
    ]
    for sample, start in tqdm(
        batches, desc="synthetic queries", unit="batch", disable=not config.show_progress
    ):
        batch = prompts[start : start + config.batch_size]
        completions = generator.generate(
            batch,
            max_tokens=config.max_tokens,
            temperature=config.temperature,
            seed=config.seed + sample,
            stop=list(QUERY_STOPS),
        )
        if len(completions) != len(batch):
            raise ValueError(
                f"generator {generator.id!r} returned {len(completions)} completions for "
                f"{len(batch)} prompts"
            )
        for offset, completion in enumerate(completions):
            row = start + offset
            stats.generated += 1
            query = clean_completion(completion)
            problem = query_problem(query, products[row], config)
            if problem is None and (row, query) in seen:
                problem = "duplicate"
            if problem is not None:
                stats.dropped[problem] += 1
                logger.debug("dropped %r for %s: %s", query, products[row].id, problem)
                continue
            seen.add((row, query))
            candidates.append((row, sample, query))

    ranks = _round_trip_ranks(candidates, products, retriever, config.round_trip_top_k)
    rows: list[dict[str, object]] = []
    for (row, sample, query), rank in sorted(
        zip(candidates, ranks, strict=True), key=lambda item: (item[0][0], item[0][1])
    ):
        if rank is None:
            stats.dropped["round_trip"] += 1
            continue
        product = products[row]
        rows.append(
            {
                "query_id": f"syn-{product.id}-{sample}",
                "query": query,
                "product_id": product.id,
                "label": 1,
                "kind": "positive",
                "method": METHOD,
                "source": generator.id,
                "seed": config.seed,
                "score": float("nan"),
                "rank": rank,
            }
        )
    stats.kept = len(rows)
    logger.info(
        "synthetic queries: %d products, %d generated, %d kept, dropped %s",
        stats.products,
        stats.generated,
        stats.kept,
        {reason: n for reason, n in stats.dropped.items() if n},
    )
    return samples_frame(rows), stats


def _round_trip_ranks(
    candidates: Sequence[tuple[int, int, str]],
    products: Sequence[Product],
    retriever: RoundTripRetriever | None,
    k: int | None,
) -> list[int | None]:
    """1-based rank of each candidate's product among the top ``k`` for its query; None when
    it is not there; -1 for every candidate when there is no round trip."""
    if k is None or retriever is None:
        return [-1] * len(candidates)
    if not candidates:
        return []
    results = retriever([query for _, _, query in candidates], k)
    if len(results) != len(candidates):
        raise ValueError(
            f"round-trip retriever returned {len(results)} result lists for "
            f"{len(candidates)} queries"
        )
    ranks: list[int | None] = []
    for (row, _, _), ranked in zip(candidates, results, strict=True):
        top = list(ranked)[:k]
        target = products[row].id
        ranks.append(top.index(target) + 1 if target in top else None)
    return ranks
