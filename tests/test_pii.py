"""PII scrubbing: each kind found and replaced, counted, and product text left alone."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("phonenumbers")
pytest.importorskip("stdnum")

from stdnum import luhn

from shopaug.errors import ConfigError
from shopaug.privacy.pii import PII_KINDS, PiiScrubber, scrub_text


@pytest.mark.parametrize(
    ("text", "expected", "counts"),
    [
        ("mail jo.doe+x@example.co.uk now", "mail [EMAIL] now", {"email": 1}),
        ("call (415) 555-2671 today", "call [PHONE] today", {"phone": 1}),
        ("my number 415.555.2671", "my number [PHONE]", {"phone": 1}),
        ("ring +44 20 7946 0958 please", "ring [PHONE] please", {"phone": 1}),
        ("card 4111 1111 1111 1111 exp", "card [CARD] exp", {"card": 1}),
        ("pay 4012-8888-8888-1881", "pay [CARD]", {"card": 1}),
        ("amex 378282246310005", "amex [CARD]", {"card": 1}),
        ("iban DE89 3704 0044 0532 0130 00 thanks", "iban [IBAN] thanks", {"iban": 1}),
        ("GB82WEST12345698765432", "[IBAN]", {"iban": 1}),
        ("de89370400440532013000 and more", "[IBAN] and more", {"iban": 1}),
        ("ship to 12 main st apt 4b asap", "ship to [ADDRESS] asap", {"address": 1}),
        ("123 Elm Street, Springfield, IL 62704", "[ADDRESS]", {"address": 1}),
        ("1600 Pennsylvania Avenue NW", "[ADDRESS]", {"address": 1}),
        ("deliver 42 5th ave", "deliver [ADDRESS]", {"address": 1}),
        ("PO Box 1234", "[ADDRESS]", {"address": 1}),
        (
            "jo@example.com, 415-555-2671 and jo2@example.com",
            "[EMAIL], [PHONE] and [EMAIL]",
            {"email": 2, "phone": 1},
        ),
    ],
)
def test_each_kind_is_replaced_and_counted(text: str, expected: str, counts: dict) -> None:
    result = scrub_text(text)
    assert result.text == expected
    assert result.counts == counts
    assert result.total == sum(counts.values())


@pytest.mark.parametrize(
    "text",
    [
        "3-seat sofa 84 inch",
        "60x120 rug",
        "72 x 30 x 29.5 in dresser",
        'dresser 48"W x 18"D x 34"H',
        "cabinet 30 in. x 24 in. x 34.5 in.",
        "model KD-55X85J 2021",
        "sku 4155552671 desk",  # phone-shaped product code after a label
        "product code 1234-5678-9012-3456",  # 16 digits, Luhn fails
        "1234567812345678 lamp",  # 16 digits, Luhn fails
        "1 way street sign",
        "5 drawer chest",
        "3 piece court set",
        "2 tier shelf drive",
        "1200 thread count 4 pc set",
        "item 20240115 lamp",
        "order 800-123-4567",  # not a valid US number (exchange 123)
        # an IBAN with a wrong check (...01 would pass as an 18-digit card: its digits happen
        # to satisfy Luhn, and a mistyped account number is scrubbed all the same)
        "DE89 3704 0044 0532 0130 02",
        "velvet sofa @ half price",
        "",
    ],
)
def test_product_text_is_left_alone(text: str) -> None:
    result = scrub_text(text)
    assert result.text == text
    assert result.counts == {}


def test_luhn_decides_between_card_and_product_code() -> None:
    body = "453201511283036"  # 15 digits; the 16th is the Luhn check digit
    check = luhn.calc_check_digit(body)
    wrong = str((int(check) + 1) % 10)
    assert scrub_text(f"pay {body}{check}").counts == {"card": 1}
    assert scrub_text(f"pay {body}{wrong}").counts == {}


@settings(max_examples=60, deadline=None)
@given(
    body=st.text(alphabet="0123456789", min_size=15, max_size=15).map(lambda s: "4" + s[1:]),
    words=st.sampled_from(["oak desk", "3-seat sofa 84 inch", "60x120 rug"]),
)
def test_every_luhn_valid_card_in_product_text_is_found(body: str, words: str) -> None:
    card = body + luhn.calc_check_digit(body)
    result = scrub_text(f"{words} {card} {words}")
    assert result.text == f"{words} [CARD] {words}"
    assert result.counts == {"card": 1}


def test_overlaps_go_to_the_earlier_kind() -> None:
    # the e-mail's local part is phone-shaped; it counts once, as an e-mail
    result = scrub_text("write 4155552671@example.com")
    assert result.text == "write [EMAIL]"
    assert result.counts == {"email": 1}


def test_kinds_can_be_chosen() -> None:
    only_email = PiiScrubber(kinds=("email",))
    result = only_email.scrub("jo@example.com 415-555-2671")
    assert result.text == "[EMAIL] 415-555-2671"
    assert only_email.kinds == ("email",)
    assert PiiScrubber().kinds == PII_KINDS


def test_phone_region_reads_national_numbers() -> None:
    british = PiiScrubber(phone_region="GB")
    assert british.scrub("ring 020 7946 0958").counts == {"phone": 1}
    assert PiiScrubber(phone_region="US").scrub("ring 020 7946 0958").counts == {}


def test_bad_settings_are_named() -> None:
    with pytest.raises(ConfigError, match=r"unknown \['passport'\]"):
        PiiScrubber(kinds=("email", "passport"))
    with pytest.raises(ConfigError, match="phone_region"):
        PiiScrubber(phone_region="XX")


def test_scrub_texts_sums_counts_over_repeats() -> None:
    texts = ["jo@example.com", "oak desk", "jo@example.com", "call 415-555-2671"]
    scrubbed, counts = PiiScrubber().scrub_texts(texts)
    assert scrubbed == ["[EMAIL]", "oak desk", "[EMAIL]", "call [PHONE]"]
    assert counts == {"email": 2, "phone": 1}
