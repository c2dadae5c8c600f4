"""Text as people meant it: what the pages show is what was typed, and one reference has one
spelling.

Invisible and direction-changing characters (Unicode's format characters: zero-width spaces
and joiners, right-to-left overrides and isolates, the byte-order mark, soft hyphens) make a
name, a rationale or a comment read differently from what it says, and let the same reference
be booked twice. Free text that contains them is refused with the characters named; an external
reference loses them, with its whitespace, before it is compared.
"""

import re
import unicodedata

from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

# A transaction hash written as 64 hexadecimal digits, with or without the 0x prefix.
_HEX_HASH = re.compile(r"(?:0[xX])?([0-9a-fA-F]{64})")
# Chains whose transaction hashes are written 0x-prefixed (EVM) or bare (Bitcoin), lower case.
_PREFIXED_HASH_CHAINS = {"bnb smart chain", "ethereum"}
_BARE_HASH_CHAINS = {"bitcoin"}


def _is_hidden(character: str) -> bool:
    category = unicodedata.category(character)
    return category == "Cf" or (category == "Cc" and character not in "\t\n\r")


def hidden_characters(value: str) -> list[str]:
    """The invisible or control characters in ``value``, as ``U+XXXX``, each once."""
    return sorted({f"U+{ord(c):04X}" for c in value if _is_hidden(c)})


def reject_hidden_characters(value: str) -> None:
    """Validator for free text shown to people: refuses invisible and direction-changing
    characters, naming them, so what a page shows is exactly what was typed."""
    found = hidden_characters(value or "")
    if found:
        raise ValidationError(
            _(
                "This text contains invisible or direction-changing characters (%(found)s). "
                "Retype it without them."
            ),
            code="hidden_characters",
            params={"found": ", ".join(found)},
        )


def external_ref_normalise(value: str, *, chain: str = "") -> str:
    """The one spelling of a fill's external reference (an exchange order id or a transaction
    hash): no whitespace or invisible characters anywhere; a 64-digit hex hash in lower case,
    0x-prefixed on EVM chains (BNB Smart Chain, Ethereum), bare on Bitcoin, with its prefix as
    given elsewhere. Other references keep their case (Solana signatures are case-sensitive)."""
    compact = "".join(c for c in value if not c.isspace() and not _is_hidden(c))
    match = _HEX_HASH.fullmatch(compact)
    if match is None:
        return compact
    digits = match.group(1).lower()
    chain = chain.strip().lower()
    if chain in _PREFIXED_HASH_CHAINS:
        return "0x" + digits
    if chain in _BARE_HASH_CHAINS:
        return digits
    return ("0x" if len(compact) == 66 else "") + digits


def refuse_hidden_characters(**texts: str) -> None:
    """For services: one ``ValidationError`` naming every field of ``texts`` whose text has
    invisible or direction-changing characters (see ``reject_hidden_characters``)."""
    errors = {}
    for field, value in texts.items():
        try:
            reject_hidden_characters(value)
        except ValidationError as exc:
            errors[field] = exc.messages
    if errors:
        raise ValidationError(errors)
