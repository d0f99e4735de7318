"""Attribute vocabulary and near-miss negatives on a small catalog written here."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import pytest

from shopaug.augment.attributes import AttributeVocabulary, value_pattern
from shopaug.augment.near_miss import (
    NearMissConfig,
    near_miss_negatives,
    rewrite_product,
    variant_problem,
)
from shopaug.augment.samples import SAMPLE_COLUMNS
from shopaug.data.records import Dataset, Judgment, Product, Query
from shopaug.errors import ConfigError, DataError
from shopaug.llm import TemplateGenerator

SOFAS = ("Furniture", "Sofas")
CHAIRS = ("Furniture", "Dining Chairs")
RUGS = ("Decor", "Area Rugs")


def _p(pid: str, title: str, category: tuple[str, ...], **attributes: str) -> Product:
    return Product(pid, title, f"a fine {title}.", category, attributes)


PRODUCTS = [
    _p("s01", "blue velvet sofa", SOFAS, color="blue", material="velvet"),
    _p("s02", "red velvet sofa", SOFAS, color="red", material="velvet"),
    _p("s03", "blue leather sofa", SOFAS, color="blue", material="leather"),
    _p("s04", "green velvet sofa", SOFAS, color="green", material="velvet"),
    _p("s05", "gray linen sofa", SOFAS, color="gray", material="linen"),
    _p("s06", "grey linen sofa", SOFAS, color="grey", material="linen"),
    _p("s07", "modern blue velvet sofa", SOFAS, color="blue", material="velvet"),
    _p("s08", "navy blue velvet sofa", SOFAS, color="navy blue", material="velvet"),
    _p("s09", "blue velvet armchair", ("Furniture", "Chairs"), color="blue", material="velvet"),
    _p("s10", "blue velvet loveseat", ("Furniture", "Loveseats"), color="blue", material="velvet"),
    _p("c01", "set of 4 oak dining chairs", CHAIRS, material="oak"),
    _p("c02", "set of 2 pine dining chairs", CHAIRS, material="pine"),
    _p("c03", "2 piece walnut dining chairs", CHAIRS, material="walnut"),
    _p("c04", "rustic oak dining bench", CHAIRS, material="oak", style="rustic"),
    _p("c05", "industrial metal bar stool", CHAIRS, material="metal", style="industrial"),
    # Rugs carry no structured attributes: the vocabulary reads their titles.
    _p("r01", "ivory wool area rug", RUGS),
    _p("r02", "ivory jute area rug", RUGS),
    _p("r03", "black wool area rug", RUGS),
    _p("r04", "beige cotton area rug", RUGS),
    _p("r05", "large ivory wool area rug", RUGS),
    _p("r06", "bohemian ivory wool runner", RUGS),
    _p("r07", "small black jute doormat", RUGS),
    _p("r08", "ivory wool area rug", RUGS),  # same title as r01, another maker
    _p("l01", "brass table lamp", ("Lighting", "Table Lamps")),
    _p("l02", "copper table lamp", ("Lighting", "Table Lamps")),
    _p("l03", "ceramic floor lamp", ("Lighting", "Floor Lamps")),
    _p("l04", "glass pendant light", ("Lighting", "Pendants")),
    _p("d01", "walnut 6 drawer dresser", ("Bedroom", "Dressers")),
    _p("d02", "white 3 drawer nightstand", ("Bedroom", "Nightstands")),
    _p("d03", "mid-century modern walnut bed", ("Bedroom", "Beds")),
    _p("d04", "farmhouse pine bed", ("Bedroom", "Beds")),
    _p("d05", "farmhouse pine daybed", ("Bedroom", "Beds")),
]
QUERIES = [
    Query("q1", "blue velvet sofa"),
    Query("q2", "ivory wool rug"),
    Query("q3", "set of 4 dining chairs"),
    Query("q4", "something to sleep on"),
    Query("q5", "walnut dresser"),
]
JUDGMENTS = [
    Judgment("q1", "s01", "Exact"),
    Judgment("q1", "s04", "Partial"),  # green is fine for this shopper: never a negative
    Judgment("q2", "r01", "Exact"),
    Judgment("q3", "c01", "Exact"),
    Judgment("q4", "d04", "Exact"),
    Judgment("q5", "d01", "Exact"),
]


@pytest.fixture
def dataset() -> Dataset:
    return Dataset(
        "near-miss-fixture",
        PRODUCTS,
        QUERIES,
        JUDGMENTS,
        gains={"Exact": 2, "Partial": 1, "Irrelevant": 0},
    )


@pytest.fixture
def vocabulary(dataset: Dataset) -> AttributeVocabulary:
    return AttributeVocabulary.from_products(dataset.products)


class FixedGenerator:
    """Answers every prompt with the same text; records the prompts."""

    def __init__(self, answer: str) -> None:
        self.answer = answer
        self.prompts: list[str] = []

    @property
    def id(self) -> str:
        return "fixed"

    def generate(
        self,
        prompts: Sequence[str],
        *,
        max_tokens: int,
        temperature: float,
        seed: int,
        stop: Sequence[str],
    ) -> list[str]:
        self.prompts.extend(prompts)
        return [self.answer for _ in prompts]


# --- vocabulary ------------------------------------------------------------------------------


def test_extract_known_answers(vocabulary: AttributeVocabulary) -> None:
    extract = vocabulary.extract
    assert extract(PRODUCTS[0]) == {"color": "blue", "material": "velvet", "type": "sofa"}
    assert extract(PRODUCTS[7]) == {"color": "navy blue", "material": "velvet", "type": "sofa"}
    assert extract(Product("x", "large ivory wool area rug")) == {
        "color": "ivory",
        "material": "wool",
        "size": "large",
        "type": "rug",
    }
    assert extract(Product("x", "set of 4 oak dining chairs")) == {
        "count": "set of 4",
        "material": "oak",
        "type": "chairs",
    }
    assert extract(Product("x", "mid-century modern walnut bed"))["style"] == "mid century modern"
    assert extract(Product("x", "mcnett tv stand for tvs")) == {"type": "stand"}
    # A second color is not the product type.
    assert extract(Product("x", "area rug blue gold")) == {"color": "blue", "type": "rug"}
    assert extract(Product("x", "rooster wall décor"))["type"] == "décor"
    assert extract(Product("x", "tavon 30 in. x 18 in. door mat"))["type"] == "mat"
    # Structured attributes win over the title.
    assert extract(Product("x", "sofa", attributes={"Color": "Navy Blue"}))["color"] == "navy blue"


def test_alternatives_are_other_catalog_values(vocabulary: AttributeVocabulary) -> None:
    colors = vocabulary.alternatives("color", "blue")
    # navy blue shares a word with blue; ivory (4 products) before the single-product colors.
    assert colors[0] == "ivory"
    assert "navy blue" not in colors and "blue" not in colors
    assert set(colors) == {"ivory", "red", "green", "gray", "grey", "black", "beige", "white"}
    assert "grey" not in vocabulary.alternatives("color", "gray")
    assert vocabulary.alternatives("count", "set of 4") == ["set of 2", "2 piece"]
    assert vocabulary.alternatives("color", "chartreuse") == sorted(
        vocabulary.alternatives("color", "chartreuse"),
        key=lambda v: (-vocabulary.counts["color"][v], v),
    )
    assert vocabulary.category_for_type("rug") == RUGS


def test_value_pattern_matches_whole_words_only() -> None:
    assert value_pattern("mid century").search("Mid-Century bed")
    assert value_pattern("décor").search("wall Décor") and not value_pattern("cor").search("décor")
    assert not value_pattern("blue").search("blueberry sofa")
    assert value_pattern("set of 4").sub("set of 2", "Set of 4 chairs") == "set of 2 chairs"


# --- near-miss negatives -----------------------------------------------------------------------


def test_catalog_near_misses_are_preferred_and_exclude_known_positives(dataset: Dataset) -> None:
    config = NearMissConfig(per_positive=4, seed=0)
    frame, stats = near_miss_negatives(dataset, {"q1": {"s01"}}, config)
    assert list(frame.columns) == [*SAMPLE_COLUMNS, "product_text"]
    # The query names color, material and type; they take turns. color -> s02 (red; s04 green
    # is a judged positive, s07 also has a style, s08's navy blue shares "blue"), material ->
    # s03 (leather); no other type among the Sofas (the armchair is another category), so no
    # type swap; then color and material again, now as rule rewrites.
    assert list(frame["product_id"][:2]) == ["s02", "s03"]
    assert frame["product_id"][2].startswith("s01~color=")
    assert frame["product_id"][3].startswith("s01~material=")
    assert list(frame["source"]) == ["catalog", "catalog", "rule", "rule"]
    assert frame["product_text"][:2].isna().all()
    assert frame["product_text"][2].endswith("velvet sofa Furniture Sofas")
    assert set(frame["label"]) == {0} and set(frame["kind"]) == {"negative"}
    assert set(frame["method"]) == {"near-miss"} and set(frame["query"]) == {"blue velvet sofa"}
    assert (stats.made, stats.from_catalog, stats.rewritten, stats.pairs) == (4, 2, 2, 1)
    assert stats.by_attribute == {"color": 2, "material": 2}


def test_without_catalog_preference_every_variant_is_a_rewrite(dataset: Dataset) -> None:
    config = NearMissConfig(per_positive=2, prefer_catalog=False, text_fields=("title",))
    frame, stats = near_miss_negatives(dataset, {"q1": {"s01"}}, config)
    assert list(frame["source"]) == ["rule", "rule"]
    color_id, material_id = frame["product_id"]
    new_color = color_id.split("~color=")[1]
    new_material = material_id.split("~material=")[1]
    assert frame["product_text"][0] == f"{new_color} velvet sofa"
    assert frame["product_text"][1] == f"blue {new_material} sofa"
    assert stats.from_catalog == 0 and stats.rewritten == 2


def test_every_variant_differs_in_exactly_one_attribute_and_is_no_positive(
    dataset: Dataset, vocabulary: AttributeVocabulary
) -> None:
    exact = {j.query_id: j.product_id for j in JUDGMENTS if j.label == "Exact"}
    judged_positives = dataset.positives()
    config = NearMissConfig(per_positive=3, seed=7, text_fields=("title",))
    frame, stats = near_miss_negatives(dataset, {q: {p} for q, p in exact.items()}, config)
    assert stats.made == len(frame) > 10
    assert stats.skipped == 0
    assert set(frame["source"]) == {"catalog", "rule"}
    for row in frame.to_dict("records"):
        query_id, product_id = str(row["query_id"]), str(row["product_id"])
        assert product_id not in judged_positives[query_id]
        original = dataset.product(exact[query_id])
        if row["source"] == "catalog":
            variant = dataset.product(product_id)
        else:
            assert product_id.startswith(f"{original.id}~")
            variant = Product("v", str(row["product_text"]), "", original.category)
        before = vocabulary.extract(original)
        after = vocabulary.extract(variant)
        changed = [k for k in set(before) | set(after) if before.get(k) != after.get(k)]
        assert len(changed) == 1, (product_id, before, after)


def test_a_catalog_product_is_a_negative_once_per_query(dataset: Dataset) -> None:
    config = NearMissConfig(attributes=("color",), per_positive=1)
    frame, stats = near_miss_negatives(dataset, {"q2": {"r01", "r08"}}, config)
    # black wool area rug (r03) is the only catalog near miss of both; the second gets a rewrite.
    first, second = frame["product_id"]
    assert first == "r03" and second.startswith("r08~color=")
    assert (stats.from_catalog, stats.rewritten) == (1, 1)


def test_swaps_an_attribute_the_query_names(dataset: Dataset) -> None:
    frame, _ = near_miss_negatives(
        dataset, {"q3": {"c01"}, "q5": {"d01"}}, NearMissConfig(prefer_catalog=False)
    )
    by_query = dict(zip(frame["query_id"], frame["product_id"], strict=True))
    # "set of 4" is what q3 names; the same-form count comes first among alternatives.
    assert by_query["q3"].startswith("c01~count=")
    assert by_query["q5"].startswith("d01~material=")


def test_falls_back_to_the_type_when_the_query_names_no_attribute(dataset: Dataset) -> None:
    frame, _ = near_miss_negatives(dataset, {"q4": {"d04"}}, NearMissConfig(per_positive=1))
    assert list(frame["product_id"]) == ["d05"]  # the farmhouse pine daybed
    rewritten, _ = near_miss_negatives(
        dataset, {"q4": {"d04"}}, NearMissConfig(per_positive=1, prefer_catalog=False)
    )
    # A new type comes from the same category: daybed (a Bed), not a rug or a lamp.
    assert list(rewritten["product_id"]) == ["d04~type=daybed"]
    assert list(rewritten["product_text"]) == ["farmhouse pine daybed Bedroom Beds"]


def test_a_bad_generator_rewrite_is_rejected_and_the_rule_used(dataset: Dataset) -> None:
    generator = FixedGenerator("blue red velvet sofa")  # both colors: not a clean swap
    config = NearMissConfig(
        attributes=("color",), prefer_catalog=False, generator=generator, text_fields=("title",)
    )
    frame, stats = near_miss_negatives(dataset, {"q1": {"s01"}}, config)
    (product_id,) = frame["product_id"]
    new = product_id.split("~color=")[1]
    # green belongs to a judged positive (s04): never a near-miss value for this query.
    assert new not in {"blue", "green", "navy blue"}
    (prompt,) = generator.prompts
    assert prompt.endswith(f"Title: blue velvet sofa\nChange: blue -> {new}\nNew title:")
    assert list(frame["source"]) == ["rule"]
    assert list(frame["product_text"]) == [f"{new} velvet sofa"]
    assert (stats.rejected, stats.by_generator, stats.made) == (1, 0, 1)


def test_a_good_generator_rewrite_is_used(dataset: Dataset) -> None:
    config = NearMissConfig(
        attributes=("color",),
        prefer_catalog=False,
        generator=TemplateGenerator(),
        text_fields=("title",),
    )
    frame, stats = near_miss_negatives(dataset, {"q1": {"s01"}}, config)
    new = frame["product_id"][0].split("~color=")[1]
    assert list(frame["source"]) == ["template-v1"]
    assert list(frame["product_text"]) == [f"{new} velvet sofa"]
    assert (stats.rejected, stats.by_generator) == (0, 1)


def test_validation_can_be_turned_off(dataset: Dataset) -> None:
    config = NearMissConfig(
        attributes=("color",),
        prefer_catalog=False,
        generator=FixedGenerator("blue red velvet sofa"),
        validate=False,
        text_fields=("title",),
    )
    frame, stats = near_miss_negatives(dataset, {"q1": {"s01"}}, config)
    assert list(frame["product_text"]) == ["blue red velvet sofa"]
    assert stats.rejected == 0


def test_variant_problem_names_what_is_wrong(vocabulary: AttributeVocabulary) -> None:
    original = vocabulary.extract(PRODUCTS[0])
    good = rewrite_product(PRODUCTS[0], "color", "blue", "red")
    assert good.id == "s01~color=red" and good.title == "red velvet sofa"
    assert variant_problem(vocabulary, original, good, "color", "blue", "red") is None
    both = Product("v", "blue red velvet sofa", category=SOFAS)
    assert "old value 'blue' still present" in str(
        variant_problem(vocabulary, original, both, "color", "blue", "red")
    )
    lost = Product("v", "red sofa", category=SOFAS)
    assert "attributes changed" in str(
        variant_problem(vocabulary, original, lost, "color", "blue", "red")
    )


def test_same_seed_same_frame(dataset: Dataset) -> None:
    config = NearMissConfig(per_positive=2, seed=3)
    first, _ = near_miss_negatives(dataset, dataset.positives(), config)
    second, _ = near_miss_negatives(dataset, dataset.positives(), config)
    pd.testing.assert_frame_equal(first, second)


def test_unknown_ids_and_bad_config_are_clear(dataset: Dataset) -> None:
    with pytest.raises(DataError, match="query id 'nope'"):
        near_miss_negatives(dataset, {"nope": {"s01"}}, NearMissConfig())
    with pytest.raises(DataError, match="positive product id 'zz' of query 'q1'"):
        near_miss_negatives(dataset, {"q1": {"zz"}}, NearMissConfig())
    with pytest.raises(ConfigError, match="per_positive"):
        NearMissConfig(per_positive=0)


def test_empty_positives_give_an_empty_frame(dataset: Dataset) -> None:
    frame, stats = near_miss_negatives(dataset, {}, NearMissConfig())
    assert frame.empty and list(frame.columns) == [*SAMPLE_COLUMNS, "product_text"]
    assert stats.made == 0
