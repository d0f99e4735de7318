"""Synthetic queries: prompts, filters, round trip, determinism, and the OpenAI-compatible path
against a local fake server. The round-trip retriever is exact search over hashed vectors."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import pytest

from fake_openai_server import FakeOpenAIServer
from shopaug.augment.samples import SAMPLE_COLUMNS
from shopaug.augment.synthetic_queries import (
    DROP_REASONS,
    RoundTripRetriever,
    SyntheticQueryConfig,
    clean_completion,
    few_shot_examples,
    is_clean_example,
    query_problem,
    select_products,
    synthetic_queries,
)
from shopaug.data.records import Dataset, Judgment, Product, Query
from shopaug.encoders.base import HashingEncoder
from shopaug.errors import ConfigError
from shopaug.llm import GeneratorError, OpenAICompatibleGenerator, TemplateGenerator
from shopaug.llm.prompts import parse_query_prompt

PRODUCTS = [
    Product("p01", "blue velvet sofa", "a deep blue sofa.", ("Sofas",)),
    Product("p02", "oak 6 drawer dresser", "solid oak, 6 drawers.", ("Dressers",)),
    Product("p03", "ivory wool area rug", "hand-tufted.", ("Area Rugs",)),
    Product("p04", "brass table lamp", "", ("Table Lamps",)),
    Product("p05", "kellan ceramic stoneware pot planter", "glazed.", ("Planters",)),
    Product("p06", "traci ombre braided cotton aqua area rug", "", ("Area Rugs",)),
    Product("p07", "parquetta walnut 4 drawer standard dresser", "", ("Dressers",)),
    Product("p08", "peacock figurine", "", ("Figurines",)),
    Product("p09", "hiltner seashell platter", "", ("Platters",)),
    Product("p10", "wooden garden bench", "", ("Benches",)),
    Product("p11", "rooster copper weathervane", "", ("Weathervanes",)),
    Product("p12", "expandable garden hose reel", "100 ft hose.", ("Garden Hoses",)),
    Product("p13", "marble top bistro table", "", ("Bistro Tables",)),
    Product("p14", "linen blackout curtain panel", "", ("Curtains",)),
    Product("p15", "velvet accent pillow cover", "", ("Accent Pillows",)),
]
QUERIES = [
    Query("q1", "blue sofa"),
    Query("q2", "oak dresser"),
    Query("q3", "wool rug"),
    Query("q4", "desk lamp"),
]
JUDGMENTS = [
    Judgment("q1", "p01", "Exact"),
    Judgment("q2", "p02", "Exact"),
    Judgment("q3", "p03", "Exact"),
    Judgment("q3", "p06", "Partial"),
    Judgment("q4", "p04", "Irrelevant"),  # judged, so not "unjudged" either
]
JUDGED = {"p01", "p02", "p03", "p04", "p06"}


@pytest.fixture
def dataset() -> Dataset:
    return Dataset("synth-fixture", PRODUCTS, QUERIES, JUDGMENTS, {"Exact": 2, "Partial": 1})


def hashing_retriever(dataset: Dataset) -> RoundTripRetriever:
    """Exact cosine search over hashed bag-of-words vectors of name + class."""
    encoder = HashingEncoder(dim=256)
    catalog = encoder.encode(dataset.product_texts())  # (products, 256)
    ids = [product.id for product in dataset.products]

    def search(queries: Sequence[str], k: int) -> list[list[str]]:
        scores = encoder.encode(list(queries)) @ catalog.T  # (queries, products)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return [[ids[column] for column in row] for row in order]

    return search


class ScriptedGenerator:
    """Answers each query prompt with ``script(title, seed)``; records prompts and seeds."""

    def __init__(self, script: Callable[[str, int], str]) -> None:
        self.script = script
        self.calls: list[tuple[list[str], int, list[str]]] = []

    @property
    def id(self) -> str:
        return "scripted"

    def generate(
        self,
        prompts: Sequence[str],
        *,
        max_tokens: int,
        temperature: float,
        seed: int,
        stop: Sequence[str],
    ) -> list[str]:
        self.calls.append((list(prompts), seed, list(stop)))
        answers = []
        for prompt in prompts:
            parsed = parse_query_prompt(prompt)
            assert parsed is not None
            answers.append(self.script(parsed[0], seed))
        return answers


# --- pieces ------------------------------------------------------------------------------------


def test_few_shot_examples_are_real_queries_with_their_best_product(dataset: Dataset) -> None:
    examples = few_shot_examples(dataset, 5, seed=0)
    assert sorted((e.query, e.title, e.product_class) for e in examples) == [
        ("blue sofa", "blue velvet sofa", "Sofas"),
        ("oak dresser", "oak 6 drawer dresser", "Dressers"),
        ("wool rug", "ivory wool area rug", "Area Rugs"),
    ]
    assert few_shot_examples(dataset, 5, seed=0) == examples
    assert len(few_shot_examples(dataset, 2, seed=0)) == 2


@pytest.mark.parametrize(
    ("query", "clean"),
    [
        ("blue sofa", True),
        ("Blue  Sofa", True),
        ("sofa", False),  # one word
        ("blue sofa (velvet)", False),  # not plain words
        ("blue sofa, deep", False),
        ("cheap couch", False),  # shares no word with the product
        ("3 seat blue sofa", False),  # digits: a small model shown numbers invents them
        ("blue velvet sofa", False),  # the title copied
        ("big comfy blue sofa for the living room", False),  # more than 6 words
    ],
)
def test_is_clean_example(query: str, clean: bool) -> None:
    assert is_clean_example(query, PRODUCTS[0]) is clean


def test_few_shot_examples_prefer_clean_queries_one_per_class() -> None:
    queries = [
        Query("a", "blue sofa"),
        Query("b", "sofa (blue, velvet)"),
        Query("c", "oak dresser"),
        Query("d", "walnut dresser"),
        Query("e", "wool rug"),
    ]
    judgments = [
        Judgment("a", "p01", "Exact"),
        Judgment("b", "p01", "Exact"),
        Judgment("c", "p02", "Exact"),
        Judgment("d", "p07", "Exact"),
        Judgment("e", "p03", "Exact"),
    ]
    data = Dataset("few-shot", PRODUCTS, queries, judgments, {"Exact": 2})
    for seed in range(5):
        three = few_shot_examples(data, 3, seed=seed)
        assert {e.product_class for e in three} == {"Sofas", "Dressers", "Area Rugs"}
        assert "sofa (blue, velvet)" not in {e.query for e in three}
        five = few_shot_examples(data, 5, seed=seed)
        assert [e.query for e in five[:3]] == [e.query for e in three]
        assert five[3].product_class in {"Dressers"}  # the other dresser: clean, same class
        assert five[4].query == "sofa (blue, velvet)"  # unclean examples only to fill up


def test_select_products_unjudged_all_and_capped(dataset: Dataset) -> None:
    unjudged = select_products(dataset, SyntheticQueryConfig(max_products=None))
    assert [p.id for p in unjudged] == [p.id for p in PRODUCTS if p.id not in JUDGED]
    assert len(select_products(dataset, SyntheticQueryConfig(products="all"))) == 15
    capped = select_products(dataset, SyntheticQueryConfig(max_products=4, seed=1))
    assert len(capped) == 4 and not {p.id for p in capped} & JUDGED
    assert capped == select_products(dataset, SyntheticQueryConfig(max_products=4, seed=1))
    assert [p.id for p in capped] == sorted(p.id for p in capped)  # catalog order


@pytest.mark.parametrize(
    ("completion", "reason"),
    [
        ("  ", "empty"),
        ("??", "empty"),
        ("garden hose reel for the yard with extra long hose please", "too_long"),
        ("hose reel (garden)", "format_leak"),
        ("product: hose reel", "format_leak"),
        ("query: hose reel", "format_leak"),
        ("best expandable garden hose reel", "format_leak"),  # the full title copied
        ("50 ft hose reel", "invented_number"),
        ("hose reel 2", "invented_number"),
        ("100 ft hose reel", None),  # 100 is in the description
        ("expandable hose", None),
    ],
)
def test_query_filters(completion: str, reason: str | None) -> None:
    product = PRODUCTS[11]  # expandable garden hose reel, "100 ft hose."
    query = clean_completion(completion)
    assert query_problem(query, product, SyntheticQueryConfig()) == reason


def test_clean_completion() -> None:
    assert clean_completion(' "Blue  Sofa".\nQuery: x') == "blue sofa"
    assert clean_completion("\n") == ""


# --- end to end --------------------------------------------------------------------------------


def test_template_generator_end_to_end_is_deterministic(dataset: Dataset) -> None:
    config = SyntheticQueryConfig(queries_per_product=3, round_trip_top_k=5, seed=4)
    retriever = hashing_retriever(dataset)
    frame, stats = synthetic_queries(dataset, TemplateGenerator(), retriever, config)
    again, _ = synthetic_queries(dataset, TemplateGenerator(), retriever, config)
    pd.testing.assert_frame_equal(frame, again)
    assert list(frame.columns) == list(SAMPLE_COLUMNS)
    assert stats.products == 10 and stats.generated == 30 and stats.examples == 3
    assert stats.kept == len(frame) > 0
    assert stats.generated == stats.kept + sum(stats.dropped.values())
    assert set(stats.dropped) == set(DROP_REASONS)
    assert not set(frame["product_id"]) & JUDGED
    assert set(frame["kind"]) == {"positive"} and set(frame["label"]) == {1}
    assert set(frame["method"]) == {"synthetic-queries"}
    assert set(frame["source"]) == {"template-v1"}
    assert frame["rank"].between(1, 5).all()
    for row in frame.to_dict("records"):
        assert str(row["query_id"]).startswith(f"syn-{row['product_id']}-")
        # Round trip holds: searching the query finds the product at the recorded rank.
        (ranked,) = retriever([str(row["query"])], 5)
        assert ranked.index(str(row["product_id"])) + 1 == row["rank"]


def test_prompts_carry_few_shot_examples_stop_and_seeds(dataset: Dataset) -> None:
    generator = ScriptedGenerator(lambda title, seed: " " + title.split()[-1])
    config = SyntheticQueryConfig(queries_per_product=2, seed=10, batch_size=4, max_products=6)
    synthetic_queries(dataset, generator, hashing_retriever(dataset), config)
    assert [(len(p), seed) for p, seed, _ in generator.calls] == [
        (4, 10),
        (2, 10),
        (4, 11),
        (2, 11),
    ]
    prompt = generator.calls[0][0][0]
    blocks = prompt.split("\n\n")
    assert len(blocks) == 4  # three real examples, then the target
    assert "Product: blue velvet sofa (Sofas)\nQuery: blue sofa" in blocks[:3]
    assert blocks[-1].startswith("Product: ") and blocks[-1].endswith("\nQuery:")
    assert all(stop == ["\n", " ("] for _, _, stop in generator.calls)


def test_round_trip_drops_a_planted_unrelated_query(dataset: Dataset) -> None:
    def script(title: str, seed: int) -> str:
        if title == "peacock figurine":
            return " expandable garden hose"  # about another product entirely
        return " " + " ".join(title.split()[-2:])

    config = SyntheticQueryConfig(queries_per_product=1, round_trip_top_k=2)
    frame, stats = synthetic_queries(
        dataset, ScriptedGenerator(script), hashing_retriever(dataset), config
    )
    assert "p08" not in set(frame["product_id"])
    assert stats.dropped["round_trip"] == 1
    assert stats.kept == 9 and len(frame) == 9
    # Without the round trip the planted query would have been kept.
    loose, _ = synthetic_queries(
        dataset, ScriptedGenerator(script), None, SyntheticQueryConfig(round_trip_top_k=None)
    )
    assert "expandable garden hose" in set(loose.loc[loose["product_id"] == "p08", "query"])
    assert set(loose["rank"]) == {-1}


def test_filters_count_each_reason(dataset: Dataset) -> None:
    answers = {
        "peacock figurine": " peacock figurine (figurines)",
        "hiltner seashell platter": " hiltner seashell platter",
        "wooden garden bench": " 3 seat garden bench",
        "rooster copper weathervane": "",
        "expandable garden hose reel": " 100 ft hose reel",
    }

    def script(title: str, seed: int) -> str:
        return answers.get(title, " " + title.split()[-1])

    config = SyntheticQueryConfig(queries_per_product=2, round_trip_top_k=None)
    frame, stats = synthetic_queries(dataset, ScriptedGenerator(script), None, config)
    assert stats.dropped == {
        "empty": 2,
        "too_long": 0,
        "format_leak": 4,
        "invented_number": 2,
        "duplicate": 6,  # the second sample repeats the first for every kept product
        "round_trip": 0,
    }
    assert stats.kept == 6
    assert "100 ft hose reel" in set(frame["query"])


def test_openai_compatible_path_end_to_end(dataset: Dataset) -> None:
    config = SyntheticQueryConfig(queries_per_product=1, max_products=3, round_trip_top_k=15)
    with FakeOpenAIServer() as server:
        generator = OpenAICompatibleGenerator(server.base_url, "fake-gemma", backoff_s=0)
        frame, stats = synthetic_queries(dataset, generator, hashing_retriever(dataset), config)
        generator.close()
    assert len(server.requests) == 3
    for request in server.requests:
        assert request.path == "/v1/completions"
        assert request.body["stop"] == ["\n", " ("] and request.body["seed"] == 0
        assert request.body["model"] == "fake-gemma"
        assert "Product: blue velvet sofa (Sofas)\nQuery: blue sofa\n\n" in request.body["prompt"]
        assert request.body["prompt"].endswith("\nQuery:")
    assert set(frame["source"]) == {"openai-compatible:fake-gemma"}
    # The fake answers with the last two title words: each query finds its product.
    assert stats.kept == 3
    for row in frame.to_dict("records"):
        title = next(p.title for p in PRODUCTS if p.id == row["product_id"])
        assert row["query"] == " ".join(title.split()[-2:])


def test_openai_4xx_is_a_clear_error(dataset: Dataset) -> None:
    with FakeOpenAIServer(fail_first=1, fail_status=401) as server:
        generator = OpenAICompatibleGenerator(server.base_url, "m", backoff_s=0)
        with pytest.raises(GeneratorError, match=r"/v1/completions was refused with HTTP 401"):
            synthetic_queries(dataset, generator, None, SyntheticQueryConfig(round_trip_top_k=None))


def test_config_and_retriever_errors(dataset: Dataset) -> None:
    with pytest.raises(ConfigError, match=r"synthetic_queries\.products"):
        SyntheticQueryConfig(products="some")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="queries_per_product"):
        SyntheticQueryConfig(queries_per_product=0)
    with pytest.raises(ConfigError, match="no retriever"):
        synthetic_queries(dataset, TemplateGenerator(), None, SyntheticQueryConfig())

    def broken(queries: Sequence[str], k: int) -> list[list[str]]:
        return []

    with pytest.raises(ValueError, match="0 result lists"):
        synthetic_queries(dataset, TemplateGenerator(), broken, SyntheticQueryConfig())
