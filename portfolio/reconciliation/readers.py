"""Balance readers: the native coin balance of a public address, read on its chain.

EVM chains (BNB Smart Chain, Ethereum) through JSON-RPC with web3.py; Bitcoin through an
Esplora-compatible HTTP API with httpx. Each chain is read only when its URL is configured
(``ALEM_RECONCILIATION_RPC_URLS``, ``ALEM_ESPLORA_URL``); ``reader_for`` answers None otherwise,
and the run reports the account as skipped. Readers only talk to the node and convert units,
exactly (wei / 10**18, satoshis / 10**8, as ``Decimal``); every way a reading can fail ends in
``ReadError`` carrying the reason, which the run records: a failed reading never opens a break.

Which balance:

- EVM: ``eth_getBalance`` at the block number read just before, so the reading names the block
  it is true at.
- Bitcoin: the confirmed balance, ``chain_stats.funded_txo_sum - chain_stats.spent_txo_sum``.
  The mempool is left out: an unconfirmed transaction can still be replaced or dropped, and the
  ledger books a transfer once it is final. The chain's tip height, read just before, is kept
  as the reading's block (a block mined between the two requests may already be counted).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import httpx
from django.conf import settings

from portfolio.models import same_chain

# The native coin of each chain Alem reads: the asset whose ``chain`` is the account's chain and
# whose symbol is this.
NATIVE_COINS = {"BNB Smart Chain": "BNB", "Ethereum": "ETH", "Bitcoin": "BTC"}
# The EVM chains read, each with the variable naming its node (ALEM_RECONCILIATION_RPC_URLS).
EVM_CHAINS = {"BNB Smart Chain": "ALEM_BSC_RPC_URL", "Ethereum": "ALEM_ETHEREUM_RPC_URL"}
BITCOIN = "Bitcoin"
WEI = Decimal(10) ** 18
SATOSHI = Decimal(10) ** 8
USER_AGENT = "Alem/1.0 (state crypto reserve fund; reconciliation)"


class ReadError(Exception):
    """The node or API could not be reached or gave no usable answer; the message says why."""


@dataclass(frozen=True)
class BalanceReading:
    quantity: Decimal
    block_number: int | None


def native_coin(chain: str) -> str:
    """The symbol of ``chain``'s native coin, or "" for a chain Alem cannot read."""
    return next((symbol for name, symbol in NATIVE_COINS.items() if same_chain(name, chain)), "")


class EvmReader:
    """Native coin balances through one ``Web3`` connection."""

    def __init__(self, web3):
        self.web3 = web3

    def close(self) -> None:
        """Nothing to release: web3's HTTP provider keeps no connection of its own."""

    def native_balance(self, address: str) -> BalanceReading:
        from web3 import Web3

        try:
            checksummed = Web3.to_checksum_address(address)
        except ValueError as error:
            raise ReadError(f"not an EVM address: {address!r}") from error
        try:
            block = self.web3.eth.block_number
            wei = self.web3.eth.get_balance(checksummed, block_identifier=block)
        except Exception as error:  # the node's or the transport's, all recorded alike
            raise ReadError(f"{type(error).__name__}: {error}"[:300]) from error
        return BalanceReading(Decimal(int(wei)) / WEI, int(block))


class EsploraReader:
    """Confirmed bitcoin balances from an Esplora-compatible API at ``base_url``."""

    def __init__(self, base_url: str, *, http: httpx.Client | None = None):
        self.base_url = base_url.rstrip("/")
        self.http = http or httpx.Client(
            timeout=httpx.Timeout(settings.ALEM_RECONCILIATION_TIMEOUT_SECONDS),
            headers={"User-Agent": USER_AGENT},
        )

    def native_balance(self, address: str) -> BalanceReading:
        height = self._get("/blocks/tip/height")
        try:
            tip = int(height.text.strip())
        except ValueError as error:
            raise ReadError(f"tip height is not a number: {height.text[:80]!r}") from error
        answer = self._get(f"/address/{address}")
        try:
            stats = answer.json()["chain_stats"]
            funded, spent = stats["funded_txo_sum"], stats["spent_txo_sum"]
        except (ValueError, KeyError, TypeError) as error:
            raise ReadError(f"malformed address answer: {answer.text[:120]!r}") from error
        if not (isinstance(funded, int) and isinstance(spent, int)) or funded < spent:
            raise ReadError(f"malformed address answer: {answer.text[:120]!r}")
        return BalanceReading(Decimal(funded - spent) / SATOSHI, tip)

    def close(self) -> None:
        self.http.close()

    def _get(self, path: str) -> httpx.Response:
        try:
            response = self.http.get(self.base_url + path)
        except httpx.TimeoutException as error:
            raise ReadError(f"no answer within {self.http.timeout.read:g} s") from error
        except httpx.TransportError as error:
            raise ReadError(f"{type(error).__name__}: {error}"[:300]) from error
        if response.status_code != 200:
            raise ReadError(f"HTTP {response.status_code}: {response.text[:120]!r}")
        return response


def evm_connect(rpc_url: str):
    """A ``Web3`` connection to the node at ``rpc_url`` (HTTP JSON-RPC)."""
    from web3 import HTTPProvider, Web3

    timeout = settings.ALEM_RECONCILIATION_TIMEOUT_SECONDS
    return Web3(HTTPProvider(rpc_url, request_kwargs={"timeout": timeout}))


def reader_for(chain: str):
    """The configured reader of ``chain``, or None when its URL is not set (or Alem has no
    reader for it)."""
    for name in EVM_CHAINS:
        if same_chain(name, chain):
            url = settings.ALEM_RECONCILIATION_RPC_URLS.get(name, "")
            return EvmReader(evm_connect(url)) if url else None
    if same_chain(BITCOIN, chain) and settings.ALEM_ESPLORA_URL:
        return EsploraReader(settings.ALEM_ESPLORA_URL)
    return None


def unread_reason(chain: str) -> str:
    """Why ``chain`` is not read, in the words the run records."""
    for name, variable in EVM_CHAINS.items():
        if same_chain(name, chain):
            return f"{variable} is not set"
    if same_chain(BITCOIN, chain):
        return "ALEM_ESPLORA_URL is not set"
    return f"no reader for the chain {chain!r}"
