"""Custody accounts (rule 14): two fund administrators add or change one, it cools off before
any operation may use it, one administrator removes it at once; the mandate changes only when a
second administrator publishes a policy version carrying it.

This module builds its own small fund rather than sharing ``alem``, so its PostgreSQL race runs
on committed rows (``transaction=True``) beside the other tests.
"""

import datetime as dt
from decimal import Decimal
from functools import partial

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from governance import services
from governance.audit import audit_verify
from governance.exceptions import (
    FourEyesRequired,
    InvalidTransition,
    NotPermitted,
    SecondFactorInvalid,
)
from governance.models import AuditEvent, CustodyAccountChange
from governance.policies import StageSpec
from portfolio.mandate import Mandate
from portfolio.models import CustodyAccount, Fund, FundRole
from tests.factories import FundFactory, UserFactory, otp_code
from tests.threads import run_together

R = FundRole
Kind = CustodyAccount.Kind
State = CustodyAccountChange.State

# Valid addresses: the Bitcoin genesis address (base58), BIP 173's bech32 example, EIP-55's.
BTC_BASE58 = "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa"
BTC_BECH32 = "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"
ETH = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
ETH_OTHER = "0x" + "12" * 20


@pytest.fixture
def people(db, settings):
    """A fund, its two fund administrators, and someone holding another role there."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    fund = FundFactory(name="Reserve", slug="reserve")
    admins = [UserFactory(username=name) for name in ("fundadmin", "fundadmin2", "fundadmin3")]
    for admin in admins:
        services.role_grant(user=admin, fund=fund, role=R.MANAGE_POLICY)
    manager = UserFactory(username="manager")
    services.role_grant(user=manager, fund=fund, role=R.PROPOSE)
    return fund, admins, manager


def request_add(fund, actor, **terms) -> CustodyAccountChange:
    values = {
        "action": "add",
        "name": "Cold vault",
        "kind": Kind.COLD_MULTISIG,
        "chain": "Bitcoin",
        "address": BTC_BECH32,
        "reason": "Cold storage for the BTC reserve",
    }
    return services.custody_change_request(actor=actor, fund=fund, **(values | terms))


def confirm(change, actor) -> CustodyAccountChange:
    return services.custody_change_confirm(
        actor=actor, change_id=change.pk, otp_token=otp_code(actor)
    )


def added(fund, requester, confirmer, **terms) -> CustodyAccount:
    change = confirm(request_add(fund, requester, **terms), confirmer)
    return CustodyAccount.objects.get(pk=change.account_id)


def written() -> tuple[int, int, int]:
    """What a refusal must leave as it was: accounts, changes, audit events."""
    return (
        CustodyAccount.objects.count(),
        CustodyAccountChange.objects.count(),
        AuditEvent.objects.count(),
    )


def last_event() -> AuditEvent:
    return AuditEvent.objects.order_by("-sequence").first()


# ---------------------------------------------------------------------------------------------
# Adding: four eyes, then the cooling-off
# ---------------------------------------------------------------------------------------------


def test_an_added_account_exists_only_after_a_second_administrator_confirms(people):
    fund, (alice, bob, _), _ = people

    change = request_add(fund, alice)

    assert (change.state, change.account, CustodyAccount.objects.count()) == (
        State.PENDING,
        None,
        0,
    )
    event = last_event()
    assert (event.action, event.actor, event.fund) == ("custody.change_requested", alice, fund)
    assert event.payload["terms"]["address"] == BTC_BECH32

    change = confirm(change, bob)

    account = CustodyAccount.objects.get()
    assert (account.fund, account.name, account.kind, account.chain, account.address) == (
        fund,
        "Cold vault",
        Kind.COLD_MULTISIG,
        "Bitcoin",
        BTC_BECH32,
    )
    assert (account.active, account.removed_at) == (True, None)
    assert (change.state, change.account, change.decided_by) == (State.APPLIED, account, bob)
    event = last_event()
    assert (event.action, event.actor) == ("custody.change_confirmed", bob)
    assert event.payload["usable_from"] == account.usable_from.isoformat()
    assert event.payload["terms"]["address"] == BTC_BECH32
    assert event.payload["device"] == change.confirmed_by_device != ""
    assert audit_verify().ok


def test_the_requester_cannot_confirm_their_own_request(people):
    fund, (alice, _, _), _ = people
    change = request_add(fund, alice)
    before = written()

    with pytest.raises(FourEyesRequired):
        confirm(change, alice)

    change.refresh_from_db()
    assert (change.state, change.decided_by) == (State.PENDING, None)
    assert written() == before


def written_behind_the_services(fund) -> CustodyAccount:
    """An account written straight to the table, for the database's own refusals."""
    return CustodyAccount.objects.create(
        fund=fund,
        name="Cold vault",
        kind=Kind.COLD_MULTISIG,
        chain="Bitcoin",
        address=BTC_BECH32,
        created_at=timezone.now(),
        usable_from=timezone.now(),
    )


