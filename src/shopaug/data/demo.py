"""The built-in demo catalog: SYNTHETIC furniture and decor products, generated from a seed.

This is not real data. It exists so that the README, the ``quick`` profile and the tests run in
seconds without downloads. The catalog is always drawn from :data:`DEMO_SEED`, a constant, not
from a run's seed: a data set's identity must not depend on the seed of the run that reads it,
or samples mined under ``--seed 3`` would be trained against the texts of another catalog.

Products combine a product type with a color, material, style and size; titles and
descriptions mention them in varied order (some only in the description), and queries ask for
a type with zero to two attributes. Judgments are graded by how well a product's attributes
match the query:

- ``Exact`` (gain 2): same product type and every attribute the query names;
- ``Partial`` (gain 1): same type with one named attribute different, or a related type (same
  room group) with every named attribute;
- ``Irrelevant`` (gain 0): everything else (a seeded sample of these is judged).

Interactions are synthetic too: clicks and purchases drawn with a Zipf-like popularity, so some
items are head, most are tail and about a tenth are new (no interactions at all).
"""

from __future__ import annotations

import numpy as np

from shopaug.data.loaders import WANDS_GAINS
from shopaug.data.records import Dataset, Interaction, Judgment, Product, Query

#: Seed of the demo catalog (products, queries, judgments, interactions). Fixed, and separate
#: from any run seed, so that ``demo`` names one data set. Changing it changes the data set.
DEMO_SEED = 0

#: type -> (category path, related-type group, allowed materials)
PRODUCT_TYPES: dict[str, tuple[tuple[str, ...], str, tuple[str, ...]]] = {
    "sofa": (("Furniture", "Living Room", "Sofas"), "seating", ("velvet", "leather", "linen")),
    "armchair": (
        ("Furniture", "Living Room", "Chairs"),
        "seating",
        ("velvet", "leather", "linen", "rattan"),
    ),
    "ottoman": (("Furniture", "Living Room", "Ottomans"), "seating", ("velvet", "leather", "wool")),
    "coffee table": (
        ("Furniture", "Living Room", "Tables"),
        "table",
        ("wood", "glass", "marble", "metal"),
    ),
    "dining table": (("Furniture", "Dining Room", "Tables"), "table", ("wood", "glass", "marble")),
    "desk": (("Furniture", "Office", "Desks"), "table", ("wood", "metal", "glass")),
    "bookshelf": (("Furniture", "Storage", "Shelving"), "storage", ("wood", "metal")),
    "dresser": (("Furniture", "Bedroom", "Dressers"), "storage", ("wood", "rattan")),
    "nightstand": (("Furniture", "Bedroom", "Nightstands"), "storage", ("wood", "metal", "rattan")),
    "bed frame": (("Furniture", "Bedroom", "Beds"), "bed", ("wood", "metal", "velvet")),
    "bar stool": (("Furniture", "Kitchen", "Stools"), "seating", ("wood", "metal", "leather")),
    "area rug": (("Decor", "Rugs"), "textile", ("wool", "jute", "cotton")),
    "curtain panel": (("Decor", "Window"), "textile", ("linen", "cotton", "velvet")),
    "throw pillow": (("Decor", "Pillows"), "textile", ("cotton", "velvet", "linen", "wool")),
    "floor lamp": (("Lighting", "Lamps"), "lamp", ("metal", "wood", "glass")),
    "table lamp": (("Lighting", "Lamps"), "lamp", ("ceramic", "glass", "metal")),
    "wall mirror": (("Decor", "Mirrors"), "decor", ("metal", "wood")),
    "planter": (("Outdoor", "Planters"), "decor", ("ceramic", "metal", "wood")),
}
COLORS = ("black", "white", "gray", "beige", "navy", "green", "red", "yellow", "brown", "pink")
STYLES = ("modern", "rustic", "mid-century", "industrial", "farmhouse", "scandinavian", "glam")
SIZES = ("small", "medium", "large")
BRANDS = ("Ashby", "Birchwood", "Calloway", "Dunmore", "Elkins", "Fairmont", "Greyleigh", "Harlow")
DETAILS = (
    "Easy to assemble with the included hardware.",
    "Wipe clean with a damp cloth.",
    "Ships in one box.",
    "A sturdy piece for everyday use.",
    "Designed to fit small apartments and large homes alike.",
    "Pairs well with neutral decor.",
)


def _title(rng: np.random.Generator, brand: str, attrs: dict[str, str]) -> str:
    """Title with the type and a varied subset/order of attributes; the rest go elsewhere."""
    words = [attrs["style"], attrs["color"], attrs["material"]]
    keep = [word for word in words if rng.random() < 0.75]
    rng.shuffle(keep)
    size = f"{attrs['size']} " if rng.random() < 0.3 else ""
    return f"{brand} {size}{' '.join(keep)} {attrs['type']}".replace("  ", " ").strip()


def _description(rng: np.random.Generator, attrs: dict[str, str]) -> str:
    sentences = [
        f"This {attrs['style']} {attrs['type']} is made of {attrs['material']}.",
        f"Finished in {attrs['color']}, it comes in a {attrs['size']} size.",
        str(rng.choice(DETAILS)),
    ]
    return " ".join(sentences)


