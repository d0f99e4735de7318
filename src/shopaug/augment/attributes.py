"""The attribute vocabulary of a catalog: which values of color, material, size, style, count
and product type its products have, learned from structured attributes and from titles.

Structured attributes (``Product.attributes``) are authoritative. Titles are read with a built-in
seed lexicon (colors, materials, sizes, styles), count patterns ("2 piece", "set of 4") and the
values other products carry as structured attributes. The product type is the head noun of the
title ("mcnett tv stand for tvs" -> "stand"), which WANDS-like catalogs (no attributes, only a
name and a class) always have. Each title word belongs to at most one attribute.

Example:
    >>> vocabulary = AttributeVocabulary.from_products(products)
    >>> vocabulary.extract(Product("1", "blue velvet sofa"))
    {'color': 'blue', 'material': 'velvet', 'type': 'sofa'}
    >>> vocabulary.alternatives("color", "blue")  # other colors seen in the catalog
    ['red', 'green']
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from shopaug.data.records import Product
from shopaug.llm.template import STOPWORDS, naming_words

#: Attributes read from titles with the seed lexicon, in the order they claim words.
LEXICON_ATTRIBUTES = ("size", "color", "material", "style")
#: Every attribute the vocabulary can extract without structured data.
TITLE_ATTRIBUTES = ("count", *LEXICON_ATTRIBUTES, "type")

SEED_LEXICON: dict[str, tuple[str, ...]] = {
    "color": (
        "black", "white", "off white", "gray", "grey", "light gray", "dark gray", "silver",
        "gold", "red", "burgundy", "blue", "light blue", "navy", "navy blue", "green", "sage",
        "olive", "teal", "turquoise", "aqua", "yellow", "mustard", "orange", "pink", "blush",
        "purple", "lavender", "brown", "dark brown", "tan", "beige", "cream", "ivory",
        "charcoal", "espresso", "bronze", "multicolor",
    ),
    "material": (
        "wood", "wooden", "solid wood", "oak", "walnut", "pine", "teak", "acacia", "mango wood",
        "bamboo", "rattan", "wicker", "seagrass", "metal", "iron", "wrought iron", "steel",
        "stainless steel", "aluminum", "brass", "copper", "glass", "marble", "stone", "slate",
        "concrete", "ceramic", "porcelain", "stoneware", "terracotta", "resin", "fiberglass",
        "plastic", "acrylic", "velvet", "leather", "faux leather", "linen", "cotton", "wool",
        "jute", "polyester", "microfiber", "silk", "chenille", "sherpa", "fleece", "mdf",
    ),
    "size": (
        "mini", "small", "medium", "large", "extra large", "oversized", "twin", "twin xl",
        "full", "queen", "king", "california king",
    ),
    "style": (
        "modern", "mid century", "mid century modern", "contemporary", "traditional",
        "rustic", "farmhouse", "industrial", "vintage", "retro", "coastal", "bohemian", "boho",
        "scandinavian", "glam", "minimalist", "transitional", "country", "cottage",
        "shabby chic", "art deco",
    ),
}  # fmt: skip

#: Values that name the same thing; never offered as alternatives of each other.
SYNONYMS: tuple[frozenset[str], ...] = (
    frozenset({"gray", "grey"}),
    frozenset({"wood", "wooden", "solid wood"}),
    frozenset({"boho", "bohemian"}),
)

_COUNT = re.compile(r"\bset of (\d+)\b|\b(\d+) (piece|pc|pcs|pack|count)\b")
#: Longest value, in words, read from titles; longer structured values stay structured only.
_MAX_VALUE_WORDS = 3


_WORD = re.compile(r"[^\W_]+")


def words_of(text: str) -> list[str]:
    """Lower-case words (letters in any script, digits): ``"Wall Décor"`` -> wall, décor."""
    return _WORD.findall(text.lower())


def normalize_value(value: str) -> str:
    """Lower-case words joined by single spaces: ``"Mid-Century"`` -> ``"mid century"``."""
    return " ".join(words_of(value))


def normalize_key(key: str) -> str:
    """Attribute names as the vocabulary keys them: ``"Primary Color"`` -> ``"primary_color"``."""
    return "_".join(key.lower().split())


def value_pattern(value: str) -> re.Pattern[str]:
    """A case-insensitive regex for ``value`` as whole words in raw text, any punctuation
    between its words: ``"mid century"`` matches ``"Mid-Century"``."""
    words = words_of(value)
    if not words:
        raise ValueError(f"attribute value {value!r} has no words")
    body = r"[\W_]+".join(re.escape(word) for word in words)
    return re.compile(rf"(?<![^\W_]){body}(?![^\W_])", re.IGNORECASE)


def _count_form(value: str) -> str:
    """``"set of 4"`` -> ``"set of #"``; counts of the same form swap cleanly."""
    return re.sub(r"\d+", "#", value)


def _content_words(value: str) -> set[str]:
    """Alphabetic non-stopwords: ``"navy blue"`` -> {navy, blue}; ``"set of 4"`` -> {}."""
    return {word for word in value.split() if word.isalpha() and word not in STOPWORDS}


def _find(tokens: list[str], claimed: list[bool], value: str) -> tuple[int, int] | None:
    """First unclaimed span of ``tokens`` equal to the words of ``value``."""
    words = value.split()
    size = len(words)
    for start in range(len(tokens) - size + 1):
        end = start + size
        if tokens[start:end] == words and not any(claimed[start:end]):
            return start, end
    return None


@dataclass
class AttributeVocabulary:
    """Attribute -> values (with counts) learned from a catalog; see the module docstring.

    Build it with :meth:`from_products`; it is deterministic: the same products give the same
    vocabulary, extractions and alternatives.
    """

    #: attribute -> value -> number of products that have it.
    counts: dict[str, Counter[str]] = field(default_factory=dict)
    #: attribute -> values matched in titles (seed lexicon + structured values), longest first.
    title_values: dict[str, list[str]] = field(default_factory=dict)
    #: (attribute, value) -> category path -> number of products with both.
    categories: dict[tuple[str, str], Counter[tuple[str, ...]]] = field(default_factory=dict)
    #: attribute -> first word -> values starting with it (longest first); built lazily.
    _by_first_word: dict[str, dict[str, list[list[str]]]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _value_words_cache: frozenset[str] | None = field(
        default=None, init=False, repr=False, compare=False
    )
    _alternatives: dict[tuple[str, str, tuple[str, ...] | None], list[str]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    @classmethod
    def from_products(cls, products: Iterable[Product]) -> AttributeVocabulary:
        """Learn the vocabulary of ``products`` (one pass for structured values, one to count)."""
        products = list(products)
        learned: dict[str, set[str]] = {}
        for product in products:
            for key, raw in product.attributes.items():
                value = normalize_value(str(raw))
                if value:
                    learned.setdefault(normalize_key(key), set()).add(value)
        title_values: dict[str, set[str]] = {k: set(v) for k, v in SEED_LEXICON.items()}
        for key, values in learned.items():
            usable = {
                value
                for value in values
                if len(value.split()) <= _MAX_VALUE_WORDS
                and any(word.isalpha() and word not in STOPWORDS for word in value.split())
            }
            title_values.setdefault(key, set()).update(usable)
        vocabulary = cls(
            title_values={
                key: sorted(values, key=lambda v: (-len(v.split()), v))
                for key, values in sorted(title_values.items())
            }
        )
        for product in products:
            for key, value in vocabulary.extract(product).items():
                vocabulary.counts.setdefault(key, Counter())[value] += 1
                if product.category:
                    vocabulary.categories.setdefault((key, value), Counter())[
                        tuple(product.category)
                    ] += 1
        return vocabulary

    @property
    def _value_words(self) -> frozenset[str]:
        """One-word values of every title attribute: a second color is no product type."""
        if self._value_words_cache is None:
            self._value_words_cache = frozenset(
                value
                for values in self.title_values.values()
                for value in values
                if " " not in value
            )
        return self._value_words_cache

    @property
    def attributes(self) -> list[str]:
        """Attributes seen in the catalog, sorted."""
        return sorted(self.counts)

    def _title_match(
        self, key: str, tokens: list[str], claimed: list[bool]
    ) -> tuple[str, tuple[int, int]] | None:
        """The longest (then alphabetically first) value of ``key`` found in unclaimed
        ``tokens``, and its first span."""
        index = self._by_first_word.get(key)
        if index is None:
            index = {}
            for value in self.title_values[key]:  # already longest first, then alphabetical
                words = value.split()
                index.setdefault(words[0], []).append(words)
            self._by_first_word[key] = index
        best: tuple[tuple[int, str], str, tuple[int, int]] | None = None
        for start, token in enumerate(tokens):
            for words in index.get(token, ()):
                end = start + len(words)
                if tokens[start:end] == words and not any(claimed[start:end]):
                    value = " ".join(words)
                    rank = (-len(words), value)
                    if best is None or rank < best[0]:
                        best = (rank, value, (start, end))
        return None if best is None else (best[1], best[2])

    def extract(self, product: Product) -> dict[str, str]:
        """Attribute -> normalized value of ``product``, keys sorted.

        Structured attributes first (authoritative), then from the title: counts, sizes, colors,
        materials, styles, other attributes with values learned from the catalog, and the type.
        """
        found: dict[str, str] = {}
        tokens = words_of(product.title)
        claimed = [False] * len(tokens)

        def claim(span: tuple[int, int] | None) -> None:
            if span is not None:
                for position in range(*span):
                    claimed[position] = True

        for key, raw in product.attributes.items():
            value = normalize_value(str(raw))
            if value:
                found[normalize_key(key)] = value
                claim(_find(tokens, claimed, value))
        if "count" not in found:
            match = _COUNT.search(" ".join(tokens))
            if match is not None:
                value = match.group(0)
                span = _find(tokens, claimed, value)
                if span is not None:
                    found["count"] = value
                    claim(span)
        ordered = [k for k in LEXICON_ATTRIBUTES if k in self.title_values]
        ordered += [k for k in self.title_values if k not in LEXICON_ATTRIBUTES]
        for key in ordered:
            if key not in found:
                matched = self._title_match(key, tokens, claimed)
                if matched is not None:
                    found[key] = matched[0]
                    claim(matched[1])
        if "type" not in found:
            naming = len(naming_words(tokens))
            for position in range(naming - 1, -1, -1):
                token = tokens[position]
                if (
                    not claimed[position]
                    and token.isalpha()
                    and token not in STOPWORDS
                    and token not in self._value_words
                ):
                    found["type"] = token
                    break
        return dict(sorted(found.items()))

    def alternatives(
        self, attribute: str, value: str, *, category: Sequence[str] | None = None
    ) -> list[str]:
        """Other values of ``attribute`` seen in the catalog, most common first (ties by value).

        Values sharing a content word (not a number or stopword) with ``value`` ("navy blue"
        for "blue") or naming the same thing ("grey" for "gray") are left out: swapping them
        would not change the attribute. For ``count``, values of the same form come first
        ("set of 2" before "3 piece" for "set of 4"). With ``category``, only values seen on
        products of that category ("runner" for a rug, not "hive").
        """
        value = normalize_value(value)
        wanted = None if category is None else tuple(category)
        cache_key = (attribute, value, wanted)
        cached = self._alternatives.get(cache_key)
        if cached is not None:
            return list(cached)
        words = _content_words(value)
        same = {value}
        for group in SYNONYMS:
            if value in group:
                same |= group
        counter = self.counts.get(attribute, Counter())
        others = [
            other
            for other in counter
            if other not in same
            and not words & _content_words(other)
            and (wanted is None or self.categories.get((attribute, other), Counter())[wanted] > 0)
        ]
        form = _count_form(value)
        result = sorted(
            others,
            key=lambda other: (
                attribute == "count" and _count_form(other) != form,
                -counter[other],
                other,
            ),
        )
        self._alternatives[cache_key] = result
        return list(result)

    def category_for_type(self, product_type: str) -> tuple[str, ...] | None:
        """The most common category of products of type ``product_type``, or None."""
        counter = self.categories.get(("type", product_type))
        if not counter:
            return None
        return min(counter.items(), key=lambda item: (-item[1], item[0]))[0]


def differing_attributes(before: Mapping[str, str], after: Mapping[str, str]) -> list[str]:
    """Attributes whose value differs between two extractions (missing counts as different)."""
    return sorted(key for key in set(before) | set(after) if before.get(key) != after.get(key))
