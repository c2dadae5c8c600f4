"""The back office is on the record (issue 14, part 6): every change made in Django admin or by
a management command to people's access, fund roles, funds, assets, funding sources and
schedules writes an audit event with the actor (none for a command, which names itself and the
operating-system user instead) and each changed field's old and new value."""

import pytest
from django.urls import reverse
from django_celery_beat.models import PeriodicTask

from governance import services
from governance.models import AdminChange, AuditEvent
from portfolio.models import Asset, FundRole
from tests.commands import run_command
from tests.factories import UserFactory, otp_code
from tests.web import signed_in

R = FundRole
Kind = AdminChange.Kind


@pytest.fixture
def root(db):
    return UserFactory(username="root", is_staff=True, is_superuser=True)


@pytest.fixture
def root2(db):
    return UserFactory(username="root2", is_staff=True, is_superuser=True)


@pytest.fixture
def admin_web(client, root):
    return signed_in(client, root)


def url(name: str, *args) -> str:
    return reverse(f"admin:{name}", args=args)


def events_after(mark: int, **filters) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(sequence__gt=mark, **filters).order_by("sequence"))


def mark() -> int:
    last = AuditEvent.objects.order_by("-sequence").first()
    return last.sequence if last else 0


def change_and_confirm(root, root2, **change) -> AdminChange:
    requested = services.admin_change_request(actor=root, reason="Needed", **change)
    return services.admin_change_confirm(
        actor=root2, change_id=requested.pk, otp_token=otp_code(root2)
    )


# ---------------------------------------------------------------------------------------------
# People and roles: the four-eyes path carries old and new values
# ---------------------------------------------------------------------------------------------


def test_a_confirmed_role_grant_records_the_roles_held_before_and_after(alem, root, root2):
    auditor = alem.users["auditor"]
    before = mark()

    change = change_and_confirm(
        root, root2, kind=Kind.ROLE_GRANT, user=auditor, fund=alem.fund, role=R.PROPOSE
    )
    services.admin_changes_apply_due(now=change.effective_at)

    [granted] = events_after(before, action="role.granted")
    assert (granted.actor, granted.fund) == (root2, alem.fund)
    assert granted.payload["admin_change"] == change.pk
    assert granted.payload["changes"] == {"roles": {"old": ["audit"], "new": ["audit", "propose"]}}


def test_a_confirmed_superuser_grant_records_the_flags_before_and_after(alem, root, root2):
    clerk = UserFactory(username="clerk")
    before = mark()

    change = change_and_confirm(root, root2, kind=Kind.SUPERUSER_GRANT, user=clerk)

    [access] = events_after(before, action="user.access_changed")
    assert access.actor == root2
    assert access.payload["admin_change"] == change.pk
    assert access.payload["changes"] == {
        "is_staff": {"old": False, "new": True},
        "is_superuser": {"old": False, "new": True},
    }


def test_removing_back_office_access_records_only_what_changed(alem, root):
    clerk = UserFactory(username="clerk", is_staff=True)
    before = mark()

    services.user_access_remove(actor=root, user=clerk)

    [access] = events_after(before)
    assert access.payload["changes"] == {"is_staff": {"old": True, "new": False}}


def test_deactivation_and_a_password_set_in_the_admin_record_old_and_new(alem, root, admin_web):
    clerk = UserFactory(username="clerk")
    before = mark()

    services.user_deactivate(actor=root, user=clerk)
    admin_web.post(
        url("auth_user_password_change", clerk.pk),
        {"password1": "A-long-new-passphrase-9", "password2": "A-long-new-passphrase-9"},
    )

    deactivated, password = events_after(before)
    assert deactivated.payload["changes"] == {"is_active": {"old": True, "new": False}}
    assert (password.action, password.actor) == ("user.password_set", root)
    assert password.payload["changes"] == {"password": {"old": "set", "new": "set"}}
    assert "pbkdf2" not in str(password.payload)


