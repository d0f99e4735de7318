"""A generator with no model: writes queries and rewrites from the product's own words."""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence

import numpy as np

from shopaug.encoders.base import tokenize
from shopaug.llm.base import GeneratorError, cut_at_stop
from shopaug.llm.prompts import parse_query_prompt, parse_rewrite_prompt

logger = logging.getLogger(__name__)

#: Words that never make a query on their own.
STOPWORDS = frozenset(
    {
        "a", "an", "and", "the", "of", "for", "with", "by", "in", "on", "to", "from", "up",
        "at", "or", "w", "x", "set", "sets", "pc", "pcs", "piece", "pieces", "inch", "inches",
        "ft", "cm", "mm", "h", "d", "l", "this", "that", "your", "our",
    }
)  # fmt: skip
#: Words after which a title stops naming the product ("tv stand for tvs up to 55").
#: Not "in": in catalog titles it is mostly inches ("30 in. x 18 in. door mat").
_TITLE_CUT = frozenset({"for", "with", "by", "w", "featuring", "including"})
#: Titles with at least this many words usually open with a brand or model name (WANDS:
#: "traci ombre braided cotton aqua area rug"); that first word is not used as a query word.
_NAMED_TITLE_WORDS = 4


def _singular(word: str) -> str:
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def naming_words(title_tokens: Sequence[str]) -> list[str]:
    """The title words before the first "for", "with", "by"...: the part that names the product."""
    words: list[str] = []
    for token in title_tokens:
        if token in _TITLE_CUT and words:
            break
        words.append(token)
    return words


def head_noun(title_tokens: Sequence[str]) -> str:
    """The word that names what the product is: the last non-stopword before "for", "with"...

    ``["mcnett", "tv", "stand", "for", "tvs"]`` -> ``"stand"``; empty when there is none.
    """
    for token in reversed(naming_words(title_tokens)):
        if token.isalpha() and token not in STOPWORDS and len(token) > 1:
            return token
    return ""


def salient_words(title_tokens: Sequence[str], class_tokens: Sequence[str]) -> list[str]:
    """Title words worth putting in a query, in title order: words of the naming part (see
    :func:`naming_words`) that are not stopwords, numbers, class words, the head noun, or the
    opening name word of a long title."""
    head = head_noun(title_tokens)
    class_words = {_singular(token) for token in class_tokens}
    naming = naming_words(title_tokens)
    start = 1 if len(naming) >= _NAMED_TITLE_WORDS else 0
    seen: set[str] = set()
    words = []
    for token in naming[start:]:
        if (
            not token.isalpha()
            or len(token) < 2
            or token in STOPWORDS
            or token == head
            or _singular(token) in class_words
            or token in seen
        ):
            continue
        seen.add(token)
        words.append(token)
    return words


class TemplateGenerator:
    """Fills templates from the product named in the prompt; no model, no download.

    It understands the two prompt formats of :mod:`shopaug.llm.prompts`:

    * query prompts: one of three templates, *two salient title words + class*
      ("ombre aqua area rugs"), *one salient word + head noun* ("braided rug") or *two salient
      words + head noun*; at ``temperature == 0`` always the first template with the first
      words, otherwise the template and words are drawn with a generator seeded by
      ``(seed, prompt)``, so the same seed gives the same text on every machine;
    * rewrite prompts: replaces the old value by the new one, whole words only.

    Any other prompt raises :class:`GeneratorError`: the template generator cannot follow free
    instructions.
    """

    def __init__(self, name: str = "template-v1") -> None:
        self._name = name

    @property
    def id(self) -> str:
        return self._name

    def generate(
        self,
        prompts: Sequence[str],
        *,
        max_tokens: int,
        temperature: float,
        seed: int,
        stop: Sequence[str],
    ) -> list[str]:
        """One completion per prompt; see the class docstring for what each prompt gives."""
        if max_tokens <= 0:
            raise ValueError(f"max_tokens must be positive, got {max_tokens}")
        completions = []
        for prompt in prompts:
            text = self._complete(prompt, temperature=temperature, seed=seed)
            words = text.split()[:max_tokens]
            completions.append(cut_at_stop(" " + " ".join(words), stop))
        return completions

    def _complete(self, prompt: str, *, temperature: float, seed: int) -> str:
        rewrite = parse_rewrite_prompt(prompt)
        if rewrite is not None:
            title, old, new = rewrite
            pattern = re.compile(rf"(?<![\w]){re.escape(old)}(?![\w])", re.IGNORECASE)
            return pattern.sub(new, title)
        query = parse_query_prompt(prompt)
        if query is None:
            raise GeneratorError(
                "the template generator understands only the query and rewrite prompts of "
                "shopaug.llm.prompts (ending in 'Query:' or 'New title:'); got a prompt ending "
                f"{prompt[-60:]!r}"
            )
        title, product_class = query
        return self._query(title, product_class, temperature=temperature, seed=seed)

    @staticmethod
    def _query(title: str, product_class: str, *, temperature: float, seed: int) -> str:
        title_tokens = tokenize(title)
        class_tokens = tokenize(product_class)
        head = head_noun(title_tokens)
        words = salient_words(title_tokens, class_tokens)
        class_phrase = " ".join(class_tokens) or head
        if temperature <= 0:
            template, chosen = 0, words[:2]
        else:
            digest = hashlib.blake2b(f"{seed}\x00{_draw_key(title, product_class)}".encode())
            rng = np.random.default_rng(int.from_bytes(digest.digest()[:8], "little"))
            template = int(rng.integers(3))
            size = 1 if template == 1 else 2
            picks = rng.choice(len(words), size=min(size, len(words)), replace=False)
            chosen = [words[i] for i in sorted(int(p) for p in picks)]
        parts = [*chosen, class_phrase] if template == 0 or not head else [*chosen, head]
        query = " ".join(part for part in parts if part)
        if not query:
            logger.debug("no words to make a query from title %r", title)
        return query


def _draw_key(title: str, product_class: str) -> str:
    """What the template draws depend on: the product, not the few-shot examples before it."""
    return f"{title}\x00{product_class}"
