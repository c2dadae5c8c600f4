"""E-mail to the people a proposal waits for: the deciders of a stage when it opens, and a daily
digest of everything waiting for each person.

Who is told follows the rules the services enforce: the deciders of a stage are the active
holders of its role on the fund (``governance.roles.users_with_role``; superusers get nothing
implicitly), never the author (rule 1) and never someone who already decided on this version
(rule 2); fills wait for ``execute_trades`` holders who are neither the author nor an approver
(rules 1 and 10). People without an e-mail address are skipped and logged.

Messages are plain text rendered from ``templates/email/`` in each recipient's language (the one
they chose with the switcher, else ``settings.LANGUAGE_CODE``; ``governance.preferences``), with
absolute links on ``settings.ALEM_SITE_URL``. They carry
no code and no secret: acting on a proposal still needs signing in and a fresh authenticator code.

Each message is sent on its own, so one refused address does not stop the others; callers get
back who was reached and who was not, and retry only the latter.
"""

import datetime as dt
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import EmailMultiAlternatives, get_connection
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone, translation

from governance import permissions, policies
from governance.models import Proposal, ProposalState
from governance.preferences import language_of
from governance.roles import users_with_role
from governance.second_factor import STEP_UP_ROLES
from governance.selectors import decisions_awaiting, fills_awaiting
from portfolio.models import Fund

logger = logging.getLogger(__name__)

User = get_user_model()

_RELATED = ("fund", "asset", "author", "policy", "current_stage")


@dataclass(frozen=True)
class Delivery:
    """The ids of the users an e-mail reached and of those it did not (the server refused)."""

    sent: tuple[int, ...] = ()
    failed: tuple[int, ...] = ()


@dataclass
class Waiting:
    """What waits for one person: proposals to decide on, approved proposals to execute."""

    user: "User"
    decisions: list[Proposal] = field(default_factory=list)
    fills: list[Proposal] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.decisions) + len(self.fills)


# ---------------------------------------------------------------------------------------------
# A stage opened
# ---------------------------------------------------------------------------------------------


def stage_opened_recipients(proposal: Proposal) -> list:
    """The deciders of the proposal's current stage who have an e-mail address."""
    return _reachable(
        permissions.stage_deciders(proposal).select_related("preference").order_by("username"),
        about=f"proposal #{proposal.pk} waits for their decision",
    )


def notify_stage_opened(
    proposal_id: int, version: int, stage_order: int, *, user_ids: Iterable[int] | None = None
) -> Delivery:
    """E-mail each decider of the stage ``stage_order`` that opened on ``version`` of the proposal.

    Nothing is sent if the proposal has moved on since (another state, version or stage), so a
    late or repeated task does not announce a stage that is no longer waiting. ``user_ids``
    narrows the recipients to those a previous attempt failed to reach.
    """
    proposal = Proposal.objects.select_related(*_RELATED).filter(pk=proposal_id).first()
    if (
        proposal is None
        or proposal.state != ProposalState.IN_REVIEW
        or proposal.version != version
        or proposal.current_stage.order != stage_order
    ):
        logger.info(
            "Proposal #%s moved on since stage %s of version %s opened; nobody is e-mailed.",
            proposal_id,
            stage_order,
            version,
        )
        return Delivery()
    recipients = stage_opened_recipients(proposal)
    if user_ids is not None:
        wanted = set(user_ids)
        recipients = [user for user in recipients if user.pk in wanted]
    applicable = policies.applicable_stages(
        proposal.policy.stages.all(), proposal.notional_usd, proposal.kind
    )
    stage = proposal.current_stage
    context = {
        "proposal": proposal,
        "stage": stage,
        "stage_position": [s.order for s in applicable].index(stage.order) + 1,
        "stage_count": len(applicable),
        "author_name": _name(proposal.author),
        "link": proposal_link(proposal),
    }
    return _send(
        (user, _message("email/stage_opened", {**context, "recipient_name": _name(user)}, user))
        for user in recipients
    )


# ---------------------------------------------------------------------------------------------
# The daily digest
# ---------------------------------------------------------------------------------------------