def test_the_database_refuses_a_change_applied_by_its_requester(people):
    fund, (alice, _, _), _ = people
    change = request_add(fund, alice)
    account = written_behind_the_services(fund)

    with pytest.raises(IntegrityError, match="confirmer_is_not_requester"), transaction.atomic():
        CustodyAccountChange.objects.filter(pk=change.pk).update(
            state=State.APPLIED,
            account=account,
            decided_by=alice,
            decided_at=timezone.now(),
            confirmed_by_device="otp_totp.totpdevice/1",
        )


def test_the_database_refuses_a_change_applied_without_a_second_factor(people):
    fund, (alice, bob, _), _ = people
    change = request_add(fund, alice)
    account = written_behind_the_services(fund)

    with pytest.raises(IntegrityError, match="applied_with_a_second_factor"), transaction.atomic():
        CustodyAccountChange.objects.filter(pk=change.pk).update(
            state=State.APPLIED, account=account, decided_by=bob, decided_at=timezone.now()
        )


def test_a_confirmation_needs_the_confirmers_own_current_code(people):
    fund, (alice, bob, _), _ = people
    change = request_add(fund, alice)
    otp_code(bob)
    before = written()

    with pytest.raises(SecondFactorInvalid):
        services.custody_change_confirm(actor=bob, change_id=change.pk, otp_token="000000")
    with pytest.raises(SecondFactorInvalid):
        services.custody_change_confirm(actor=bob, change_id=change.pk, otp_token=otp_code(alice))

    assert written() == before
    assert CustodyAccountChange.objects.get(pk=change.pk).state == State.PENDING


def test_an_account_is_usable_exactly_from_the_end_of_the_cooling_off_and_not_a_second_before(
    people,
):
    fund, (alice, bob, _), _ = people
    Fund.objects.filter(pk=fund.pk).update(custody_cooling_off_hours=48)

    account = added(fund, alice, bob)

    change = account.changes.get()
    assert account.usable_from == change.decided_at + dt.timedelta(hours=48)
    assert account.created_at == change.decided_at
    assert not account.usable(account.usable_from - dt.timedelta(seconds=1))
    assert not account.usable(change.decided_at)
    assert account.usable(account.usable_from)


def test_a_fund_without_cooling_off_may_use_the_account_once_confirmed(people):
    fund, (alice, bob, _), _ = people
    Fund.objects.filter(pk=fund.pk).update(custody_cooling_off_hours=0)

    account = added(fund, alice, bob)

    assert account.usable_from == account.changes.get().decided_at
    assert account.usable(account.usable_from)


def test_a_second_confirmation_of_an_applied_change_is_refused(people):
    fund, (alice, bob, carol), _ = people
    change = confirm(request_add(fund, alice), bob)
    before = written()

    with pytest.raises(InvalidTransition):
        confirm(change, carol)

    assert written() == before


# ---------------------------------------------------------------------------------------------
# Changing: one pending change per account, and it cools off again
# ---------------------------------------------------------------------------------------------


