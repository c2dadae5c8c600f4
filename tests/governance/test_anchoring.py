"""Anchoring checkpoints on an EVM chain, against an in-process EVM (eth-tester, py-evm)."""

import datetime as dt

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone
from eth_account import Account
from web3 import EthereumTesterProvider, Web3

from governance import anchoring, tasks
from governance.anchoring import AnchorError, EvmAnchor, anchor_payload
from governance.checkpoints import AnchorRun as CheckpointAnchorRun
from governance.checkpoints import checkpoint_anchors_run, checkpoint_sign
from governance.models import CheckpointAnchor

DIGEST = "ab" * 32


@pytest.fixture
def chain():
    """A fresh test chain and a funded anchoring account on it."""
    web3 = Web3(EthereumTesterProvider())
    account = Account.create()
    funding = web3.eth.send_transaction(
        {"from": web3.eth.accounts[0], "to": account.address, "value": 10**18}
    )
    web3.eth.wait_for_transaction_receipt(funding)
    return web3, account


def anchor_on(chain, *, confirmations=1, chain_id=None) -> EvmAnchor:
    web3, account = chain
    return EvmAnchor(web3, account.key.hex(), chain_id=chain_id, confirmations=confirmations)


def test_the_payload_is_the_marker_the_sequence_and_the_digest():
    payload = anchor_payload(258, DIGEST)

    assert payload == b"ALEM-CHECKPOINT-V1" + bytes([0, 0, 0, 0, 0, 0, 1, 2]) + b"\xab" * 32
    with pytest.raises(ValueError):
        anchor_payload(1, "ab" * 31)


def test_an_anchor_carries_the_checkpoints_digest_in_a_zero_value_self_transaction(chain):
    web3, account = chain
    anchor = anchor_on(chain)
    payload = anchor_payload(7, DIGEST)

    tx_hash = anchor.send(payload)

    sent = web3.eth.get_transaction(tx_hash)
    assert bytes(sent["input"]) == payload
    assert DIGEST in bytes(sent["input"]).hex()
    assert (sent["from"], sent["to"], sent["value"]) == (account.address, account.address, 0)
    reading = anchor.read(tx_hash, payload)
    assert reading.state == "confirmed"
    assert reading.block_number == sent["blockNumber"]


def test_an_anchor_is_pending_until_deep_enough(chain):
    web3, _account = chain
    anchor = anchor_on(chain, confirmations=3)
    payload = anchor_payload(1, DIGEST)
    tx_hash = anchor.send(payload)

    assert anchor.read(tx_hash, payload).state == "pending"
    web3.provider.ethereum_tester.mine_blocks(2)
    assert anchor.read(tx_hash, payload) == anchoring.AnchorReading(
        "confirmed", web3.eth.get_transaction(tx_hash)["blockNumber"], 3
    )


def test_a_transaction_with_other_data_is_not_our_anchor(chain):
    anchor = anchor_on(chain)
    tx_hash = anchor.send(anchor_payload(1, DIGEST))

    assert anchor.read(tx_hash, anchor_payload(1, "cd" * 32)).state == "mismatch"
    assert anchor.read(tx_hash, anchor_payload(2, DIGEST)).state == "mismatch"


def test_an_unknown_transaction_is_missing(chain):
    anchor = anchor_on(chain)

    assert anchor.read("0x" + "12" * 32, anchor_payload(1, DIGEST)).state == "missing"


def test_an_account_without_gas_money_is_refused_with_the_nodes_reason(chain):
    web3, _account = chain
    poor = EvmAnchor(web3, Account.create().key.hex(), chain_id=None, confirmations=1)

    with pytest.raises(AnchorError) as refused:
        poor.send(anchor_payload(1, DIGEST))
    assert "cannot afford txn gas" in str(refused.value)


def test_a_node_of_another_chain_is_refused(chain):
    web3, _account = chain
    anchor = anchor_on(chain, chain_id=56)

    with pytest.raises(AnchorError, match=r"serves chain \d+, not the configured"):
        anchor.send(anchor_payload(1, DIGEST))
    assert web3.eth.get_transaction_count(anchor.address) == 0


def test_anchoring_is_off_without_an_rpc_url_and_refuses_a_url_without_a_key(settings):
    settings.ALEM_ANCHOR_RPC_URL = ""
    assert anchoring.anchor_backend() is None

    settings.ALEM_ANCHOR_RPC_URL = "http://127.0.0.1:8545"
    settings.ALEM_ANCHOR_ACCOUNT_KEY = ""
    settings.ALEM_ANCHOR_ACCOUNT_KEY_FILE = ""
    with pytest.raises(ImproperlyConfigured, match="ALEM_ANCHOR_ACCOUNT_KEY_FILE"):
        anchoring.anchor_backend()


