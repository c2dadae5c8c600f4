"""Anchoring audit checkpoints on an EVM chain: BNB Smart Chain unless configured otherwise.

Off unless ``ALEM_ANCHOR_RPC_URL`` is set. Then each signed checkpoint of the audit chain is
also written on chain, as the data of a zero-value transaction from the anchoring account to
itself: ``anchor_payload`` (the ASCII marker ``ALEM-CHECKPOINT-V1``, the checkpoint's sequence
as 8 bytes big-endian, and its 32-byte digest). Anyone can then read the transaction on the
chain's explorer and compare its input data with a checkpoint on the public pages: once mined,
nobody, the fund's operator included, can take it back or date it later.

This module only talks to the chain (web3.py, JSON-RPC); which checkpoints to anchor, retries
and the record of each attempt are ``governance.checkpoints``'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

MARKER = b"ALEM-CHECKPOINT-V1"


def anchor_payload(sequence: int, digest: str) -> bytes:
    """The transaction data anchoring the checkpoint of the chain's head ``sequence`` with
    ``digest`` (64 hex digits)."""
    raw = bytes.fromhex(digest)
    if len(raw) != 32:
        raise ValueError("A checkpoint digest is 32 bytes (64 hex digits).")
    return MARKER + sequence.to_bytes(8, "big") + raw


class AnchorError(Exception):
    """The chain refused or could not be reached; the message says which and why."""


@dataclass(frozen=True)
class AnchorReading:
    """What the chain says now about one anchoring transaction.

    ``state`` is ``missing`` (the node does not know it: dropped, or never broadcast),
    ``pending`` (known, not mined, or fewer confirmations than required), ``confirmed``,
    ``reverted`` (mined but failed) or ``mismatch`` (mined, with other data: not our anchor).
    """

    state: str
    block_number: int | None = None
    confirmations: int = 0


class EvmAnchor:
    """Writes and reads anchoring transactions through one ``Web3`` connection, signing them
    with the anchoring account's key (which never leaves this process)."""

    def __init__(self, web3, private_key: str, *, chain_id: int | None, confirmations: int):
        from eth_account import Account

        self.web3 = web3
        self.account = Account.from_key(private_key)
        self.expected_chain_id = chain_id
        self.confirmations = confirmations

    @property
    def address(self) -> str:
        return self.account.address

    def chain_id(self) -> int:
        """The node's chain id, refused when it is not the one configured (a testnet URL in
        production would anchor where nobody looks)."""
        found = self._call(lambda: self.web3.eth.chain_id)
        if self.expected_chain_id is not None and found != self.expected_chain_id:
            raise AnchorError(
                f"The node at ALEM_ANCHOR_RPC_URL serves chain {found}, not the configured "
                f"ALEM_ANCHOR_CHAIN_ID {self.expected_chain_id}."
            )
        return found

    def send(self, payload: bytes) -> str:
        """Sign and broadcast a zero-value transaction to the account itself carrying
        ``payload``; returns its hash (0x and 64 hex digits). Raises ``AnchorError`` when the
        node refuses it (no funds for gas, bad nonce) or cannot be reached."""
        eth = self.web3.eth
        chain_id = self.chain_id()
        transaction = {
            "from": self.address,
            "to": self.address,
            "value": 0,
            "data": payload,
            "chainId": chain_id,
            "nonce": self._call(lambda: eth.get_transaction_count(self.address, "pending")),
            # Legacy pricing: BNB Smart Chain prices gas this way, and every EVM node accepts it.
            "gasPrice": self._call(lambda: eth.gas_price),
        }
        transaction["gas"] = self._call(lambda: eth.estimate_gas(transaction))
        signed = self.account.sign_transaction(transaction)
        sent = self._call(lambda: eth.send_raw_transaction(signed.raw_transaction))
        return "0x" + bytes(sent).hex()

    def read(self, tx_hash: str, payload: bytes) -> AnchorReading:
        """Read the transaction back and say whether it carries ``payload`` and is mined deep
        enough (``ALEM_ANCHOR_CONFIRMATIONS``)."""
        from web3.exceptions import TransactionNotFound

        eth = self.web3.eth
        try:
            transaction = self._call(lambda: eth.get_transaction(tx_hash))
        except TransactionNotFound:
            return AnchorReading("missing")
        if bytes(transaction["input"]) != payload or transaction["from"] != self.address:
            return AnchorReading("mismatch", transaction.get("blockNumber"))
        block_number = transaction.get("blockNumber")
        if block_number is None:
            return AnchorReading("pending")
        receipt = self._call(lambda: eth.get_transaction_receipt(tx_hash))
        if receipt["status"] != 1:
            return AnchorReading("reverted", block_number)
        confirmations = self._call(lambda: eth.block_number) - block_number + 1
        state = "confirmed" if confirmations >= self.confirmations else "pending"
        return AnchorReading(state, block_number, confirmations)

    @staticmethod
    def _call(read):
        """Run one request to the node; whatever it fails with (its refusal, a timeout, the
        in-process EVM's validation) becomes an ``AnchorError`` carrying the reason."""
        from web3.exceptions import TransactionNotFound

        try:
            return read()
        except TransactionNotFound:
            raise
        except Exception as error:  # the node's or the transport's, all reported alike
            raise AnchorError(f"{type(error).__name__}: {error}"[:300]) from error


def connect(rpc_url: str):
    """A ``Web3`` connection to the node at ``rpc_url`` (HTTP JSON-RPC)."""
    from web3 import HTTPProvider, Web3

    return Web3(HTTPProvider(rpc_url, request_kwargs={"timeout": 20}))


def anchor_configured() -> bool:
    return bool(settings.ALEM_ANCHOR_RPC_URL)


def anchor_backend() -> EvmAnchor | None:
    """The configured anchor, or None when anchoring is off. A missing or unreadable account
    key while the RPC URL is set is a configuration error, never a silent "off"."""
    if not anchor_configured():
        return None
    return EvmAnchor(
        connect(settings.ALEM_ANCHOR_RPC_URL),
        _account_key(),
        chain_id=settings.ALEM_ANCHOR_CHAIN_ID,
        confirmations=settings.ALEM_ANCHOR_CONFIRMATIONS,
    )


def _account_key() -> str:
    key = settings.ALEM_ANCHOR_ACCOUNT_KEY
    if not key and settings.ALEM_ANCHOR_ACCOUNT_KEY_FILE:
        try:
            key = Path(settings.ALEM_ANCHOR_ACCOUNT_KEY_FILE).read_text().strip()
        except OSError as error:
            raise ImproperlyConfigured(
                f"ALEM_ANCHOR_ACCOUNT_KEY_FILE cannot be read: {error}"
            ) from error
    if not key:
        raise ImproperlyConfigured(
            "ALEM_ANCHOR_RPC_URL is set but the anchoring account's key is not: set "
            "ALEM_ANCHOR_ACCOUNT_KEY_FILE (a file holding the hex private key) or unset the URL."
        )
    return key


def explorer_url(tx_hash: str) -> str:
    """The anchoring transaction on the chain's explorer (``ALEM_ANCHOR_EXPLORER_TX_URL``)."""
    return settings.ALEM_ANCHOR_EXPLORER_TX_URL.format(tx_hash=tx_hash)