def test_the_funds_auditor_sees_a_role_granted_on_their_fund(client, alem, root, root2):
    newcomer = UserFactory(username="newcomer")
    change_and_confirm(
        root, root2, kind=Kind.ROLE_GRANT, user=newcomer, fund=alem.fund, role=R.AUDIT
    )
    granted = AuditEvent.objects.filter(action="role.granted").order_by("-sequence").first()
    signed_in(client, alem.users["auditor"])

    page = client.get(reverse("audit-log"), {"action": "role.granted"})

    assert granted.fund == alem.fund
    assert granted.payload["user"] == "newcomer"
    assert granted.sequence in [row.event.sequence for row in page.context["rows"]]


# ---------------------------------------------------------------------------------------------
# Funds, assets, funding sources and schedules edited in the admin
# ---------------------------------------------------------------------------------------------


def test_an_admin_edit_of_a_fund_records_name_and_currency_old_and_new(alem, root, admin_web):
    before = mark()

    response = admin_web.post(
        url("portfolio_fund_change", alem.fund.pk),
        {"name": "Alem Reserve", "reporting_currency": "USD"},
    )

    assert response.status_code == 302, response.context["adminform"].form.errors
    [changed] = events_after(before)
    assert (changed.action, changed.actor, changed.fund) == (
        "back_office.record_changed",
        root,
        alem.fund,
    )
    assert changed.payload["model"] == "portfolio.fund"
    assert changed.payload["via"] == {"via": "admin"}
    assert changed.payload["changes"] == {
        "name": {"old": "Alem Crypto Fund", "new": "Alem Reserve"},
        "reporting_currency": {"old": "KZT", "new": "USD"},
    }


def test_an_admin_save_that_changes_nothing_records_nothing(alem, admin_web):
    before = mark()

    admin_web.post(
        url("portfolio_fund_change", alem.fund.pk),
        {"name": alem.fund.name, "reporting_currency": alem.fund.reporting_currency},
    )

    assert events_after(before) == []


def test_an_asset_created_then_edited_in_the_admin_is_recorded_each_time(alem, root, admin_web):
    before = mark()
    values = {"symbol": "ETH", "name": "Ether", "chain": "Ethereum", "peg_currency": ""}

    created = admin_web.post(url("portfolio_asset_add"), values)
    assert created.status_code == 302, created.context["adminform"].form.errors
    asset = Asset.objects.get(symbol="ETH")
    admin_web.post(url("portfolio_asset_change", asset.pk), {**values, "name": "Ethereum"})

    added, edited = events_after(before)
    assert (added.action, added.actor) == ("back_office.record_created", root)
    assert added.payload["changes"]["symbol"] == {"old": None, "new": "ETH"}
    assert edited.action == "back_office.record_changed"
    assert edited.payload["changes"] == {"name": {"old": "Ether", "new": "Ethereum"}}


def test_a_funding_source_edit_is_recorded_on_its_fund(alem, root, admin_web):
    source = alem.funding_source
    before = mark()

    response = admin_web.post(
        url("portfolio_fundingsource_change", source.pk),
        {"name": "National Fund transfer", "kind": source.kind},
    )

    assert response.status_code == 302, response.context["adminform"].form.errors
    [changed] = events_after(before)
    assert changed.fund == alem.fund
    assert changed.payload["changes"] == {
        "name": {"old": "Republican budget allocation", "new": "National Fund transfer"}
    }


def test_disabling_and_deleting_a_schedule_in_the_admin_is_recorded(db, root, admin_web):
    run_command("install_schedules")
    task = PeriodicTask.objects.get(task="governance.tasks.audit_chain_verify")
    before = mark()

    admin_web.post(
        url("django_celery_beat_periodictask_changelist"),
        {"action": "disable_tasks", "_selected_action": [task.pk]},
    )
    admin_web.post(url("django_celery_beat_periodictask_delete", task.pk), {"post": "yes"})

    disabled, deleted = events_after(before)
    assert (disabled.action, disabled.actor) == ("back_office.record_changed", root)
    assert disabled.payload["object"] == str(task)
    assert disabled.payload["changes"]["enabled"] == {"old": True, "new": False}
    assert (deleted.action, deleted.payload["object_id"]) == ("back_office.record_deleted", task.pk)
    assert deleted.payload["changes"]["task"] == {
        "old": "governance.tasks.audit_chain_verify",
        "new": None,
    }
    assert not PeriodicTask.objects.filter(pk=task.pk).exists()


# ---------------------------------------------------------------------------------------------
# Management commands: no actor, the command and the operating-system user named
# ---------------------------------------------------------------------------------------------


