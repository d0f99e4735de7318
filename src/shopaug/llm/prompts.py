"""Few-shot prompt formats shared by the augmentation methods and the template generator.

The formats suit a *base* (not chat) model: a block of worked examples, then the target with
the answer left open, so the model completes one line. Each builder has a parser, used by
:class:`~shopaug.llm.template.TemplateGenerator` to read the target back out of a prompt.

Query prompt (synthetic queries)::

    Product: 6 bottle wine bar cabinet (Bar Cabinets)
    Query: small wine cabinet

    Product: stoneware pot planter (Planters)
    Query:

Rewrite prompt (near-miss variants)::

    Title: blue velvet sofa
    Change: blue -> red
    New title: red velvet sofa

    Title: oak 3 drawer dresser
    Change: oak -> walnut
    New title:
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

#: The stop sequence of every one-line completion.
LINE_STOP = "\n"
#: Stop sequences of a query completion: the end of the line, or an opening parenthesis (a
#: small base model tends to go on with the "(<class>)" of the product line; what came before
#: it is the query).
QUERY_STOPS: tuple[str, ...] = (LINE_STOP, " (")

_SPACE = re.compile(r"\s+")

#: Worked examples that open every rewrite prompt (changing exactly one attribute).
REWRITE_EXAMPLES: tuple[tuple[str, str, str, str], ...] = (
    ("blue velvet sofa", "blue", "red", "red velvet sofa"),
    ("rustic oak 3 drawer dresser", "oak", "walnut", "rustic walnut 3 drawer dresser"),
    ("set of 4 linen dining chairs", "set of 4", "set of 2", "set of 2 linen dining chairs"),
)


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (newlines included) collapsed to one space."""
    return _SPACE.sub(" ", text).strip()


def product_line(title: str, product_class: str = "") -> str:
    """``Product: <title> (<class>)``, or ``Product: <title>`` when there is no class."""
    title, product_class = one_line(title), one_line(product_class)
    return f"Product: {title} ({product_class})" if product_class else f"Product: {title}"


@dataclass(frozen=True, slots=True)
class QueryExample:
    """One worked example of a query prompt: a real query and a product judged Exact for it."""

    title: str
    product_class: str
    query: str


def query_prompt(examples: Sequence[QueryExample], title: str, product_class: str = "") -> str:
    """The few-shot query prompt for one target product; the answer is left open after
    ``Query:`` (complete with stops :data:`QUERY_STOPS`)."""
    blocks = [
        f"{product_line(example.title, example.product_class)}\nQuery: {one_line(example.query)}"
        for example in examples
    ]
    blocks.append(f"{product_line(title, product_class)}\nQuery:")
    return "\n\n".join(blocks)


def parse_query_prompt(prompt: str) -> tuple[str, str] | None:
    """``(title, class)`` of the target product of a query prompt, or None if ``prompt`` is not
    one (it must end with an open ``Query:`` line after a ``Product:`` line)."""
    lines = prompt.rstrip(" ").split("\n")
    if len(lines) < 2 or lines[-1].strip() != "Query:" or not lines[-2].startswith("Product: "):
        return None
    product = lines[-2][len("Product: ") :]
    if product.endswith(")") and " (" in product:
        title, _, product_class = product[:-1].rpartition(" (")
        return title, product_class
    return product, ""


def rewrite_prompt(title: str, old: str, new: str) -> str:
    """The few-shot prompt asking to change ``old`` into ``new`` in ``title`` and nothing else;
    the answer is left open after ``New title:`` (complete with stop ``"\\n"``)."""
    blocks = [
        f"Title: {t}\nChange: {o} -> {n}\nNew title: {result}"
        for t, o, n, result in REWRITE_EXAMPLES
    ]
    target = f"Title: {one_line(title)}\nChange: {one_line(old)} -> {one_line(new)}"
    blocks.append(f"{target}\nNew title:")
    return "\n\n".join(blocks)


def parse_rewrite_prompt(prompt: str) -> tuple[str, str, str] | None:
    """``(title, old, new)`` of the target of a rewrite prompt, or None if it is not one."""
    lines = prompt.rstrip(" ").split("\n")
    if (
        len(lines) < 3
        or lines[-1].strip() != "New title:"
        or not lines[-3].startswith("Title: ")
        or not lines[-2].startswith("Change: ")
        or " -> " not in lines[-2]
    ):
        return None
    old, _, new = lines[-2][len("Change: ") :].partition(" -> ")
    return lines[-3][len("Title: ") :], old, new