def test_a_changed_account_cools_off_again(people):
    fund, (alice, bob, _), _ = people
    Fund.objects.filter(pk=fund.pk).update(custody_cooling_off_hours=0)
    account = added(fund, alice, bob, name="Hot wallet", kind=Kind.EXCHANGE)
    assert account.usable(timezone.now())
    Fund.objects.filter(pk=fund.pk).update(custody_cooling_off_hours=24)

    change = services.custody_change_request(
        actor=bob,
        fund=fund,
        action="change",
        account=account,
        name="Hot wallet",
        kind=Kind.EXCHANGE,
        chain="Ethereum",
        address=ETH,
        reason="The exchange moved our deposit address",
    )
    account.refresh_from_db()
    assert (account.chain, account.address) == ("Bitcoin", BTC_BECH32)  # nothing yet
    change = confirm(change, alice)

    account.refresh_from_db()
    assert (account.chain, account.address) == ("Ethereum", ETH.lower())
    assert account.usable_from == change.decided_at + dt.timedelta(hours=24)
    assert not account.usable(change.decided_at)
    assert not account.usable(account.usable_from - dt.timedelta(seconds=1))
    event = last_event()
    assert (event.action, event.actor) == ("custody.change_confirmed", alice)
    assert event.payload["changes"] == {
        "address": {"old": BTC_BECH32, "new": ETH.lower()},
        "chain": {"old": "Bitcoin", "new": "Ethereum"},
    }


def test_one_pending_change_per_account(people):
    fund, (alice, bob, carol), _ = people
    account = added(fund, alice, bob, kind=Kind.EXCHANGE, address="", account_reference="A-1")
    terms = {
        "action": "change",
        "account": account,
        "name": "Cold vault",
        "kind": Kind.EXCHANGE,
        "chain": "Bitcoin",
        "reason": "New sub-account",
    }
    services.custody_change_request(actor=alice, fund=fund, account_reference="A-2", **terms)
    before = written()

    with pytest.raises(InvalidTransition, match="already waiting"):
        services.custody_change_request(actor=carol, fund=fund, account_reference="A-3", **terms)

    assert written() == before


def test_the_database_holds_one_pending_change_per_account(people):
    fund, (alice, bob, _), _ = people
    account = added(fund, alice, bob)
    pending = {
        "fund": fund,
        "action": "change",
        "account": account,
        "name": "Cold vault 2",
        "kind": Kind.COLD_MULTISIG,
        "chain": "Bitcoin",
        "address": BTC_BECH32,
        "reason": "x",
        "requested_by": alice,
        "requested_at": timezone.now(),
    }
    CustodyAccountChange.objects.create(**pending)

    with pytest.raises(IntegrityError, match="one_pending_per_account"), transaction.atomic():
        CustodyAccountChange.objects.create(**pending)


def test_a_change_that_changes_nothing_is_refused(people):
    fund, (alice, bob, _), _ = people
    account = added(fund, alice, bob)
    before = written()

    with pytest.raises(InvalidTransition, match="already has these terms"):
        services.custody_change_request(
            actor=alice,
            fund=fund,
            action="change",
            account=account,
            name=account.name,
            kind=account.kind,
            chain=account.chain,
            address=account.address,
            reason="No reason",
        )

    assert written() == before


def test_another_funds_account_cannot_be_changed_from_this_fund(people):
    fund, (alice, bob, _), _ = people
    account = added(fund, alice, bob)
    other = FundFactory(name="Other", slug="other")
    services.role_grant(user=alice, fund=other, role=R.MANAGE_POLICY)
    before = written()

    with pytest.raises(ValidationError) as refused:
        services.custody_change_request(
            actor=alice,
            fund=other,
            action="change",
            account=account,
            name="Mine now",
            kind=account.kind,
            chain=account.chain,
            address=account.address,
            reason="Take it over",
        )

    assert "account" in refused.value.message_dict
    assert written() == before


# ---------------------------------------------------------------------------------------------
# Cancelling and removing
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("canceller", [0, 1], ids=["the requester", "another administrator"])
def test_a_pending_change_is_cancelled_by_any_fund_administrator(people, canceller):
    fund, admins, _ = people
    change = request_add(fund, admins[0])

    change = services.custody_change_cancel(actor=admins[canceller], change_id=change.pk)

    assert (change.state, change.decided_by) == (State.CANCELLED, admins[canceller])
    assert (last_event().action, last_event().actor) == (
        "custody.change_cancelled",
        admins[canceller],
    )
    with pytest.raises(InvalidTransition):
        confirm(change, admins[1])
    assert CustodyAccount.objects.count() == 0