def test_install_schedules_records_each_task_it_creates_or_puts_back(db):
    before = mark()
    run_command("install_schedules")
    created = events_after(before)
    task = PeriodicTask.objects.get(task="governance.tasks.audit_chain_verify")
    task.enabled = False
    task.save()

    after_install = mark()
    run_command("install_schedules", reset=True)

    assert {e.action for e in created} == {"back_office.record_created"}
    assert len(created) == PeriodicTask.objects.exclude(name="celery.backend_cleanup").count()
    assert created[0].actor is None
    assert created[0].payload["via"]["via"] == "command"
    assert created[0].payload["via"]["command"] == "install_schedules"
    assert "os_user" in created[0].payload["via"]
    [reset] = events_after(after_install)
    assert reset.payload["object_id"] == task.pk
    assert reset.payload["changes"] == {"enabled": {"old": False, "new": True}}


def test_grant_role_from_the_command_line_names_the_command(alem):
    newcomer = UserFactory(username="newcomer")
    before = mark()

    run_command("grant_role", "newcomer", R.AUDIT, alem.fund.slug)

    [granted] = events_after(before)
    assert (granted.action, granted.actor, granted.fund) == ("role.granted", None, alem.fund)
    assert granted.payload["via"]["command"] == "grant_role"
    assert granted.payload["changes"] == {"roles": {"old": [], "new": ["audit"]}}
    assert granted.payload["user_id"] == newcomer.pk


# ---------------------------------------------------------------------------------------------
# Accounts changed outside the services: Django's own commands, a shell
# ---------------------------------------------------------------------------------------------


def test_createsuperuser_is_recorded_with_its_command_and_no_password(db, monkeypatch):
    monkeypatch.setattr("sys.argv", ["manage.py", "createsuperuser"])
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "A-long-new-passphrase-9")
    before = mark()

    run_command("createsuperuser", "--noinput", username="chief", email="chief@example.org")

    [created] = events_after(before)
    assert (created.action, created.actor) == ("user.account_changed", None)
    assert created.payload["created"] is True
    assert created.payload["via"]["command"] == "createsuperuser"
    assert created.payload["changes"] == {
        "is_active": {"old": None, "new": True},
        "is_staff": {"old": None, "new": True},
        "is_superuser": {"old": None, "new": True},
        "password": {"old": "none", "new": "set"},
    }


def test_a_password_or_flag_changed_in_a_shell_is_recorded(db):
    clerk = UserFactory(username="clerk")
    before = mark()

    clerk.set_password("A-long-new-passphrase-9")
    clerk.is_staff = True
    clerk.save()
    clerk.save()  # nothing changed: nothing recorded

    [changed] = events_after(before)
    assert (changed.action, changed.payload["via"]) == ("user.account_changed", {"via": "direct"})
    assert changed.payload["changes"] == {
        "is_staff": {"old": False, "new": True},
        "password": {"old": "set", "new": "set"},
    }


def test_a_sign_in_or_a_service_change_is_not_recorded_twice(alem, root):
    clerk = UserFactory(username="clerk", is_staff=True)
    before = mark()

    clerk.save(update_fields=["last_login"])
    services.user_access_remove(actor=root, user=clerk)

    assert [e.action for e in events_after(before)] == ["user.access_changed"]


def test_an_interval_changed_in_the_admin_is_recorded(db, root, admin_web):
    run_command("install_schedules")
    interval = PeriodicTask.objects.get(task="governance.tasks.audit_chain_verify").interval
    before = mark()

    response = admin_web.post(
        url("django_celery_beat_intervalschedule_change", interval.pk),
        {
            "every": 2,
            "period": interval.period,
            # the tasks on this interval, listed inline (none changed)
            "periodictask_set-TOTAL_FORMS": 0,
            "periodictask_set-INITIAL_FORMS": 0,
        },
    )

    assert response.status_code == 302, response.context["adminform"].form.errors
    [changed] = events_after(before)
    assert (changed.action, changed.actor) == ("back_office.record_changed", root)
    assert changed.payload["model"] == "django_celery_beat.intervalschedule"
    assert changed.payload["changes"] == {"every": {"old": interval.every, "new": 2}}
