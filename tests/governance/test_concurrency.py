"""Concurrent requests cannot break the workflow's rules (DESIGN rule 12), on PostgreSQL.

Real threads, each with its own database connection, are released together by a barrier and
call the services (or the API) at the same moment. Transitions lock the proposal row and every
audit write locks the chain head, so whatever the interleaving the outcome must be one of the
serial ones: each person counts once, a stage completes once, refusals are the contract's errors
(never an IntegrityError, a deadlock or a hang) and the audit chain stays one verifiable line.
"""

import contextlib
import threading
from collections import Counter
from decimal import Decimal
from functools import partial
from itertools import pairwise

import pytest
from django.db import OperationalError, connection, connections, transaction
from rest_framework.test import APIClient

from governance import services
from governance.audit import audit_verify
from governance.exceptions import (
    AlreadyDecided,
    ComplianceBlocked,
    InvalidTransition,
    NotPermitted,
    SegregationOfDuties,
    StageNotCurrent,
)
from governance.models import AuditEvent, Decision, Proposal, ProposalState
from governance.policies import StageSpec
from governance.roles import roles_on_fund
from governance.services import _compliance as services_compliance
from governance.services._locks import lock_fund
from portfolio.models import Fund, FundRole
from tests.factories import ALEM_STAGES, FundBuilder, UserFactory, otp_code
from tests.threads import run_together

pytestmark = pytest.mark.django_db(transaction=True)

R = FundRole
S = ProposalState
CONTRACT_ERRORS = (AlreadyDecided, NotPermitted, StageNotCurrent, InvalidTransition)


def assert_chain_is_one_contiguous_line() -> int:
    verification = audit_verify()
    assert verification.ok, verification
    sequences = list(AuditEvent.objects.order_by("sequence").values_list("sequence", flat=True))
    assert sequences == list(range(1, len(sequences) + 1))
    return len(sequences)


@pytest.fixture
def fund(settings):
    """The Alem-like fund of ``FundBuilder`` plus a wider committee, a second risk officer and
    a second ministry official, so more people can race than a quorum needs."""
    # The builder's users get real password hashes; a fast hasher keeps the setup cheap.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    builder = FundBuilder.alem_like()
    for name, role in [
        ("committee4", R.VOTE_COMMITTEE),
        ("committee5", R.VOTE_COMMITTEE),
        ("risk2", R.REVIEW_RISK),
        ("ministry2", R.APPROVE_MINISTRY),
    ]:
        user = UserFactory(username=name)
        services.role_grant(user=user, fund=builder.fund, role=role)
        builder.users[name] = user
    return builder


def at_committee_stage(fund: FundBuilder) -> Proposal:
    """A USD 2M proposal (so the ministry stage applies) the risk officer has approved."""
    proposal = fund.proposal(notional_usd=Decimal("2000000.00"), submit=True)
    fund.decide(proposal, "risk")
    proposal.refresh_from_db()
    assert (proposal.state, proposal.current_stage.order) == (S.IN_REVIEW, 2)
    return proposal


def decide_call(fund: FundBuilder, proposal: Proposal, username: str, **kwargs):
    user = fund.users[username]
    kwargs.setdefault("otp_token", otp_code(user))
    return lambda: services.decision_record(
        proposal_id=proposal.pk, user=user, verdict="approve", **kwargs
    )


def draft_call(fund: FundBuilder, username: str):
    user, stages = fund.users[username], [StageSpec(1, "Risk review", R.REVIEW_RISK, 1)]
    return lambda: services.policy_draft(actor=user, fund=fund.fund, stages=stages)


def grant_call(user, fund, role: str):
    return lambda: services.role_grant(user=user, fund=fund, role=role)