def test_one_administrator_removes_an_account_at_once_and_its_pending_change_is_cancelled(
    people,
):
    fund, (alice, bob, _), _ = people
    account = added(fund, alice, bob)
    pending = services.custody_change_request(
        actor=alice,
        fund=fund,
        action="change",
        account=account,
        name="Renamed vault",
        kind=account.kind,
        chain=account.chain,
        address=account.address,
        reason="Rename",
    )

    services.custody_account_remove(actor=bob, account_id=account.pk, reason="Key compromised")

    account.refresh_from_db()
    pending.refresh_from_db()
    assert (account.active, account.removed_at is not None) == (False, True)
    assert not account.usable(timezone.now() + dt.timedelta(days=365))
    assert (pending.state, pending.decided_by) == (State.CANCELLED, bob)
    removed = AuditEvent.objects.get(action="custody.account_removed")
    assert (removed.actor, removed.payload["reason"]) == (bob, "Key compromised")
    assert removed.payload["cancelled_changes"] == [pending.pk]
    assert AuditEvent.objects.filter(
        action="custody.change_cancelled", payload__custody_change=pending.pk
    ).exists()
    with pytest.raises(InvalidTransition):
        confirm(pending, alice)


def test_a_removed_account_cannot_be_removed_again_or_changed(people):
    fund, (alice, bob, _), _ = people
    account = added(fund, alice, bob)
    services.custody_account_remove(actor=alice, account_id=account.pk, reason="Retired")
    before = written()

    with pytest.raises(InvalidTransition):
        services.custody_account_remove(actor=bob, account_id=account.pk, reason="Again")
    with pytest.raises(InvalidTransition, match="removed"):
        services.custody_change_request(
            actor=alice,
            fund=fund,
            action="change",
            account=account,
            name="Back again",
            kind=account.kind,
            chain=account.chain,
            address=account.address,
            reason="Revive",
        )

    assert written() == before


def test_a_removed_accounts_address_may_be_added_again_under_a_new_name(people):
    fund, (alice, bob, _), _ = people
    old = added(fund, alice, bob)
    services.custody_account_remove(actor=alice, account_id=old.pk, reason="Rotated signers")

    new = added(fund, bob, alice, name="Cold vault (new signers)")

    assert (new.address, new.active, new.pk != old.pk) == (old.address, True, True)


def test_removal_needs_a_reason(people):
    fund, (alice, bob, _), _ = people
    account = added(fund, alice, bob)
    before = written()

    with pytest.raises(ValidationError) as refused:
        services.custody_account_remove(actor=alice, account_id=account.pk, reason="  ")

    assert "reason" in refused.value.message_dict
    assert written() == before


# ---------------------------------------------------------------------------------------------
# Who may: fund administrators of this fund only
# ---------------------------------------------------------------------------------------------


def test_nobody_without_manage_policy_on_the_fund_requests_confirms_cancels_or_removes(people):
    fund, (alice, bob, _), manager = people
    account = added(fund, alice, bob)
    change = request_add(fund, alice, name="Second vault", address=BTC_BASE58)
    site_admin = UserFactory(username="root", is_staff=True, is_superuser=True)
    other_admin = UserFactory(username="otheradmin")
    services.role_grant(
        user=other_admin, fund=FundFactory(name="Other", slug="o"), role=R.MANAGE_POLICY
    )
    before = written()

    for outsider in (manager, site_admin, other_admin):
        with pytest.raises(NotPermitted):
            request_add(fund, outsider, name="Rogue", address=ETH, chain="Ethereum")
        with pytest.raises(NotPermitted):
            confirm(change, outsider)
        with pytest.raises(NotPermitted):
            services.custody_change_cancel(actor=outsider, change_id=change.pk)
        with pytest.raises(NotPermitted):
            services.custody_account_remove(actor=outsider, account_id=account.pk, reason="x")

    assert written() == before


# ---------------------------------------------------------------------------------------------
# The terms: names, addresses, hidden characters
# ---------------------------------------------------------------------------------------------


def test_an_address_already_an_active_accounts_is_refused_in_any_fund(people):
    fund, (alice, bob, _), _ = people
    added(fund, alice, bob, chain="Ethereum", address=ETH)
    other = FundFactory(name="Other", slug="other")
    services.role_grant(user=alice, fund=other, role=R.MANAGE_POLICY)
    before = written()

    for target, spelling in ((fund, ETH), (other, ETH.lower()), (other, ETH.upper()[:1] + ETH[1:])):
        with pytest.raises(ValidationError) as refused:
            request_add(target, alice, name="Copy", chain="ethereum", address=spelling)
        assert "already an active custody account" in refused.value.message_dict["address"][0]

    assert written() == before