def generate_demo(
    *,
    seed: int = DEMO_SEED,
    n_products: int = 480,
    n_queries: int = 64,
    irrelevant_per_query: int = 15,
    n_interactions: int = 3000,
) -> Dataset:
    """Generate the demo data set; the same arguments give the same data on any machine.

    Args:
        seed: seed of the numpy Generator that draws everything; the demo data set is the one
            drawn from :data:`DEMO_SEED` (other seeds give other, differently named catalogs).
        n_products: catalog size.
        n_queries: number of queries (each has at least one Exact product).
        irrelevant_per_query: judged Irrelevant products per query (a seeded sample).
        n_interactions: synthetic click/purchase events.
    """
    rng = np.random.default_rng(seed)
    types = sorted(PRODUCT_TYPES)
    products: list[Product] = []
    attributes: list[dict[str, str]] = []
    for number in range(n_products):
        kind = types[number % len(types)]
        category, _, materials = PRODUCT_TYPES[kind]
        attrs = {
            "type": kind,
            "color": str(rng.choice(COLORS)),
            "material": str(rng.choice(materials)),
            "style": str(rng.choice(STYLES)),
            "size": str(rng.choice(SIZES)),
        }
        brand = str(rng.choice(BRANDS))
        products.append(
            Product(
                id=f"p{number:04d}",
                title=_title(rng, brand, attrs),
                text=_description(rng, attrs),
                category=category,
                attributes={k: v for k, v in attrs.items() if k != "type"},
            )
        )
        attributes.append(attrs)

    queries: list[Query] = []
    judgments: list[Judgment] = []
    seen_texts: set[str] = set()
    attempts = 0
    while len(queries) < n_queries and attempts < n_queries * 50:
        attempts += 1
        anchor = attributes[int(rng.integers(n_products))]  # queries ask for things that exist
        n_named = int(rng.choice([0, 1, 1, 2, 2, 2]))
        named_keys = sorted(rng.choice(["color", "material", "style"], size=n_named, replace=False))
        named = {key: anchor[key] for key in named_keys}
        order = ["style", "color", "material"]
        text = " ".join([named[k] for k in order if k in named] + [anchor["type"]])
        if text in seen_texts:
            continue
        seen_texts.add(text)
        qid = f"q{len(queries):03d}"
        queries.append(Query(id=qid, text=text, query_class=anchor["type"]))
        grades = _grade_all(anchor["type"], named, attributes)
        irrelevant = [row for row, label in enumerate(grades) if label == "Irrelevant"]
        sampled = set(
            rng.choice(irrelevant, size=min(irrelevant_per_query, len(irrelevant)), replace=False)
        )
        for row, label in enumerate(grades):
            if label != "Irrelevant" or row in sampled:
                judgments.append(Judgment(query_id=qid, product_id=products[row].id, label=label))

    interactions = _interactions(rng, products, queries, judgments, n_interactions)
    return Dataset(
        name="demo" if seed == DEMO_SEED else f"demo-seed{seed}",
        products=products,
        queries=queries,
        judgments=judgments,
        gains=dict(WANDS_GAINS),
        interactions=interactions,
        source=f"shopaug.data.demo(seed={seed})",
    )


def _grade_all(kind: str, named: dict[str, str], attributes: list[dict[str, str]]) -> list[str]:
    group = PRODUCT_TYPES[kind][1]
    labels = []
    for attrs in attributes:
        mismatches = sum(attrs[key] != value for key, value in named.items())
        if attrs["type"] == kind:
            labels.append(
                "Exact" if mismatches == 0 else "Partial" if mismatches == 1 else "Irrelevant"
            )
        elif PRODUCT_TYPES[attrs["type"]][1] == group and mismatches == 0 and named:
            labels.append("Partial")
        else:
            labels.append("Irrelevant")
    return labels


def _interactions(
    rng: np.random.Generator,
    products: list[Product],
    queries: list[Query],
    judgments: list[Judgment],
    n_events: int,
) -> list[Interaction]:
    """Zipf-like popularity over products; about 10 % of products (the newest) get none."""
    n_new = len(products) // 10
    established = len(products) - n_new
    ranks = rng.permutation(established) + 1
    popularity = 1.0 / ranks**1.1
    popularity /= popularity.sum()
    relevant: dict[str, list[int]] = {}
    index = {p.id: row for row, p in enumerate(products)}
    for judgment in judgments:
        if judgment.label != "Irrelevant" and index[judgment.product_id] < established:
            relevant.setdefault(judgment.query_id, []).append(index[judgment.product_id])
    events: list[Interaction] = []
    for number in range(n_events):
        user = f"u{int(rng.integers(200)):03d}"
        query = queries[int(rng.integers(len(queries)))]
        candidates = relevant.get(query.id)
        if candidates and rng.random() < 0.7:
            weights = popularity[candidates] / popularity[candidates].sum()
            row = int(rng.choice(candidates, p=weights))
            qid = query.id
        else:
            row = int(rng.choice(established, p=popularity))
            qid = ""
        event = "purchase" if rng.random() < 0.15 else "click"
        events.append(
            Interaction(
                user_id=user,
                product_id=products[row].id,
                event=event,
                session_id=f"{user}-s{number // 5}",
                query_id=qid,
                position=int(rng.integers(1, 11)),
                timestamp=1_700_000_000.0 + number * 60.0,
            )
        )
    return events
