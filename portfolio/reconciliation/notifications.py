"""E-mail to the people who must see a reconciliation break: the fund's auditors and fund
administrators (``audit`` and ``manage_policy``), when a break opens.

Composed and sent the way ``governance.notifications`` sends the stage e-mails: plain text from
``templates/email/``, in each recipient's language, each message on its own; people without an
e-mail address are skipped and logged; the caller retries only those the server refused.
"""

import logging
from collections.abc import Iterable

from django.conf import settings
from django.urls import reverse

from governance.notifications import Delivery, _message, _name, _reachable, _send
from governance.roles import users_with_role
from portfolio.models import FundRole, ReconciliationBreak

logger = logging.getLogger(__name__)

# Who sees a break until it is explained.
BREAK_WATCHERS = (FundRole.AUDIT, FundRole.MANAGE_POLICY)


def break_recipients(break_: ReconciliationBreak) -> list:
    """The active auditors and fund administrators of the break's fund with an e-mail address."""
    fund = break_.account.fund
    people = {}
    for role in BREAK_WATCHERS:
        people.update((user.pk, user) for user in users_with_role(fund, role))
    return _reachable(
        sorted(people.values(), key=lambda user: user.username),
        about=f"reconciliation break #{break_.pk} opened",
    )


def reconciliation_link(fund) -> str:
    return settings.ALEM_SITE_URL + reverse("reconciliation", args=[fund.pk])


def notify_break_opened(break_id: int, *, user_ids: Iterable[int] | None = None) -> Delivery:
    """E-mail the break's watchers that it opened; nobody once it has been explained (a late or
    repeated task announces nothing that no longer waits). ``user_ids`` narrows the recipients
    to those a previous attempt failed to reach."""
    break_ = (
        ReconciliationBreak.objects.select_related("account__fund", "asset", "observation")
        .filter(pk=break_id)
        .first()
    )
    if break_ is None or break_.state != ReconciliationBreak.State.OPEN:
        logger.info("Reconciliation break #%s is explained or gone; nobody is e-mailed.", break_id)
        return Delivery()
    recipients = break_recipients(break_)
    if user_ids is not None:
        wanted = set(user_ids)
        recipients = [user for user in recipients if user.pk in wanted]
    context = {
        "break": break_,
        "account": break_.account,
        "fund": break_.account.fund,
        "observation": break_.observation,
        "link": reconciliation_link(break_.account.fund),
    }
    return _send(
        (
            user,
            _message(
                "email/reconciliation_break", {**context, "recipient_name": _name(user)}, user
            ),
        )
        for user in recipients
    )