def test_two_requests_for_one_address_apply_once(people):
    fund, (alice, bob, _), _ = people
    first = request_add(fund, alice, name="Vault A")
    second = request_add(fund, alice, name="Vault B")
    confirm(first, bob)
    before = written()

    with pytest.raises(ValidationError) as refused:
        confirm(second, bob)

    assert "address" in refused.value.message_dict
    assert written() == before


def test_a_name_the_fund_already_uses_is_refused(people):
    fund, (alice, bob, _), _ = people
    added(fund, alice, bob)
    before = written()

    with pytest.raises(ValidationError) as refused:
        request_add(fund, alice, name="cold VAULT", address=BTC_BASE58)

    assert "name" in refused.value.message_dict
    assert written() == before


@pytest.mark.parametrize(
    ("chain", "address", "says"),
    [
        ("Ethereum", "0x123", "0x followed by 40 hexadecimal digits"),
        ("BNB Smart Chain", BTC_BECH32, "0x followed by 40 hexadecimal digits"),
        ("Ethereum", ETH[:-1] + "D", "EIP-55 checksum"),
        ("Bitcoin", ETH, "A Bitcoin address starts with bc1"),
        ("Bitcoin", BTC_BECH32[:-1] + "5", "fails its checksum"),
        ("Bitcoin", BTC_BASE58[:-1] + "b", "fails its checksum"),
        ("Bitcoin", "bc1QW508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4", "all lower case or all upper"),
        ("Bitcoin", "1A1zP1eP5QGefi2DMP TfTL5SLmv7DivfNa", "no spaces"),
    ],
)
def test_an_address_of_the_wrong_shape_for_its_chain_is_refused_naming_the_field(
    people, chain, address, says
):
    fund, (alice, _, _), _ = people
    before = written()

    with pytest.raises(ValidationError) as refused:
        request_add(fund, alice, chain=chain, address=address)

    assert says in refused.value.message_dict["address"][0]
    assert written() == before


@pytest.mark.parametrize(
    ("terms", "field"),
    [
        ({"name": "  "}, "name"),
        ({"chain": ""}, "chain"),
        ({"reason": ""}, "reason"),
        ({"kind": "hot_wallet"}, "kind"),
        ({"address": "", "account_reference": ""}, "address"),
        ({"address": "", "account_reference": "ACC-1"}, "address"),  # a multisig needs one
        ({"name": "Cold\u202evault"}, "name"),
        (
            {"kind": Kind.EXCHANGE, "address": "", "account_reference": "ACC\u200b-1"},
            "account_reference",
        ),
        ({"reason": "Because\u200b"}, "reason"),
    ],
)
def test_incomplete_or_hidden_character_terms_are_refused_naming_the_field(people, terms, field):
    fund, (alice, _, _), _ = people
    before = written()

    with pytest.raises(ValidationError) as refused:
        request_add(fund, alice, **terms)

    assert field in refused.value.message_dict
    assert written() == before


def test_an_exchange_account_known_by_its_reference_alone_is_accepted(people):
    fund, (alice, bob, _), _ = people

    account = added(
        fund, alice, bob, kind=Kind.EXCHANGE, chain="Bitcoin", address="", account_reference="SUB-7"
    )

    assert (account.address, account.account_reference) == ("", "SUB-7")


def test_a_chain_not_checked_here_takes_any_address_without_spaces(people):
    fund, (alice, bob, _), _ = people

    account = added(
        fund, alice, bob, chain="Solana", address="So11111111111111111111111111111111111111112"
    )

    assert account.address == "So11111111111111111111111111111111111111112"


# ---------------------------------------------------------------------------------------------
# The mandate, through a policy version (four eyes)
# ---------------------------------------------------------------------------------------------


STAGES = [StageSpec(1, "Risk review", R.REVIEW_RISK, 1)]