def test_racing_committee_members_count_once_each_and_complete_the_stage_once(fund):
    for _ in range(3):  # a few rounds, for more interleavings
        # Given a proposal at the committee stage (quorum 2 of the five members)
        proposal = at_committee_stage(fund)
        decisions_before = Decision.objects.filter(proposal=proposal).count()
        events_before = AuditEvent.objects.count()
        racers = [
            ("committee1", {}),
            ("committee1", {}),  # the same person from a second request
            ("committee2", {}),
            ("committee3", {}),
            ("committee4", {}),
            ("committee5", {}),
            ("committee3", {"stage_order": 1}),  # names a stage that is not current
            ("risk", {}),  # decided at stage 1 already, no committee role
            ("risk2", {}),  # a risk officer at the committee stage
            ("manager", {}),  # the author
            ("auditor", {}),
            ("treasury", {}),
        ]

        # When all of them decide at the same moment
        results = run_together(
            [decide_call(fund, proposal, name, **kwargs) for name, kwargs in racers]
        )

        # Then exactly two committee approvals counted, and the rest got the contract's errors
        names = [name for name, _ in racers]
        named = [(name, kind, value) for name, (kind, value) in zip(names, results, strict=True)]
        approved = [name for name, kind, _ in named if kind == "ok"]
        errors = [(name, exc) for name, kind, exc in named if kind == "error"]
        assert len(approved) == 2 and len(set(approved)) == 2, results
        assert set(approved) <= {f"committee{n}" for n in range(1, 6)}
        unexpected = [
            (name, exc)
            for name, exc in errors
            if not isinstance(exc, (*CONTRACT_ERRORS, SegregationOfDuties))
        ]
        assert not unexpected, unexpected
        assert isinstance(results[6][1], StageNotCurrent)
        assert isinstance(results[9][1], SegregationOfDuties)
        for i in (7, 8, 10, 11):
            assert isinstance(results[i][1], NotPermitted), named[i]

        # One decision per person, the two approvals at the committee stage
        proposal.refresh_from_db()
        decisions = Decision.objects.filter(proposal=proposal, proposal_version=proposal.version)
        per_user = Counter(decisions.values_list("user__username", flat=True))
        assert per_user == Counter(["risk", *approved])
        assert decisions.count() == decisions_before + 2
        assert sorted(
            decisions.filter(stage__order=2).values_list("user__username", flat=True)
        ) == sorted(approved)

        # The stage completed exactly once and the proposal waits at the ministry stage
        assert (proposal.state, proposal.current_stage.order) == (S.IN_REVIEW, 3)
        completed = AuditEvent.objects.filter(
            proposal=proposal, action="proposal.stage_completed", payload__stage=2
        )
        assert completed.count() == 1
        assert completed.get().payload["next_stage"] == 3

        # Every attempt is on the record: two decisions, one stage completion, ten refusals
        new_events = Counter(
            AuditEvent.objects.filter(sequence__gt=events_before).values_list("action", flat=True)
        )
        assert new_events == Counter(
            {"decision.recorded": 2, "proposal.stage_completed": 1, "decision.refused": 10}
        )
        refused_codes = Counter(
            AuditEvent.objects.filter(
                sequence__gt=events_before, action="decision.refused"
            ).values_list("payload__code", flat=True)
        )
        assert refused_codes == Counter(exc.code for _, exc in errors)
        assert_chain_is_one_contiguous_line()