def digest_waiting(*, now: dt.datetime | None = None) -> list[Waiting]:
    """For every person with something waiting, what it is; ordered by username.

    Exactly what each person's queue shows (``governance.selectors.decisions_awaiting`` and
    ``fills_awaiting``, where the rules live): the people asked are the active holders of a
    deciding or executing role on any fund. A few queries per fund and per such person, not per
    proposal; it runs once a day.
    """
    now = now or timezone.now()
    people = {}
    for fund in Fund.objects.all():
        for role in STEP_UP_ROLES:
            holders = users_with_role(fund, role).select_related("preference")
            people.update((user.pk, user) for user in holders)
    waiting = []
    for user in sorted(people.values(), key=lambda person: person.username):
        entry = Waiting(
            user=user,
            decisions=[item.proposal for item in decisions_awaiting(user, now=now)],
            fills=list(fills_awaiting(user, now=now)),
        )
        if entry.total:
            waiting.append(entry)
    return waiting


def digest_send(
    now: dt.datetime | None = None, *, user_ids: Iterable[int] | None = None
) -> Delivery:
    """E-mail each person with something waiting one digest of it; nobody else gets mail.

    ``user_ids`` narrows the recipients to those a previous attempt failed to reach.
    """
    now = now or timezone.now()
    entries = digest_waiting(now=now)
    if user_ids is not None:
        wanted = set(user_ids)
        entries = [entry for entry in entries if entry.user.pk in wanted]
    reachable = {
        user.pk
        for user in _reachable((entry.user for entry in entries), about="their daily digest")
    }
    return _send(
        (
            entry.user,
            _message(
                "email/digest",
                {
                    "recipient_name": _name(entry.user),
                    "now": now,
                    "total": entry.total,
                    "decisions": [_digest_item(p) for p in entry.decisions],
                    "fills": [_digest_item(p) for p in entry.fills],
                    "queue_link": settings.ALEM_SITE_URL + reverse("queue"),
                    "time_zone": settings.TIME_ZONE,
                },
                entry.user,
            ),
        )
        for entry in entries
        if entry.user.pk in reachable
    )


def _digest_item(proposal: Proposal) -> dict:
    return {
        "proposal": proposal,
        "author_name": _name(proposal.author),
        "remaining_usd": proposal.remaining_usd,
        "link": proposal_link(proposal),
    }


# ---------------------------------------------------------------------------------------------
# Composing and sending
# ---------------------------------------------------------------------------------------------


def proposal_link(proposal: Proposal) -> str:
    """The absolute address of the proposal's page."""
    return settings.ALEM_SITE_URL + reverse("proposal-detail", args=[proposal.pk])


def _name(user) -> str:
    return user.get_full_name() or user.username


def _reachable(users: Iterable, *, about: str) -> list:
    reachable = []
    for user in users:
        if user.email:
            reachable.append(user)
        else:
            logger.warning(
                "%s (#%s) has no e-mail address; not e-mailed that %s.",
                user.username,
                user.pk,
                about,
            )
    return reachable


def _message(template: str, context: dict, user) -> EmailMultiAlternatives:
    """``<template>_subject.txt`` and ``<template>_body.txt``, rendered in the recipient's
    language whatever language the caller has active (a request's, when run eagerly)."""
    with translation.override(language_of(user)):
        subject = render_to_string(f"{template}_subject.txt", context)
        body = render_to_string(f"{template}_body.txt", context)
    # A header holds one line; the no-break spaces grouping digits in Russian and Kazakh stay.
    subject = re.sub(r"[ \t\r\n]+", " ", subject).strip()
    return EmailMultiAlternatives(subject=subject, body=body.strip() + "\n", to=[user.email])


def _send(messages: Iterable[tuple]) -> Delivery:
    """Send ``(user, message)`` pairs over one connection, each on its own.

    ``OSError`` covers ``smtplib.SMTPException`` and refused or broken connections.
    """
    messages = list(messages)
    if not messages:
        return Delivery()
    connection = get_connection()
    try:
        connection.open()
    except OSError:
        logger.exception("The mail server could not be reached; %d e-mail(s) wait.", len(messages))
        return Delivery(failed=tuple(user.pk for user, _ in messages))
    sent, failed = [], []
    try:
        for user, message in messages:
            try:
                connection.send_messages([message])
            except OSError:
                logger.exception("E-mail to %s (#%s) failed.", user.username, user.pk)
                failed.append(user.pk)
            else:
                sent.append(user.pk)
    finally:
        try:
            connection.close()
        except OSError:  # what was sent is sent; a failing QUIT changes nothing
            logger.warning("Closing the mail server connection failed.", exc_info=True)
    return Delivery(sent=tuple(sent), failed=tuple(failed))