def test_a_drafted_mandate_changes_the_fund_only_when_a_second_administrator_publishes_it(people):
    fund, (alice, bob, _), _ = people
    old = Mandate.of(fund)
    new = Mandate(
        max_asset_share=Decimal("0.25"),
        max_proposal_notional_usd=Decimal("1000000.00"),
        execution_window_days=3,
        price_tolerance=Decimal("0.01"),
        max_fee_share=Decimal("0.002"),
        custody_cooling_off_hours=72,
    )

    policy = services.policy_draft(actor=alice, fund=fund, stages=STAGES, mandate=new)

    fund.refresh_from_db()
    assert Mandate.of(fund) == old
    with pytest.raises(FourEyesRequired):
        services.policy_publish(actor=alice, policy_id=policy.pk)
    fund.refresh_from_db()
    assert Mandate.of(fund) == old

    services.policy_publish(actor=bob, policy_id=policy.pk)

    fund.refresh_from_db()
    assert Mandate.of(fund) == new
    assert last_event().payload["mandate"]["custody_cooling_off_hours"] == "72"


def test_a_new_cooling_off_applies_to_accounts_confirmed_after_it_is_published(people):
    fund, (alice, bob, _), _ = people
    mandate = Mandate.of(fund)
    policy = services.policy_draft(
        actor=alice,
        fund=fund,
        stages=STAGES,
        mandate=Mandate(**(vars(mandate) | {"custody_cooling_off_hours": 96})),
    )
    services.policy_publish(actor=bob, policy_id=policy.pk)

    account = added(fund, alice, bob)

    assert account.usable_from == account.changes.get().decided_at + dt.timedelta(hours=96)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_asset_share", Decimal("1.5")),
        ("max_proposal_notional_usd", Decimal("0")),
        ("execution_window_days", 0),
        ("price_tolerance", Decimal("1")),
        ("max_fee_share", Decimal("1")),
        ("custody_cooling_off_hours", 721),
    ],
)
def test_a_mandate_out_of_range_is_refused_naming_the_field(people, field, value):
    fund, (alice, _, _), _ = people
    mandate = Mandate(**(vars(Mandate.of(fund)) | {field: value}))
    before = AuditEvent.objects.count()

    with pytest.raises(ValidationError) as refused:
        services.policy_draft(actor=alice, fund=fund, stages=STAGES, mandate=mandate)

    assert list(refused.value.message_dict) == [field]
    assert AuditEvent.objects.count() == before
    assert not fund.policies.exists()


# ---------------------------------------------------------------------------------------------
# Races, on PostgreSQL
# ---------------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_two_administrators_confirming_one_change_at_once_apply_it_once(people):
    # Given a request by one fund administrator, and two others who may confirm it
    fund, (alice, bob, carol), _ = people
    change = request_add(fund, alice)

    # When both confirm at the same moment
    results = run_together(
        [
            partial(
                services.custody_change_confirm,
                actor=admin,
                change_id=change.pk,
                otp_token=otp_code(admin),
            )
            for admin in (bob, carol)
        ]
    )

    # Then one confirmation applied it, the other was refused as no longer pending
    assert sorted(kind for kind, _ in results) == ["error", "ok"], results
    [error] = [result for kind, result in results if kind == "error"]
    assert isinstance(error, InvalidTransition)
    assert CustodyAccount.objects.count() == 1
    assert AuditEvent.objects.filter(action="custody.change_confirmed").count() == 1
    assert audit_verify().ok


@pytest.mark.django_db(transaction=True)
def test_a_confirmation_racing_a_removal_never_leaves_the_change_applied_to_a_removed_account(
    people,
):
    # Given an account with a change waiting
    fund, (alice, bob, carol), _ = people
    account = added(fund, alice, bob)
    change = services.custody_change_request(
        actor=alice,
        fund=fund,
        action="change",
        account=account,
        name=account.name,
        kind=account.kind,
        chain="Ethereum",
        address=ETH_OTHER,
        reason="Move to Ethereum",
    )

    # When one administrator confirms it while another removes the account
    results = run_together(
        [
            partial(
                services.custody_change_confirm,
                actor=bob,
                change_id=change.pk,
                otp_token=otp_code(bob),
            ),
            partial(
                services.custody_account_remove, actor=carol, account_id=account.pk, reason="x"
            ),
        ]
    )

    # Then the account is removed, and the change was either applied before it or cancelled
    assert results[1][0] == "ok", results
    account.refresh_from_db()
    change.refresh_from_db()
    assert account.active is False
    if results[0][0] == "ok":
        assert change.state == State.APPLIED
        assert account.address == ETH_OTHER
    else:
        assert isinstance(results[0][1], InvalidTransition), results
        assert change.state == State.CANCELLED
        assert account.address == BTC_BECH32
    assert audit_verify().ok