def test_decisions_racing_across_a_stage_boundary_never_count_at_the_wrong_stage(fund):
    # Given a proposal at the committee stage, with ministry officials already pressing
    proposal = at_committee_stage(fund)
    racers = [
        ("committee1", {}),
        ("committee2", {}),
        ("committee3", {}),
        ("ministry", {}),
        ("ministry", {"stage_order": 3}),
        ("ministry2", {"stage_order": 3}),
        ("ministry2", {}),
        ("committee4", {}),
    ]

    # When committee members and ministry officials decide at the same moment
    results = run_together([decide_call(fund, proposal, name, **kw) for name, kw in racers])

    # Then only the contract's errors came back
    errors = [exc for kind, exc in results if kind == "error"]
    assert all(isinstance(exc, CONTRACT_ERRORS) for exc in errors), errors

    # And the committee stage completed once, with exactly its quorum
    proposal.refresh_from_db()
    decisions = Decision.objects.filter(proposal=proposal).select_related("stage", "user")
    committee = [d for d in decisions if d.stage.order == 2]
    ministry = [d for d in decisions if d.stage.order == 3]
    assert len(committee) == 2
    assert {d.user.username for d in committee} <= {f"committee{n}" for n in range(1, 5)}
    assert {d.user.username for d in ministry} <= {"ministry", "ministry2"}
    assert Counter(d.user_id for d in decisions).most_common(1)[0][1] == 1
    completed = AuditEvent.objects.get(
        proposal=proposal, action="proposal.stage_completed", payload__stage=2
    )

    # And a ministry decision counted only after the committee stage had completed, and at most
    # one of them (quorum 1 approves the proposal; later ones meet an approved proposal)
    assert len(ministry) <= 1
    if ministry:
        recorded = AuditEvent.objects.get(
            action="decision.recorded", payload__decision=ministry[0].pk
        )
        assert recorded.sequence > completed.sequence
        assert proposal.state == S.APPROVED and proposal.current_stage is None
    else:
        assert (proposal.state, proposal.current_stage.order) == (S.IN_REVIEW, 3)
    assert sum(kind == "ok" for kind, _ in results) == len(committee) + len(ministry)
    assert_chain_is_one_contiguous_line()


def test_withdrawal_racing_decisions_leaves_no_decision_after_it(fund):
    # Given a proposal at the committee stage
    proposal = at_committee_stage(fund)
    author = fund.users["manager"]
    calls = [decide_call(fund, proposal, f"committee{n}") for n in range(1, 6)]
    calls.append(lambda: services.proposal_withdraw(proposal_id=proposal.pk, actor=author))
    calls.append(lambda: services.proposal_withdraw(proposal_id=proposal.pk, actor=author))

    # When the author withdraws it twice while the committee approves
    results = run_together(calls)

    # Then it is withdrawn once, and no decision was recorded after the withdrawal
    proposal.refresh_from_db()
    assert proposal.state == S.WITHDRAWN and proposal.current_stage is None
    withdraws = results[5:]
    assert sorted(kind for kind, _ in withdraws) == ["error", "ok"]
    assert all(isinstance(exc, InvalidTransition) for kind, exc in withdraws if kind == "error")
    errors = [exc for kind, exc in results[:5] if kind == "error"]
    assert all(isinstance(exc, CONTRACT_ERRORS) for exc in errors), errors
    withdrawn = AuditEvent.objects.get(proposal=proposal, action="proposal.withdrawn")
    recorded = AuditEvent.objects.filter(proposal=proposal, action="decision.recorded")
    assert all(event.sequence < withdrawn.sequence for event in recorded)
    assert recorded.count() == 1 + sum(kind == "ok" for kind, _ in results[:5])  # risk + these
    assert Decision.objects.filter(proposal=proposal, stage__order=2).count() <= 2
    assert_chain_is_one_contiguous_line()


def test_concurrent_role_grants_on_different_funds_keep_one_linear_chain(settings):
    # Given four funds with their people, and one new user per fund and role
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    funds = [FundBuilder.alem_like(prefix=f"f{n}_") for n in range(4)]
    grants = [
        (UserFactory(username=f"newcomer{n}_{role}"), builder.fund, role)
        for n, builder in enumerate(funds)
        for role in (R.VOTE_COMMITTEE, R.REVIEW_RISK, R.AUDIT)
    ]
    events_before = assert_chain_is_one_contiguous_line()

    # When every grant, and a new proposal in each fund, happen at the same moment
    calls = [grant_call(user, fund, role) for user, fund, role in grants]
    calls += [partial(builder.proposal, submit=True) for builder in funds]
    results = run_together(calls)

    # Then all of them succeeded, each wrote its events, and the chain is one verifiable line
    assert [kind for kind, _ in results] == ["ok"] * len(calls), results
    assert [result for _, result in results[: len(grants)]] == [True] * len(grants)
    total = assert_chain_is_one_contiguous_line()
    assert total == events_before + len(grants) + 2 * len(funds)  # created + submitted
    new_events = AuditEvent.objects.filter(sequence__gt=events_before)
    assert Counter(new_events.values_list("action", flat=True)) == Counter(
        {"role.granted": len(grants), "proposal.created": 4, "proposal.submitted": 4}
    )
    hashes = list(new_events.order_by("sequence").values_list("previous_hash", "hash"))
    assert all(later[0] == earlier[1] for earlier, later in pairwise(hashes))
    for user, fund, role in grants:
        assert role in roles_on_fund(user, fund)


