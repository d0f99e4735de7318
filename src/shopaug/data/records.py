"""Typed records every stage exchanges, and the in-memory :class:`Dataset`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

#: Product fields that can go into the text an encoder sees, in this order.
TEXT_FIELDS = ("title", "category", "text", "attributes")
#: Default text: name + class. Measured on wands-subset (benchmarks/RESULTS.md): adding the
#: description lowers both BM25 and zero-shot MiniLM NDCG@10 there.
DEFAULT_TEXT_FIELDS: tuple[str, ...] = ("title", "category")


@dataclass(frozen=True, slots=True)
class Product:
    """One catalog item. ``category`` is a path from broad to narrow; ``text`` the description."""

    id: str
    title: str
    text: str = ""
    category: tuple[str, ...] = ()
    attributes: Mapping[str, str] = field(default_factory=dict)

    def render(self, fields: Sequence[str] = DEFAULT_TEXT_FIELDS) -> str:
        """The text an encoder sees: the chosen fields joined in a fixed order."""
        parts: list[str] = []
        for name in fields:
            if name == "title":
                parts.append(self.title)
            elif name == "category":
                parts.append(" ".join(self.category))
            elif name == "text":
                parts.append(self.text)
            elif name == "attributes":
                parts.append(" ".join(f"{k} {v}" for k, v in sorted(self.attributes.items())))
            else:
                raise ValueError(f"unknown text field {name!r}; expected one of {TEXT_FIELDS}")
        return " ".join(part for part in parts if part).strip()


@dataclass(frozen=True, slots=True)
class Query:
    id: str
    text: str
    query_class: str = ""


@dataclass(frozen=True, slots=True)
class Judgment:
    """A human (or simulated) relevance label. ``label`` is the raw label as in the source file
    ("Exact", "Partial", "3"); the numeric gain comes from the dataset's ``gains`` mapping."""

    query_id: str
    product_id: str
    label: str


@dataclass(frozen=True, slots=True)
class Interaction:
    """One logged event: ``event`` is impression, click, add_to_cart or purchase."""

    user_id: str
    product_id: str
    event: str
    session_id: str = ""
    query_id: str = ""
    position: int | None = None
    timestamp: float | None = None


EVENTS = ("impression", "click", "add_to_cart", "purchase")


@dataclass
class Dataset:
    """Products, queries, judgments and interactions of one data set, validated on load.

    ``gains`` maps a judgment label to its graded gain (WANDS: Exact 2, Partial 1, Irrelevant 0).
    A label missing from ``gains`` counts 0.
    """

    name: str
    products: list[Product]
    queries: list[Query]
    judgments: list[Judgment]
    gains: dict[str, int]
    interactions: list[Interaction] = field(default_factory=list)
    source: str = ""
    #: File checksums (name -> sha256) recorded in run manifests.
    checksums: dict[str, str] = field(default_factory=dict)
    #: Bad rows skipped on load (only when the user asked to skip): reason -> count.
    skipped: dict[str, int] = field(default_factory=dict)
    #: False when products carry only ids (ESCI without the product file): no retrieval then.
    has_text: bool = True

    @cached_property
    def product_index(self) -> dict[str, int]:
        """Product id -> row in ``products``."""
        return {product.id: row for row, product in enumerate(self.products)}

    @cached_property
    def query_by_id(self) -> dict[str, Query]:
        return {query.id: query for query in self.queries}

    def product(self, product_id: str) -> Product:
        try:
            return self.products[self.product_index[product_id]]
        except KeyError:
            raise KeyError(f"unknown product id {product_id!r} in data set {self.name!r}") from None

    def product_texts(self, fields: Sequence[str] = DEFAULT_TEXT_FIELDS) -> list[str]:
        return [product.render(fields) for product in self.products]

    def qrels(
        self, gains: Mapping[str, int] | None = None, query_ids: Iterable[str] | None = None
    ) -> dict[str, dict[str, int]]:
        """query id -> {product id: gain}, every judged pair (gain 0 included)."""
        # The dataset's own gains are the common case: one table, built once.
        table = self._qrels_table if gains is None else self._gain_table(gains)
        ids = table.keys() if query_ids is None else [q for q in query_ids if q in table]
        return {qid: dict(table[qid]) for qid in ids}

    def _gain_table(self, gains: Mapping[str, int]) -> dict[str, dict[str, int]]:
        table: dict[str, dict[str, int]] = {}
        for judgment in self.judgments:
            table.setdefault(judgment.query_id, {})[judgment.product_id] = int(
                gains.get(judgment.label, 0)
            )
        return table

    @cached_property
    def _qrels_table(self) -> dict[str, dict[str, int]]:
        return self._gain_table(self.gains)

    def positives(self, query_ids: Iterable[str] | None = None) -> dict[str, set[str]]:
        """query id -> products with a gain above 0."""
        return {
            qid: {pid for pid, gain in judged.items() if gain > 0}
            for qid, judged in self.qrels(query_ids=query_ids).items()
        }

    def subset(self, query_ids: Iterable[str], name: str | None = None) -> Dataset:
        """The same catalog with only the given queries and their judgments."""
        keep = set(query_ids)
        return Dataset(
            name=name or self.name,
            products=self.products,
            queries=[q for q in self.queries if q.id in keep],
            judgments=[j for j in self.judgments if j.query_id in keep],
            gains=dict(self.gains),
            interactions=[i for i in self.interactions if not i.query_id or i.query_id in keep],
            source=self.source,
            checksums=dict(self.checksums),
        )

    def gaps(self) -> list[str]:
        """Why nothing can be trained on or measured with this data set, one sentence each;
        empty when the judgments allow both.

        Loading accepts a judgments table with no rows, or with no positive gain, since a
        catalog can still be served or mined; ``shopaug data check`` warns with these.

        Example:
            >>> Dataset("d", [], [Query("q1", "shirt")], [], {"Exact": 2}).gaps()
            ['the judgments table has no rows: nothing can be trained or measured']
        """
        if not self.judgments:
            return ["the judgments table has no rows: nothing can be trained or measured"]
        labels = sorted({judgment.label for judgment in self.judgments})
        if not any(self.gains.get(label, 0) > 0 for label in labels):
            shown = ", ".join(f"{label!r} (gain {self.gains.get(label, 0)})" for label in labels)
            return [
                f"no judgment has a positive gain (labels {shown}): no query has a relevant "
                "product, so nothing can be trained or measured"
            ]
        return []

    def summary(self) -> dict[str, object]:
        per_label: dict[str, int] = {}
        for judgment in self.judgments:
            per_label[judgment.label] = per_label.get(judgment.label, 0) + 1
        return {
            "dataset": self.name,
            "products": len(self.products),
            "queries": len(self.queries),
            "judgments": len(self.judgments),
            "judgments_per_label": dict(sorted(per_label.items())),
            "interactions": len(self.interactions),
            "gains": self.gains,
            "skipped_rows": self.skipped,
        }
