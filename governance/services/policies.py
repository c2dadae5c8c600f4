"""Drafting and publishing approval policy versions (four eyes: drafter and publisher differ)."""

from django.db import transaction
from django.utils import timezone

from governance import events, outbox, policies
from governance.exceptions import FourEyesRequired, InvalidTransition, NotPermitted
from governance.models import ApprovalPolicy, PolicyStage
from governance.roles import has_role
from governance.selectors import policy_in_force
from governance.services._locks import lock_fund
from portfolio.disclosure import Disclosure
from portfolio.mandate import Mandate
from portfolio.models import Fund, FundRole
from portfolio.tasks import public_disclosures_refresh


def policy_draft(
    *,
    actor,
    fund: Fund,
    stages: list[policies.StageSpec],
    note: str = "",
    disclosure: Disclosure | None = None,
    mandate: Mandate | None = None,
) -> ApprovalPolicy:
    """Draft the next version of ``fund``'s approval policy (not in force until published).

    ``disclosure`` is what the fund's public pages will show once the version is published (the
    fund's current settings when not given): the only way to change them, so always by two
    people. ``mandate`` likewise: the fund's limits and custody cooling-off once published.

    Preconditions: ``actor`` holds ``manage_policy`` on the fund; the stages validate; the
    disclosure delay is 0 to 3,650 days; the mandate is within its ranges.
    Effects: the policy and its stages, numbered under the fund's lock; audit event
    ``policy.drafted``.
    """
    if not has_role(actor, fund, FundRole.MANAGE_POLICY):
        raise NotPermitted("Drafting a policy needs the manage_policy role on the fund.")
    policies.validate_stages(stages)
    disclosure = disclosure or Disclosure.of(fund)
    disclosure.validate()
    mandate = mandate or Mandate.of(fund)
    mandate.validate()
    with transaction.atomic():
        lock_fund(fund)
        last = ApprovalPolicy.objects.filter(fund=fund).order_by("-version").first()
        policy = ApprovalPolicy.objects.create(
            fund=fund,
            version=(last.version + 1) if last else 1,
            note=note,
            drafted_by=actor,
            **vars(disclosure),
            **vars(mandate),
        )
        PolicyStage.objects.bulk_create(
            PolicyStage(
                policy=policy,
                order=spec.order,
                name=spec.name,
                permission=spec.permission,
                quorum=spec.quorum,
                applies_from_usd=spec.applies_from_usd,
                kinds=list(spec.kinds),
            )
            for spec in stages
        )
        events.policy_drafted_event(actor=actor, policy=policy)
    return policy


def policy_publish(*, actor, policy_id: int) -> ApprovalPolicy:
    """Put a drafted policy version in force; it governs proposals submitted from now on.

    Preconditions: ``actor`` holds ``manage_policy`` on the fund and is not the drafter (four
    eyes); the version is a draft newer than every published one.
    Effects: ``published_by/at`` set, the policy frozen; the fund's disclosure and mandate set
    to the version's; audit event ``policy.published``.
    """
    with transaction.atomic():
        policy = (
            ApprovalPolicy.objects.select_for_update(of=("self",), no_key=True)
            .select_related("fund")
            .get(pk=policy_id)
        )
        if not has_role(actor, policy.fund, FundRole.MANAGE_POLICY):
            raise NotPermitted("Publishing a policy needs the manage_policy role on the fund.")
        if policy.is_published:
            raise InvalidTransition(f"Policy version {policy.version} is already published.")
        if policy.drafted_by_id == actor.pk:
            raise FourEyesRequired(
                "A policy version must be published by a different administrator than its drafter."
            )
        current = policy_in_force(policy.fund)
        if current is not None and current.version > policy.version:
            raise InvalidTransition(
                f"Version {policy.version} is older than version {current.version} in force."
            )
        policies.validate_stages(list(policy.stages.all()))
        policy.published_by = actor
        policy.published_at = timezone.now()
        policy.save(update_fields=["published_by", "published_at"])
        fund, disclosure = policy.fund, Disclosure.of(policy)
        if Disclosure.of(fund) != disclosure:
            for field, value in vars(disclosure).items():
                setattr(fund, field, value)
            fund.save(update_fields=list(Fund.DISCLOSURE))
            # The public pages follow at once, not at the next 15-minute refresh.
            outbox.outbox_enqueue(public_disclosures_refresh)
        mandate = Mandate.of(policy)
        if Mandate.of(fund) != mandate:
            for field, value in vars(mandate).items():
                setattr(fund, field, value)
            fund.save(update_fields=list(Fund.MANDATE))
        events.policy_published_event(actor=actor, policy=policy)
    return policy