def test_policy_drafts_racing_other_writes_on_the_same_fund_do_not_deadlock(fund):
    """Drafting or publishing a policy locks the fund row; every audit event of the fund
    references that row and is written under the chain lock. The two locks must never be waited
    for in opposite orders."""
    for round_ in range(3):
        # Given three proposals at the committee stage, two people without a role and a policy
        # draft that keeps the stages in force
        proposals = [at_committee_stage(fund) for _ in range(3)]
        newcomers = [UserFactory(username=f"newcomer{round_}_{n}") for n in range(2)]
        pending = services.policy_draft(
            actor=fund.users["fundadmin"], fund=fund.fund, stages=ALEM_STAGES
        )
        events_before = AuditEvent.objects.count()

        # When a publication, policy drafts, decisions, a new proposal and role grants happen
        # at once
        calls = [
            partial(services.policy_publish, actor=fund.users["fundadmin2"], policy_id=pending.pk),
            draft_call(fund, "fundadmin"),
            draft_call(fund, "fundadmin2"),
            *[
                decide_call(fund, proposal, f"committee{n}")
                for n, proposal in enumerate(proposals, start=1)
            ],
            fund.proposal,
            *[grant_call(user, fund.fund, R.AUDIT) for user in newcomers],
        ]
        results = run_together(calls)

        # Then every one of them went through: no deadlock, no lock timeout
        assert [kind for kind, _ in results] == ["ok"] * len(calls), results
        new_events = Counter(
            AuditEvent.objects.filter(sequence__gt=events_before).values_list("action", flat=True)
        )
        assert new_events == Counter(
            {
                "policy.published": 1,
                "policy.drafted": 2,
                "decision.recorded": 3,
                "proposal.created": 1,
                "role.granted": 2,
            }
        )
        assert_chain_is_one_contiguous_line()


def test_the_same_role_grant_twice_at_once_is_recorded_once(fund):
    # Given a user without a role on the fund
    newcomer = UserFactory(username="newcomer")
    events_before = AuditEvent.objects.count()

    # When two administrators grant them the same role at the same moment
    calls = [grant_call(newcomer, fund.fund, R.VOTE_COMMITTEE)] * 2
    results = run_together(calls)

    # Then one grant took effect and one found it already held; one event records it
    assert [kind for kind, _ in results] == ["ok", "ok"], results
    assert sorted(result for _, result in results) == [False, True], results
    granted = AuditEvent.objects.filter(sequence__gt=events_before, action="role.granted")
    assert granted.count() == 1
    assert_chain_is_one_contiguous_line()


def test_the_same_role_revoked_twice_at_once_is_recorded_once(fund):
    # Given a committee member
    member = fund.users["committee3"]
    events_before = AuditEvent.objects.count()

    # When two administrators revoke their role at the same moment
    revoke = partial(
        services.role_revoke, actor=None, user=member, fund=fund.fund, role=R.VOTE_COMMITTEE
    )
    results = run_together([revoke, revoke])

    # Then one revocation took effect and one found nothing to revoke; one event records it
    assert [kind for kind, _ in results] == ["ok", "ok"], results
    assert sorted(result for _, result in results) == [False, True], results
    revoked = AuditEvent.objects.filter(sequence__gt=events_before, action="role.revoked")
    assert revoked.count() == 1
    assert R.VOTE_COMMITTEE not in roles_on_fund(member, fund.fund)
    assert_chain_is_one_contiguous_line()


