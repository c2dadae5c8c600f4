"""The management commands verify_audit and grant_role (seed_demo: ``test_seed_demo.py``)."""

from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError
from guardian.models import UserObjectPermission

from governance.models import AuditEvent
from governance.roles import roles_on_fund
from portfolio.models import FundRole
from tests.commands import run_command as run
from tests.factories import UserFactory
from tests.tampering import superuser_sql

User = get_user_model()
R = FundRole
D = Decimal


# ---------------------------------------------------------------------------------------------
# verify_audit
# ---------------------------------------------------------------------------------------------


def test_verify_audit_prints_the_length_of_an_intact_chain(alem):
    assert run("verify_audit").strip() == "Audit chain intact: 14 events."


def test_verify_audit_fails_naming_the_first_altered_row(alem):
    target = AuditEvent.objects.get(sequence=6)
    with superuser_sql():
        AuditEvent.objects.filter(pk=target.pk).update(payload={"forged": True})

    with pytest.raises(CommandError) as failed:
        run("verify_audit")

    assert str(failed.value) == (
        f"Audit chain broken at event #6 (id {target.pk}): its content does not match its "
        "hash. 5 events before it verify."
    )


def test_verify_audit_fails_when_the_last_row_is_gone(alem):
    with superuser_sql():
        AuditEvent.objects.filter(sequence=14).delete()

    with pytest.raises(CommandError, match=r"^Audit chain broken at event #14: the chain head"):
        run("verify_audit")


# ---------------------------------------------------------------------------------------------
# grant_role
# ---------------------------------------------------------------------------------------------


def test_grant_role_grants_and_audits(alem):
    newcomer = UserFactory(username="newcomer")

    output = run("grant_role", "newcomer", "vote_committee", "alem")

    assert output.strip() == "vote_committee on alem granted to newcomer."
    assert roles_on_fund(newcomer, alem.fund) == {"vote_committee"}
    event = AuditEvent.objects.order_by("-sequence").first()
    assert (event.action, event.actor, event.fund) == ("role.granted", None, alem.fund)
    assert event.payload["user"] == "newcomer"


def test_grant_role_twice_does_nothing_the_second_time(alem):
    run("grant_role", "committee1", "vote_committee", "alem")
    events = AuditEvent.objects.count()

    output = run("grant_role", "committee1", "vote_committee", "alem")

    assert output.strip() == "Nothing to do: committee1 already holds vote_committee on alem."
    assert AuditEvent.objects.count() == events


def test_grant_role_revoke_revokes_and_audits(alem):
    output = run("grant_role", "committee3", "vote_committee", "alem", "--revoke")

    assert output.strip() == "vote_committee on alem revoked from committee3."
    assert roles_on_fund(alem.users["committee3"], alem.fund) == set()
    assert AuditEvent.objects.order_by("-sequence").first().action == "role.revoked"

    output = run("grant_role", "committee3", "vote_committee", "alem", "--revoke")
    assert output.strip() == "Nothing to do: committee3 did not hold vote_committee on alem."


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("ghost", "propose", "alem"), "No user named 'ghost'."),
        (("manager", "propose", "atlantis"), "No fund with slug 'atlantis'."),
        (("manager", "superpowers", "alem"), "invalid choice: 'superpowers'"),
    ],
    ids=["unknown user", "unknown fund", "unknown role"],
)
def test_grant_role_explains_what_it_cannot_find(alem, args, message):
    events = AuditEvent.objects.count()
    permissions = UserObjectPermission.objects.count()

    with pytest.raises(CommandError) as failed:
        run("grant_role", *args)

    assert message in str(failed.value)
    assert AuditEvent.objects.count() == events
    assert UserObjectPermission.objects.count() == permissions
