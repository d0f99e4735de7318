"""Text fields of the public API: valid Unicode without control characters.

JSON can carry what UTF-8 cannot (``"\\ud800"`` decodes to a lone surrogate) and what no
query or id should hold (NUL, escape sequences, C1 controls). Such strings broke the tokenizer
and any answer that echoed them, so every string of a request model is one of the types below,
checked when the body is validated: a 422 names the field and the offending character.

* :data:`QueryText`: free text; tab, line feed and carriage return are allowed (whitespace).
* :data:`Identifier`: 1 to 200 characters, no control character at all.
* :data:`IdentifierOrEmpty`: the same, but may be empty (optional ids that clients send as "").
* :data:`ServerPath`: a path on the server (admin routes), no control character.

Their JSON schema carries a ``pattern`` that states the rule for clients and fuzzers.
"""

from __future__ import annotations

import unicodedata
from typing import Annotated

from pydantic import AfterValidator, Field

#: Control characters allowed in free text (they are whitespace to every tokenizer).
TEXT_WHITESPACE = frozenset("\t\n\r")
#: ECMA-262 patterns (OpenAPI's dialect) of the two rules, published in the schema.
IDENTIFIER_PATTERN = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"
TEXT_PATTERN = "^[^\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f\\u007f-\\u009f]*$"


def text_problem(value: str, *, allowed: frozenset[str] = frozenset()) -> str | None:
    """Why ``value`` is not acceptable text, or None when it is.

    Args:
        value: the decoded string.
        allowed: control characters that are accepted anyway.

    Returns:
        A sentence naming the first offending character (by code point, never the character
        itself) and its 1-based position.
    """
    if value.isascii() and value.isprintable():  # the common case, checked in C
        return None
    for position, character in enumerate(value, start=1):
        category = unicodedata.category(character)
        if category == "Cs":
            return (
                f"contains a lone surrogate U+{ord(character):04X} at character {position}; "
                "expected valid Unicode text (a surrogate pair must be complete)"
            )
        if category == "Cc" and character not in allowed:
            return (
                f"contains the control character U+{ord(character):04X} at character {position}; "
                "control characters are not accepted"
            )
    return None


def _checked_text(value: str) -> str:
    problem = text_problem(value, allowed=TEXT_WHITESPACE)
    if problem is not None:
        raise ValueError(problem)
    return value


def _checked_identifier(value: str) -> str:
    problem = text_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


QueryText = Annotated[
    str,
    Field(json_schema_extra={"pattern": TEXT_PATTERN}),
    AfterValidator(_checked_text),
]
Identifier = Annotated[
    str,
    Field(min_length=1, max_length=200, json_schema_extra={"pattern": IDENTIFIER_PATTERN}),
    AfterValidator(_checked_identifier),
]
IdentifierOrEmpty = Annotated[
    str,
    Field(max_length=200, json_schema_extra={"pattern": IDENTIFIER_PATTERN}),
    AfterValidator(_checked_identifier),
]
ServerPath = Annotated[
    str,
    Field(min_length=1, max_length=4096, json_schema_extra={"pattern": IDENTIFIER_PATTERN}),
    AfterValidator(_checked_identifier),
]