def test_racing_api_decisions_answer_only_with_the_contract_statuses(fund):
    # Given a proposal at the committee stage
    proposal = at_committee_stage(fund)
    url = f"/api/v1/proposals/{proposal.pk}/decisions/"
    racers = ["committee1", "committee1", "committee2", "committee3", "committee4", "risk2"]
    racers += ["manager", "auditor"]

    def post_as(username: str):
        token = otp_code(fund.users[username])  # before the race: each racer's code

        def call():
            client = APIClient()
            client.force_authenticate(user=fund.users[username])
            response = client.post(url, {"verdict": "approve", "otp_token": token}, format="json")
            return response.status_code, response.json()

        return call

    # When they all post their approval at the same moment
    results = run_together([post_as(name) for name in racers])

    # Then two were created and every other answer is a 403 or 409 with a rule code
    assert all(kind == "ok" for kind, _ in results), results
    answers = [answer for _, answer in results]
    assert sorted(status for status, _ in answers).count(201) == 2
    for status, body in answers:
        if status == 201:
            continue
        assert status in (403, 409), (status, body)
        expected = {403: {"not_permitted"}, 409: {"already_decided", "segregation_of_duties"}}
        assert body["code"] in expected[status], body
    by_name = dict(zip(racers[5:], answers[5:], strict=True))
    assert by_name["risk2"][0] == 403 and by_name["auditor"][0] == 403
    assert by_name["manager"] == (
        409,
        {"code": "segregation_of_duties", "detail": by_name["manager"][1]["detail"]},
    )
    proposal.refresh_from_db()
    assert (proposal.state, proposal.current_stage.order) == (S.IN_REVIEW, 3)
    assert (
        AuditEvent.objects.filter(
            proposal=proposal, action="proposal.stage_completed", payload__stage=2
        ).count()
        == 1
    )
    assert Decision.objects.filter(proposal=proposal, stage__order=2).count() == 2
    assert_chain_is_one_contiguous_line()


# ---------------------------------------------------------------------------------------------
# Rule 12 across proposals: two final approvals racing for the same cash (PostgreSQL)
# ---------------------------------------------------------------------------------------------


