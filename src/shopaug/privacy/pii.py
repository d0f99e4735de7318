"""Find and replace personal data in free text: e-mail, phone, card, IBAN, street address.

Shoppers type anything into a search box or a feedback form: "call me 415-555-2671",
"ship to 12 Main St". Such text must not reach the feedback store, ``samples.parquet`` or an
external LLM endpoint. :class:`PiiScrubber` replaces each finding with a placeholder
(``[EMAIL]``, ``[PHONE]``, ``[CARD]``, ``[IBAN]``, ``[ADDRESS]``) and counts what it replaced.

How each kind is found (see docs/privacy.md for the reasons and the limits):

* **phone**: Google's libphonenumber (the ``phonenumbers`` package, ``phonenumberslite``
  distribution) scans the text with ``Leniency.VALID``: a number must be valid for its region
  (``phone_region`` for numbers without ``+`` prefix). Dimensions (``72 x 30 x 29.5``), years
  and short codes are not valid numbers. A number right after a product-code label (``sku``,
  ``model``, ``item``, ``part``, ``upc``, ...) is taken as that code, not as a phone.
* **card**: 13 to 19 digits (single spaces or dashes between them allowed) that start with 2-6
  (the issuer ranges of Visa, Mastercard, Amex, Discover, JCB, Diners, UnionPay) and pass the
  Luhn check (``stdnum.luhn``). A 16-digit product code that fails Luhn is not a card.
* **iban**: two letters, two check digits and 11-30 letters or digits (spaces allowed), valid
  by ISO 7064 mod 97-10 and the country's length and format (``stdnum.iban``).
* **email**: ``local@domain.tld`` by a regular expression (no library needed for the shape).
* **address**: documented rules for US/UK-style street addresses, which no maintained offline
  library detects in free text: a house number (1-6 digits, optional letter) not glued to
  other characters, an optional direction, one to four name words, and a street suffix from
  the USPS list (``street``, ``st``, ``avenue``, ``ave``, ``road``, ``rd``, ...), with an
  optional unit (``apt 4b``, ``suite 200``) and an optional ``, City, ST 12345`` tail; and
  ``PO Box 123``. A name word that is a unit or product word (``inch``, ``ft``, ``seat``,
  ``drawer``, ``piece``, ...) or itself a suffix (``1 way street sign``) rules the match out.

Where findings overlap, the kinds win in the order of :data:`PII_KINDS`.

Example:
    >>> scrub_text("mail jo@example.com or call (415) 555-2671").text
    'mail [EMAIL] or call [PHONE]'
    >>> scrub_text("3-seat sofa 84 inch, 60x120 rug").counts
    {}
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from shopaug.errors import ConfigError, require

#: Kinds of personal data, in the order that settles overlapping findings.
PII_KINDS: tuple[str, ...] = ("email", "iban", "card", "phone", "address")

_ANY_CANDIDATE = re.compile(r"[0-9@]")  # every kind contains a digit or an @
_EMAIL = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"
)
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]{2}[0-9]{2}(?:[ -]?[A-Za-z0-9]){11,30}")
_CARD = re.compile(r"(?<![\w-])[0-9](?:[ -]?[0-9]){12,18}(?![\w-])")
_CARD_FIRST_DIGITS = frozenset("23456")
_PRODUCT_LABEL = re.compile(
    r"(?:\b(?:sku|model|item|part|part\s+no|style|upc|ean|gtin|isbn|mpn|ref|art)\.?\s*[:#]?"
    r"|#)\s*$",
    re.IGNORECASE,
)

_STREET_SUFFIXES = (
    "street|st|avenue|ave|road|rd|boulevard|blvd|lane|ln|drive|dr|court|ct|place|pl|terrace|"
    "ter|way|parkway|pkwy|highway|hwy|circle|cir|square|sq|trail|trl|plaza|crescent|close|"
    "alley|expressway|freeway"
)
_DIRECTIONS = "north|south|east|west|n|s|e|w|ne|nw|se|sw"
_ADDRESS = re.compile(
    rf"(?<![\w.,/$-])[0-9]{{1,6}}[a-z]?\s+(?:(?:{_DIRECTIONS})\.?\s+)?"
    rf"(?P<name>(?:(?:[0-9]{{1,3}}(?:st|nd|rd|th)|[a-z][a-z'-]*)\.?\s+){{1,4}}?)"
    rf"(?:{_STREET_SUFFIXES})\b\.?(?:\s+(?:{_DIRECTIONS})\b\.?)?"
    r"(?:,?\s+(?:apt|apartment|suite|ste|unit|#)\.?\s*#?[a-z0-9-]+)?"
    r"(?:,\s*[a-z][a-z .'-]*,\s*[a-z]{2}\s+[0-9]{5}(?:-[0-9]{4})?)?"
    r"|\bp\.?\s?o\.?\s+box\s+[0-9]+",
    re.IGNORECASE,
)
#: Words that make "<number> <words> <suffix>" a product description, not a street.
_PRODUCT_WORDS = (
    "in inch inches ft feet foot cm mm m x by pc pcs piece pieces seat seats seater drawer "
    "drawers door doors tier tiers shelf shelves pack packs set sets lb lbs oz gal gallon qt "
    "quart liter litre w watt light lights cup cups count person people panel panels bulb "
    "bulbs slot slots burner burners cube cubes year years month months day days pair pairs"
)
_NOT_STREET_NAMES = frozenset(_PRODUCT_WORDS.split()) | frozenset(_STREET_SUFFIXES.split("|"))


@dataclass(frozen=True, slots=True)
class PiiMatch:
    """One finding: its kind and the span ``text[start:end]``."""

    kind: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class ScrubResult:
    """Scrubbed text and how many findings of each kind were replaced (kinds with none are
    absent, so an empty ``counts`` means nothing was found)."""

    text: str
    counts: dict[str, int]

    @property
    def total(self) -> int:
        """Findings replaced, all kinds together."""
        return sum(self.counts.values())


class PiiScrubber:
    """Finds personal data in text and replaces it with ``[KIND]`` placeholders.

    Args:
        kinds: The kinds to look for, a subset of :data:`PII_KINDS`.
        phone_region: ISO 3166 region for phone numbers written without ``+`` and country
            code (``US``, ``GB``, ``DE``, ...).

    Raises:
        ConfigError: An unknown kind or region.
        MissingExtraError: ``phonenumbers`` or ``python-stdnum`` is not installed.

    Example:
        >>> scrubber = PiiScrubber(kinds=("card",))
        >>> scrubber.scrub("card 4111 1111 1111 1111, sku 1234567812345678").text
        'card [CARD], sku 1234567812345678'
    """

    def __init__(self, kinds: Iterable[str] = PII_KINDS, *, phone_region: str = "US") -> None:
        chosen = tuple(kinds)
        unknown = sorted(set(chosen) - set(PII_KINDS))
        if unknown:
            raise ConfigError(f"pii kinds: unknown {unknown}; expected a subset of {PII_KINDS}")
        self.kinds = tuple(kind for kind in PII_KINDS if kind in chosen)
        self._phonenumbers: Any = require("phonenumbers", "privacy")
        self._iban: Any = require("stdnum.iban", "privacy")
        self._luhn: Any = require("stdnum.luhn", "privacy")
        regions = self._phonenumbers.SUPPORTED_REGIONS
        if phone_region not in regions:
            raise ConfigError(
                f"pii phone_region: {phone_region!r} is not a region libphonenumber knows; "
                "expected an ISO 3166 code such as 'US', 'GB' or 'DE'"
            )
        self.phone_region = phone_region

    def find(self, text: str) -> list[PiiMatch]:
        """Non-overlapping findings in ``text``, by position."""
        if not _ANY_CANDIDATE.search(text):
            return []
        finders = {
            "email": self._emails,
            "iban": self._ibans,
            "card": self._cards,
            "phone": self._phones,
            "address": self._addresses,
        }
        kept: list[PiiMatch] = []
        for kind in self.kinds:  # earlier kinds win overlaps
            for match in finders[kind](text):
                if all(match.end <= other.start or match.start >= other.end for other in kept):
                    kept.append(match)
        return sorted(kept, key=lambda match: match.start)

    def scrub(self, text: str) -> ScrubResult:
        """``text`` with every finding replaced by ``[KIND]``, and the counts per kind."""
        matches = self.find(text)
        if not matches:
            return ScrubResult(text, {})
        pieces: list[str] = []
        cursor = 0
        for match in matches:
            pieces.append(text[cursor : match.start])
            pieces.append(f"[{match.kind.upper()}]")
            cursor = match.end
        pieces.append(text[cursor:])
        counts = Counter(match.kind for match in matches)
        return ScrubResult(
            "".join(pieces), {kind: counts[kind] for kind in self.kinds if counts[kind]}
        )

    def scrub_texts(self, texts: Iterable[str]) -> tuple[list[str], Counter[str]]:
        """Scrub many texts (each distinct text once); the counts are summed over all texts."""
        seen: dict[str, ScrubResult] = {}
        scrubbed: list[str] = []
        totals: Counter[str] = Counter()
        for text in texts:
            result = seen.get(text)
            if result is None:
                result = seen[text] = self.scrub(text)
            scrubbed.append(result.text)
            totals.update(result.counts)
        return scrubbed, totals

    # -- finders, one per kind ----------------------------------------------------------------

    def _emails(self, text: str) -> list[PiiMatch]:
        return [PiiMatch("email", m.start(), m.end()) for m in _EMAIL.finditer(text)]

    def _ibans(self, text: str) -> list[PiiMatch]:
        found = []
        for candidate in _IBAN.finditer(text):
            start = candidate.start()
            # the pattern may run into the next word: keep the longest valid prefix that ends
            # at a word boundary
            for end in range(candidate.end(), start + 14, -1):
                boundary = end == len(text) or not text[end].isalnum()
                if boundary and text[end - 1].isalnum() and self._iban.is_valid(text[start:end]):
                    found.append(PiiMatch("iban", start, end))
                    break
        return found

    def _cards(self, text: str) -> list[PiiMatch]:
        found = []
        for candidate in _CARD.finditer(text):
            digits = re.sub(r"[ -]", "", candidate.group())
            if digits[0] in _CARD_FIRST_DIGITS and self._luhn.is_valid(digits):
                found.append(PiiMatch("card", candidate.start(), candidate.end()))
        return found

    def _phones(self, text: str) -> list[PiiMatch]:
        phonenumbers = self._phonenumbers
        matcher = phonenumbers.PhoneNumberMatcher(
            text, self.phone_region, leniency=phonenumbers.Leniency.VALID
        )
        return [
            PiiMatch("phone", match.start, match.end)
            for match in matcher
            if not _PRODUCT_LABEL.search(text[: match.start])
        ]

    def _addresses(self, text: str) -> list[PiiMatch]:
        found = []
        for candidate in _ADDRESS.finditer(text):
            words = re.findall(r"[a-z0-9'-]+", (candidate.group("name") or "").lower())
            if any(word in _NOT_STREET_NAMES for word in words):
                continue
            found.append(PiiMatch("address", candidate.start(), candidate.end()))
        return found


@functools.lru_cache(maxsize=8)
def default_scrubber(phone_region: str = "US") -> PiiScrubber:
    """A shared scrubber of every kind (built once per region)."""
    return PiiScrubber(phone_region=phone_region)


def scrub_text(text: str, *, scrubber: PiiScrubber | None = None) -> ScrubResult:
    """``text`` scrubbed by ``scrubber`` (default: every kind, US phone region)."""
    return (scrubber or default_scrubber()).scrub(text)
