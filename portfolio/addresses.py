"""Whether a custody account's address can be an address of its chain, and its one spelling.

A payout address typed wrong, or swapped for an attacker's, is the classic way coins are lost;
two administrators read it before it is used, and this catches what a reader misses: the wrong
shape for the chain, a mistyped character (Bitcoin addresses carry a checksum; a mixed-case EVM
address carries EIP-55's), an address of one chain entered for another. Pure functions: no
database. Chains are named as the assets name them (``Asset.chain``); a chain of neither family
below gets only the common checks.
"""

import hashlib
import re

from eth_utils import is_checksum_address

# Chain names (case-folded) by address family.
EVM_CHAINS = frozenset(
    {
        "ethereum",
        "bnb smart chain",
        "bsc",
        "polygon",
        "arbitrum",
        "arbitrum one",
        "optimism",
        "base",
        "avalanche c-chain",
    }
)
BITCOIN_CHAINS = frozenset({"bitcoin"})

_EVM = re.compile(r"0x[0-9a-fA-F]{40}")
_BASE58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
# Mainnet pay-to-public-key-hash (version 0x00, "1…") and pay-to-script-hash (0x05, "3…").
_BASE58 = re.compile(r"[13][1-9A-HJ-NP-Za-km-z]{25,34}")
_BECH32_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_BECH32 = re.compile(r"bc1[02-9ac-hj-np-z]{8,87}")
_BECH32_CONST, _BECH32M_CONST = 1, 0x2BC830A3


def family(chain: str) -> str:
    """``"evm"``, ``"bitcoin"`` or ``""`` (a chain whose addresses are not checked here)."""
    name = chain.strip().casefold()
    if name in EVM_CHAINS:
        return "evm"
    if name in BITCOIN_CHAINS:
        return "bitcoin"
    return ""


def address_normalise(chain: str, address: str) -> str:
    """The one spelling of ``address`` on ``chain``: without surrounding whitespace; lower case
    on EVM chains and for Bitcoin's bech32 (case carries no meaning there), as given otherwise
    (base58 is case-sensitive)."""
    address = address.strip()
    kind = family(chain)
    if kind == "evm" or (kind == "bitcoin" and address.lower().startswith("bc1")):
        return address.lower()
    return address


def address_refusal(chain: str, address: str) -> str | None:
    """Why ``address`` cannot be an address on ``chain``, in a sentence, or ``None``."""
    if not address:
        return None
    if any(character.isspace() for character in address):
        return "An address has no spaces in it."
    kind = family(chain)
    if kind == "evm":
        if not _EVM.fullmatch(address):
            return f"A {chain} address is 0x followed by 40 hexadecimal digits."
        mixed = address[2:] != address[2:].lower() and address[2:] != address[2:].upper()
        if mixed and not is_checksum_address(address):
            return (
                f"This {chain} address's capital letters do not match its EIP-55 checksum: a "
                "character is mistyped."
            )
    elif kind == "bitcoin":
        if address.lower().startswith("bc1"):
            if address not in (address.lower(), address.upper()):
                return "A bech32 Bitcoin address is all lower case or all upper case."
            if not _BECH32.fullmatch(address.lower()):
                return "A bech32 Bitcoin address is bc1 followed by bech32 characters."
            if not _bech32_valid(address.lower()):
                return "This bech32 Bitcoin address fails its checksum: a character is mistyped."
        elif _BASE58.fullmatch(address):
            if not _base58check_valid(address):
                return "This Bitcoin address fails its checksum: a character is mistyped."
        else:
            return (
                "A Bitcoin address starts with bc1 (bech32), or with 1 or 3 (base58) followed "
                "by 25 to 34 base58 characters."
            )
    return None


def _bech32_polymod(values: list[int]) -> int:
    generator = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
    checksum = 1
    for value in values:
        top = checksum >> 25
        checksum = (checksum & 0x1FFFFFF) << 5 ^ value
        for bit, constant in enumerate(generator):
            checksum ^= constant if (top >> bit) & 1 else 0
    return checksum


def _bech32_valid(address: str) -> bool:
    """BIP 173 (witness version 0, bech32) and BIP 350 (version 1 and up, bech32m)."""
    hrp, data = address[:2], [_BECH32_CHARSET.index(c) for c in address[3:]]
    expanded = [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]
    constant = _bech32_polymod(expanded + data)
    version = data[0]
    if version > 16:
        return False
    return constant == (_BECH32_CONST if version == 0 else _BECH32M_CONST)


def _base58check_valid(address: str) -> bool:
    number = 0
    for character in address:
        number = number * 58 + _BASE58_ALPHABET.index(character)
    leading_zeros = len(address) - len(address.lstrip("1"))
    raw = b"\0" * leading_zeros + number.to_bytes((number.bit_length() + 7) // 8, "big")
    if len(raw) != 25:
        return False
    payload, checksum = raw[:-4], raw[-4:]
    return hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4] == checksum