def test_two_final_approvals_cannot_both_spend_the_same_cash(monkeypatch):
    alem = FundBuilder.alem_like(cash_usd=Decimal("6000000.00"))
    Fund.objects.filter(pk=alem.fund.pk).update(max_asset_share=Decimal("1"))
    proposals = [alem.proposal(notional_usd=Decimal("4000000.00"), submit=True) for _ in range(2)]
    for proposal in proposals:
        for username in ("risk", "committee1", "committee2"):
            alem.decide(proposal, username)

    # Hold each request right after it has read the books, so both read before either writes
    # unless something serialises them (then the barrier times out and the second one waits).
    barrier = threading.Barrier(2, timeout=3)
    real_facts = services_compliance.compliance_facts

    def facts_then_wait(proposal, **options):
        result = real_facts(proposal, **options)
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait()
        return result

    monkeypatch.setattr(services_compliance, "compliance_facts", facts_then_wait)
    outcomes = {}

    # Two officials, one proposal each: a code is good once, so one person could not race.
    second = UserFactory(username="ministry2")
    services.role_grant(user=second, fund=alem.fund, role=R.APPROVE_MINISTRY)
    alem.users["ministry2"] = second

    def approve(proposal, official):
        try:
            alem.decide(proposal, official)
            outcomes[proposal.pk] = "approved"
        except ComplianceBlocked:
            outcomes[proposal.pk] = "compliance_blocked"
        except Exception as exc:  # anything else is a failure the assertion below shows
            outcomes[proposal.pk] = repr(exc)
        finally:
            connection.close()

    threads = [
        threading.Thread(target=approve, args=(p, official))
        for p, official in zip(proposals, ("ministry", "ministry2"), strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sorted(outcomes.values()) == ["approved", "compliance_blocked"]
    assert Proposal.objects.filter(state=S.APPROVED).count() == 1


def test_two_administrators_confirming_one_change_at_once_apply_it_once(fund):
    # Given a request by one site administrator, and two others who may confirm it
    requester, first, second = (
        UserFactory(username=name, is_staff=True, is_superuser=True)
        for name in ("root", "root2", "root3")
    )
    newcomer = UserFactory(username="newcomer")
    change = services.admin_change_request(
        actor=requester,
        kind="role_grant",
        user=newcomer,
        fund=fund.fund,
        role=R.AUDIT,
        reason="Audit season",
    )

    # When both confirm at the same moment
    results = run_together(
        [
            partial(
                services.admin_change_confirm,
                actor=admin,
                change_id=change.pk,
                otp_token=otp_code(admin),
            )
            for admin in (first, second)
        ]
    )

    # Then one confirmation took effect, the other was refused, and the role was granted once
    assert sorted(kind for kind, _ in results) == ["error", "ok"], results
    [error] = [result for kind, result in results if kind == "error"]
    assert isinstance(error, InvalidTransition)
    assert (
        AuditEvent.objects.filter(action="role.granted", payload__user_id=newcomer.pk).count() == 1
    )
    assert_chain_is_one_contiguous_line()


def test_a_revocation_racing_the_deciders_approval_never_leaves_it_counting(fund):
    # Given a proposal at the committee stage
    proposal = at_committee_stage(fund)
    member = fund.users["committee1"]

    # When committee1 approves while their role is revoked
    revoke = partial(
        services.role_revoke, actor=None, user=member, fund=fund.fund, role=R.VOTE_COMMITTEE
    )
    results = run_together([decide_call(fund, proposal, "committee1"), revoke])

    # Then either the approval was refused or it was recorded and voided: it does not count
    decided, revoked = results
    assert revoked[0] == "ok", results
    assert decided[0] == "ok" or isinstance(decided[1], NotPermitted), results
    assert not Decision.objects.filter(
        proposal=proposal, user=member, voided_at__isnull=True
    ).exists()
    proposal.refresh_from_db()
    assert proposal.current_stage.order == 2
    assert_chain_is_one_contiguous_line()


def decide_while_the_fund_is_locked(fund: FundBuilder, proposal: Proposal, username: str):
    """``username`` approves ``proposal`` while another transaction holds the fund's row lock
    (another proposal's final approval or submission, caught in the middle); the decision's
    transaction gives up on any lock after 2 s. Returns ``run_together``'s (outcome, result)."""
    held, release = threading.Event(), threading.Event()

    def hold():
        try:
            with transaction.atomic():
                lock_fund(fund.fund)
                held.set()
                release.wait(timeout=60)
        finally:
            connections.close_all()

    def decide():
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL lock_timeout = '2s'")
            return decide_call(fund, proposal, username)()

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(timeout=30)
        [answer] = run_together([decide])
    finally:
        release.set()
        holder.join(timeout=60)
    return answer


def test_a_decision_short_of_final_approval_does_not_wait_for_the_funds_lock(fund):
    proposal = at_committee_stage(fund)

    outcome, result = decide_while_the_fund_is_locked(fund, proposal, "committee1")

    assert outcome == "ok", result
    assert result.stage.order == 2
    proposal.refresh_from_db()
    assert (proposal.state, proposal.current_stage.order) == (S.IN_REVIEW, 2)


def test_the_final_approval_waits_for_the_funds_lock(fund):
    # The ministry's approval completes the last stage: it commits the fund's cash (rule 12).
    proposal = at_committee_stage(fund)
    fund.decide(proposal, "committee1")
    fund.decide(proposal, "committee2")

    outcome, result = decide_while_the_fund_is_locked(fund, proposal, "ministry")

    assert outcome == "error"
    assert isinstance(result, OperationalError) and "lock timeout" in str(result)
    proposal.refresh_from_db()
    assert proposal.state == S.IN_REVIEW
    assert not Decision.objects.filter(proposal=proposal, user=fund.users["ministry"]).exists()