# ---------------------------------------------------------------------------------------------
# Anchoring the checkpoints: governance.checkpoints.checkpoint_anchors_run
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def anchored(settings, chain, monkeypatch):
    """Anchoring on, against the in-process EVM, with the funded account; confirmed at 1 block."""
    web3, account = chain
    settings.ALEM_ANCHOR_RPC_URL = "http://node.invalid:8545"  # never dialled: connect is ours
    settings.ALEM_ANCHOR_ACCOUNT_KEY = account.key.hex()
    settings.ALEM_ANCHOR_CHAIN_ID = web3.eth.chain_id
    settings.ALEM_ANCHOR_CONFIRMATIONS = 1
    monkeypatch.setattr(anchoring, "connect", lambda url: web3)
    return web3


def test_anchoring_is_off_by_default_and_then_does_nothing(alem, settings):
    settings.ALEM_ANCHOR_RPC_URL = ""
    checkpoint_sign()

    assert checkpoint_anchors_run() is None
    assert tasks.checkpoint_anchors_run() is None
    assert not CheckpointAnchor.objects.exists()


def test_a_checkpoints_digest_is_found_in_the_transactions_data(alem, anchored):
    checkpoint = checkpoint_sign()

    first = tasks.checkpoint_anchors_run()

    anchor = CheckpointAnchor.objects.get(checkpoint=checkpoint)
    assert first == {"sent": 1, "confirmed": 0, "failed": 0}
    assert anchor.state == CheckpointAnchor.State.SENT
    sent = anchored.eth.get_transaction(anchor.tx_hash)
    assert checkpoint.digest in bytes(sent["input"]).hex()
    assert bytes(sent["input"]) == anchor_payload(checkpoint.sequence, checkpoint.digest)
    assert anchor.chain_id == anchored.eth.chain_id

    assert checkpoint_anchors_run().confirmed == 1
    anchor.refresh_from_db()
    assert (anchor.state, anchor.block_number) == ("confirmed", sent["blockNumber"])
    assert checkpoint_anchors_run() == CheckpointAnchorRun()  # nothing left to do


def test_a_failure_is_kept_logged_backed_off_and_retried(alem, anchored, settings, caplog):
    poor = Account.create()
    settings.ALEM_ANCHOR_ACCOUNT_KEY = poor.key.hex()
    checkpoint = checkpoint_sign()
    now = timezone.now()

    assert checkpoint_anchors_run(now=now).failed == 1

    anchor = CheckpointAnchor.objects.get(checkpoint=checkpoint)
    assert (anchor.state, anchor.attempts, anchor.tx_hash) == ("pending", 1, "")
    assert "cannot afford txn gas" in anchor.last_error
    assert anchor.next_attempt_at == now + dt.timedelta(minutes=1)
    assert f"Anchoring checkpoint #{checkpoint.sequence} failed (attempt 1)" in caplog.text
    assert checkpoint_anchors_run(now=now).failed == 0  # not due yet: not tried again

    assert checkpoint_anchors_run(now=now + dt.timedelta(minutes=1)).failed == 1
    anchor.refresh_from_db()
    assert anchor.next_attempt_at == now + dt.timedelta(minutes=3)  # 1 + 2 minutes

    funding = anchored.eth.send_transaction(
        {"from": anchored.eth.accounts[0], "to": poor.address, "value": 10**18}
    )
    anchored.eth.wait_for_transaction_receipt(funding)
    assert checkpoint_anchors_run(now=now + dt.timedelta(minutes=3)).sent == 1
    anchor.refresh_from_db()
    assert (anchor.state, anchor.attempts, anchor.last_error) == ("sent", 3, "")


def test_a_transaction_the_node_lost_is_sent_again(alem, anchored):
    checkpoint = checkpoint_sign()
    checkpoint_anchors_run()
    anchor = CheckpointAnchor.objects.get(checkpoint=checkpoint)
    CheckpointAnchor.objects.filter(pk=anchor.pk).update(tx_hash="0x" + "12" * 32)
    later = timezone.now() + dt.timedelta(hours=2)

    assert checkpoint_anchors_run(now=later) == CheckpointAnchorRun(failed=1)
    anchor.refresh_from_db()
    assert (anchor.state, anchor.tx_hash) == ("pending", "")
    assert anchor.last_error == f"transaction 0x{'12' * 32} is missing"

    assert checkpoint_anchors_run(now=later).sent == 1
    anchor.refresh_from_db()
    assert anchor.state == "sent"
    assert bytes(anchored.eth.get_transaction(anchor.tx_hash)["input"]) == anchor_payload(
        checkpoint.sequence, checkpoint.digest
    )
