"""Row locks of the governance services, taken in one fixed order.

Every transaction that locks more than one row takes them in this order, so two of them can
never wait on each other in a cycle:

1. the person whose roles the change depends on or changes (``lock_person``): a decider
   deciding, someone losing a role or their account; so a decision and the revocation that
   voids it never interleave;
2. the proposal (``lock_proposal``), when the change is about one proposal;
   then the custody accounts it moves coins out of or into (``lock_accounts``, by id), so two
   sales or transfers from one account count its coins one after the other;
3. the fund (``lock_fund``): policy versions, role grants, custody accounts and the cash that
   compliance counts (a submission and a final approval, not the other decisions);
4. a custody account (``lock_custody_account``), then a change asked for it
   (``lock_custody_change``): taken only under the fund's lock, so custody writes of one fund
   run one at a time and read the fund's cooling-off as the last published policy set it. A
   fill locks accounts after its proposal and never takes the fund's lock, so the two orders
   cannot wait on each other in a cycle;
5. the audit chain head, taken last by ``governance.audit.audit_record`` when the event is
   written.

The locks here are ``FOR NO KEY UPDATE``, never a full ``FOR UPDATE``: audit events and
decisions reference these rows, and their inserts take a key-share lock on them while holding
the audit chain lock, so a full lock here would deadlock against them.
"""

from django.contrib.auth import get_user_model

from governance.models import AdminChange, CustodyAccountChange, Proposal
from portfolio.models import CustodyAccount, Fund


def lock_person(user) -> None:
    """Lock the person's row and refresh ``user.is_active`` from it, so a check made after the
    lock sees a deactivation committed while it waited."""
    locked = (
        get_user_model()
        .objects.select_for_update(no_key=True)
        .only("pk", "is_active")
        .get(pk=user.pk)
    )
    user.is_active = locked.is_active


def lock_proposal(proposal_id: int) -> Proposal:
    """Lock the proposal row (rule 12), then read it with its relations.

    Two statements on purpose: after waiting for a lock PostgreSQL re-reads only the locked row,
    so rows joined in the locking statement could be stale (a current stage that just moved
    would come back empty).
    """
    Proposal.objects.select_for_update(no_key=True).only("pk").get(pk=proposal_id)
    return Proposal.objects.select_related(
        "fund",
        "asset",
        "funding_source",
        "policy",
        "current_stage",
        "account",
        "destination_account",
    ).get(pk=proposal_id)


def lock_accounts(accounts) -> None:
    """Lock custody account rows in id order (after the proposal, before the fund) and refresh
    what may have changed while waiting: removal and cooling-off."""
    for account in sorted(accounts, key=lambda account: account.pk):
        locked = (
            CustodyAccount.objects.select_for_update(no_key=True)
            .only("pk", "active", "usable_from")
            .get(pk=account.pk)
        )
        account.active, account.usable_from = locked.active, locked.usable_from


def lock_fund(fund: Fund) -> None:
    """Serialise the writers of one fund's policies, roles and cash commitments."""
    Fund.objects.select_for_update(no_key=True).only("pk").get(pk=fund.pk)


def lock_admin_change(change_id: int) -> AdminChange:
    """Lock a back-office change, then read it with the people it names (as ``lock_proposal``:
    two statements, so the relations are read after the lock)."""
    AdminChange.objects.select_for_update(no_key=True).only("pk").get(pk=change_id)
    return AdminChange.objects.select_related("user", "fund", "requested_by").get(pk=change_id)


def lock_custody_account(account_id: int) -> CustodyAccount:
    """Lock a custody account (after its fund), then read it."""
    CustodyAccount.objects.select_for_update(no_key=True).only("pk").get(pk=account_id)
    return CustodyAccount.objects.select_related("fund").get(pk=account_id)


def lock_custody_change(change_id: int) -> CustodyAccountChange:
    """Lock a custody account change (after its fund and account), then read it with the
    people and the account it names (as ``lock_proposal``: two statements)."""
    CustodyAccountChange.objects.select_for_update(no_key=True).only("pk").get(pk=change_id)
    return CustodyAccountChange.objects.select_related(
        "fund", "account", "requested_by", "decided_by"
    ).get(pk=change_id)
