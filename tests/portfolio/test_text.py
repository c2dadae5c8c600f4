"""Text as typed: hidden characters are named and refused; a reference has one spelling."""

import pytest
from django.core.exceptions import ValidationError

from portfolio.text import (
    external_ref_normalise,
    hidden_characters,
    refuse_hidden_characters,
    reject_hidden_characters,
)

HASH = "ab" * 32


@pytest.mark.parametrize(
    ("typed", "found"),
    [
        ("Buy\u202e 005 BNB", ["U+202E"]),  # right-to-left override
        ("Alem\u200b Fund", ["U+200B"]),  # zero-width space
        ("a\u2066b\u2069", ["U+2066", "U+2069"]),  # isolates
        ("\ufeffbudget", ["U+FEFF"]),  # byte-order mark
        ("so\u00adft", ["U+00AD"]),  # soft hyphen
        ("bell\x07", ["U+0007"]),  # control character
    ],
)
def test_hidden_characters_are_named_and_refused(typed, found):
    assert hidden_characters(typed) == found
    with pytest.raises(ValidationError) as refused:
        reject_hidden_characters(typed)
    assert all(code in refused.value.messages[0] for code in found)


@pytest.mark.parametrize(
    "typed",
    ["Қазақстан резерві", "Резервный фонд", "Line one\nline two\ttabbed", "BNB — 5%", ""],
)
def test_visible_text_in_every_language_passes(typed):
    assert hidden_characters(typed) == []
    reject_hidden_characters(typed)


def test_services_hear_every_field_with_hidden_characters_at_once():
    with pytest.raises(ValidationError) as refused:
        refuse_hidden_characters(rationale="ok", comment="no\u200d", reason="\u202eyes")

    assert set(refused.value.message_dict) == {"comment", "reason"}


@pytest.mark.parametrize(
    ("typed", "chain", "spelled"),
    [
        (f"0x{HASH.upper()}", "BNB Smart Chain", f"0x{HASH}"),
        (HASH, "Ethereum", f"0x{HASH}"),
        (f" 0X{HASH}\u200b ", "ethereum", f"0x{HASH}"),
        (f"0x{HASH}", "Bitcoin", HASH),
        (HASH.upper(), "Bitcoin", HASH),
        (f"0X{HASH.upper()}", "", f"0x{HASH}"),
        # Not a hex hash: only whitespace and invisible characters go; the case stays.
        (
            "5VERv8NMvzbJMEkV8xnrLkEaWRtSz9CosKDYjCJjBRnb\u200b",
            "Solana",
            "5VERv8NMvzbJMEkV8xnrLkEaWRtSz9CosKDYjCJjBRnb",
        ),
        ("ORDER 12 AB", "", "ORDER12AB"),
        ("\u200b \u2060", "", ""),
    ],
)
def test_an_external_reference_has_one_spelling_per_chain(typed, chain, spelled):
    assert external_ref_normalise(typed, chain=chain) == spelled
