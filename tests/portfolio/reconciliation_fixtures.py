"""Helpers of the reconciliation tests: custody accounts made directly (the four-eyes services
that add them are another issue's), an in-process EVM chain, and a fake Esplora server.

The fake Esplora is a real HTTP server on 127.0.0.1, in a thread, answering the two requests
Alem makes, as Blockstream's Esplora documents them:

- ``GET /blocks/tip/height``: the tip height as plain text;
- ``GET /address/{address}``: ``{"address", "chain_stats": {...}, "mempool_stats": {...}}`` with
  ``funded_txo_sum`` and ``spent_txo_sum`` in satoshis (and counts);

and ``fail_with`` (an HTTP status) answers every request with it, an HTML body, as a proxy in
front of a node that is down would.
"""

import json
import threading
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from django.utils import timezone

from portfolio.models import CustodyAccount, LedgerEntry
from portfolio.reconciliation import readers
from portfolio.services import ledger_entry_book


def custody_account(fund, *, name: str, chain: str, address: str = "", reference: str = ""):
    now = timezone.now()
    kind = CustodyAccount.Kind.COLD_MULTISIG if address else CustodyAccount.Kind.EXCHANGE
    return CustodyAccount.objects.create(
        fund=fund,
        name=name,
        kind=kind,
        chain=chain,
        address=address,
        account_reference=reference,
        usable_from=now,
        created_at=now,
    )


def book_coins(builder, account, asset, quantity: str, *, booked_at=None) -> LedgerEntry:
    """A contribution in kind of ``quantity`` coins into ``account`` (USD 1 per coin of cost)."""
    return ledger_entry_book(
        fund=builder.fund,
        kind=LedgerEntry.Kind.CONTRIBUTION,
        asset=asset,
        account=account,
        quantity=Decimal(quantity),
        value_usd=Decimal(quantity),
        funding_source=builder.funding_source,
        booked_at=booked_at,
    )


def evm_test_chain(settings, monkeypatch):
    """An in-process EVM (eth-tester, py-evm) serving as the BNB Smart Chain node; Ethereum is
    not configured."""
    from web3 import EthereumTesterProvider, Web3

    web3 = Web3(EthereumTesterProvider())
    settings.ALEM_RECONCILIATION_RPC_URLS = {
        "BNB Smart Chain": "http://node.invalid:8545",  # never dialled: evm_connect is ours
        "Ethereum": "",
    }
    monkeypatch.setattr(readers, "evm_connect", lambda url: web3)
    return web3


def send_on_chain(web3, to: str, wei: int) -> None:
    """A real transfer on the test chain from its first funded account, mined."""
    sent = web3.eth.send_transaction({"from": web3.eth.accounts[0], "to": to, "value": wei})
    web3.eth.wait_for_transaction_receipt(sent)


class FakeEsplora:
    def __init__(self):
        self.tip = 870_000
        # address -> (chain funded, chain spent, mempool funded, mempool spent), satoshis
        self.addresses: dict[str, tuple[int, int, int, int]] = {}
        self.fail_with: int | None = None
        self.requests: list[str] = []
        self._server = None

    def __enter__(self):
        handler = type("Handler", (_Handler,), {"esplora": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        ).start()
        return self

    def __exit__(self, *exc_info):
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/api"


class _Handler(BaseHTTPRequestHandler):
    esplora: FakeEsplora

    def log_message(self, *args):
        pass

    def _answer(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        esplora = self.esplora
        esplora.requests.append(self.path)
        if esplora.fail_with:
            return self._answer(esplora.fail_with, b"<html>Bad gateway</html>", "text/html")
        if self.path == "/api/blocks/tip/height":
            return self._answer(200, str(esplora.tip).encode(), "text/plain")
        prefix = "/api/address/"
        if self.path.startswith(prefix):
            address = self.path[len(prefix) :]
            if address not in esplora.addresses:
                return self._answer(400, b"Invalid Bitcoin address", "text/plain")
            funded, spent, pool_funded, pool_spent = esplora.addresses[address]
            body = {
                "address": address,
                "chain_stats": {
                    "funded_txo_count": 1,
                    "funded_txo_sum": funded,
                    "spent_txo_count": 0,
                    "spent_txo_sum": spent,
                    "tx_count": 1,
                },
                "mempool_stats": {
                    "funded_txo_count": 0,
                    "funded_txo_sum": pool_funded,
                    "spent_txo_count": 0,
                    "spent_txo_sum": pool_spent,
                    "tx_count": 0,
                },
            }
            return self._answer(200, json.dumps(body).encode(), "application/json")
        return self._answer(404, b"Not Found", "text/plain")
