"""A custody account's address against its chain: shape, checksum and one spelling (pure)."""

import pytest

from portfolio.addresses import address_normalise, address_refusal, family

# BIP 173 and BIP 350 examples, the genesis address, a P2SH address, EIP-55's example.
VALID = [
    ("Bitcoin", "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"),
    ("Bitcoin", "BC1QW508D6QEJXTDG4Y5R3ZARVARY0C5XW7KV8F3T4"),
    ("Bitcoin", "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqzk5jj0"),
    ("Bitcoin", "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa"),
    ("Bitcoin", "3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy"),
    ("Ethereum", "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"),
    ("BNB Smart Chain", "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed"),
    ("ethereum", "0x5AAEB6053F3E94C9B9A09F33669435E7EF1BEAED"),
    ("Solana", "So11111111111111111111111111111111111111112"),
]


@pytest.mark.parametrize(("chain", "address"), VALID)
def test_a_valid_address_of_its_chain_is_accepted(chain, address):
    assert address_refusal(chain, address) is None


@pytest.mark.parametrize(
    ("chain", "address"),
    [
        # a witness version 1 address with the bech32 (not bech32m) checksum: BIP 350's example
        ("Bitcoin", "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqh2y7hd"),
        ("Bitcoin", "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t5"),
        ("Bitcoin", "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNb"),
        ("Bitcoin", "tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx"),  # testnet
        ("Bitcoin", "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"),
        ("Ethereum", "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD"),
        ("Ethereum", "5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"),
        ("Ethereum", "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAe"),
        ("Solana", "So1111 1111"),
    ],
)
def test_a_mistyped_or_foreign_address_is_refused(chain, address):
    assert address_refusal(chain, address)


def test_chains_are_recognised_whatever_their_case_and_spacing():
    assert [family(" Ethereum "), family("BSC"), family("bitcoin"), family("Solana")] == [
        "evm",
        "evm",
        "bitcoin",
        "",
    ]


def test_one_address_has_one_spelling_where_case_carries_no_meaning():
    assert address_normalise("Ethereum", " 0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed ") == (
        "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed"
    )
    assert address_normalise("Bitcoin", "BC1QW508D6QEJXTDG4Y5R3ZARVARY0C5XW7KV8F3T4") == (
        "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"
    )
    assert address_normalise("Bitcoin", "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa") == (
        "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa"
    )
    assert address_normalise("Solana", "So11Abc") == "So11Abc"
