"""API tokens (red-team finding 4): hashed, expiring, one per device, revocable by their holder,
by an administrator, and by a change of password or deactivation.

Each attack is replayed through the API (or the page) it used, and each refusal is shown to
have changed nothing else: the other tokens keep working and keep their rows as they were.
"""

import datetime as dt
import hashlib
import importlib
import io

import pytest
from django.apps import apps
from django.contrib.auth.hashers import make_password
from django.core.management import call_command
from django.db import connection
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from governance import services
from governance.api_tokens import api_token_issue
from governance.models import ApiToken, AuditEvent
from tests.factories import UserFactory, otp_code, otp_device
from tests.test_csp import inline_code
from tests.web import signed_in

PASSWORD = "pw-for-tests-only"  # UserFactory's
NEW_PASSWORD = "a-new-passphrase-for-tests"
TOKEN = "/api/v1/auth/token/"
LOGOUT = "/api/v1/auth/logout/"
LOGOUT_ALL = "/api/v1/auth/logout-all/"
TOKENS = "/api/v1/auth/tokens/"
FUNDS = "/api/v1/funds/"
MIGRATION = importlib.import_module("governance.migrations.0012_api_tokens")


@pytest.fixture
def official(db):
    user = UserFactory(username="official")
    otp_device(user)
    return user


@pytest.fixture
def root(db):
    return UserFactory(username="root", is_staff=True, is_superuser=True)


def request_token(user, name=None, password=PASSWORD, code=None):
    body = {"username": user.username, "password": password}
    body["otp_token"] = otp_code(user) if code is None else code
    if name is not None:
        body["name"] = name
    return APIClient().post(TOKEN, body, format="json")


def issued(user, name=None) -> str:
    """A new token for ``user`` through the API, with both factors."""
    response = request_token(user, name=name)
    assert response.status_code == 200, response.content
    return response.json()["token"]


def api(token: str, keyword: str = "Token") -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"{keyword} {token}")
    return client


def works(token: str) -> bool:
    return api(token).get(FUNDS).status_code == 200


def sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def row(token: str) -> ApiToken:
    return ApiToken.objects.get(digest=sha256(token))


def snapshot(**only) -> list[tuple]:
    """Every token row as stored (or those matching ``only``), to show a refusal changed none."""
    return list(ApiToken.objects.filter(**only).order_by("pk").values_list())


# ---------------------------------------------------------------------------------------------
# Stored as a digest, never as the token
# ---------------------------------------------------------------------------------------------


def test_the_database_holds_the_tokens_sha256_never_the_token(official):
    token = issued(official, name="Treasury script")

    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM governance_apitoken")
        stored = [str(value) for record in cursor.fetchall() for value in record]
    dump = io.StringIO()
    call_command("dumpdata", "governance.apitoken", stdout=dump)

    assert token.startswith("alem_") and len(token) == len("alem_") + 43
    assert [value for value in stored if token in value] == []
    assert token not in dump.getvalue()
    stored_token = row(token)
    assert stored_token.digest == sha256(token)
    assert stored_token.prefix == token[:13]
    assert (stored_token.user, stored_token.name) == (official, "Treasury script")


def test_each_request_issues_a_new_token_for_its_device(official):
    before = timezone.now()

    response = request_token(official, name="Laptop")
    phone = issued(official, name="Phone")

    body = response.json()
    assert sorted(body) == ["expires_at", "id", "name", "token"]
    laptop = ApiToken.objects.get(pk=body["id"])
    assert (laptop.name, laptop.digest) == ("Laptop", sha256(body["token"]))
    assert dt.timedelta(hours=12) <= laptop.expires_at - before < dt.timedelta(hours=12, minutes=1)
    assert dt.datetime.fromisoformat(body["expires_at"]) == laptop.expires_at
    assert works(body["token"]) and works(phone)
    assert ApiToken.objects.filter(user=official).count() == 2


def test_a_request_without_a_name_gets_the_default_name(official):
    assert row(issued(official)).name == "API client"


def test_the_lifetime_comes_from_the_setting(official, settings):
    settings.ALEM_API_TOKEN_TTL_HOURS = 1.5

    token = row(issued(official))

    assert token.expires_at - token.created_at == dt.timedelta(hours=1, minutes=30)


def test_a_name_with_hidden_characters_is_refused_before_the_factors_are_checked(official):
    code = otp_code(official)

    response = request_token(official, name="Laptop\u202egpj.exe", code=code)

    assert response.status_code == 400
    assert "name" in response.json()
    assert not ApiToken.objects.exists()
    # The code was not spent: it still gets a token.
    assert request_token(official, name="Laptop", code=code).status_code == 200


def test_the_bearer_keyword_works_as_well(official):
    token = issued(official)

    assert api(token, keyword="Bearer").get(FUNDS).status_code == 200


def test_an_unknown_or_old_style_token_gets_401(official):
    token = issued(official)
    before = snapshot()

    answers = [
        api(value).get(FUNDS).status_code
        for value in ("alem_" + "x" * 43, "9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b", token[:-1])
    ]

    assert answers == [401, 401, 401]
    assert snapshot() == before


# ---------------------------------------------------------------------------------------------
# Expiry
# ---------------------------------------------------------------------------------------------


def test_an_expired_token_gets_401(official):
    token = issued(official)
    other = issued(official)
    now = timezone.now()
    ApiToken.objects.filter(digest=sha256(token)).update(
        created_at=now - dt.timedelta(hours=13), expires_at=now - dt.timedelta(seconds=1)
    )
    before = snapshot()

    response = api(token).get(FUNDS)

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert response.json()["detail"] == "This token has expired. Ask for a new one."
    assert snapshot() == before  # not even marked used
    assert works(other)


def test_last_used_is_written_at_most_once_a_minute(official):
    token = issued(official)
    assert row(token).last_used_at is None

    assert works(token)
    first = row(token).last_used_at
    assert works(token)
    assert row(token).last_used_at == first

    ApiToken.objects.filter(pk=row(token).pk).update(last_used_at=first - dt.timedelta(seconds=61))
    assert works(token)
    assert row(token).last_used_at > first


# ---------------------------------------------------------------------------------------------
# A new password or a deactivated account ends every token
# ---------------------------------------------------------------------------------------------


def test_a_password_changed_in_the_back_office_ends_every_token(official, root, client):
    laptop, phone = issued(official, name="Laptop"), issued(official, name="Phone")
    bystander = UserFactory(username="bystander")
    otp_device(bystander)
    theirs = issued(bystander)
    web = signed_in(client, root)

    response = web.post(
        reverse("admin:auth_user_password_change", args=[official.pk]),
        {"usable_password": "true", "password1": NEW_PASSWORD, "password2": NEW_PASSWORD},
    )

    assert response.status_code == 302
    official.refresh_from_db()
    assert official.check_password(NEW_PASSWORD)
    assert [works(laptop), works(phone), works(theirs)] == [False, False, True]
    assert api(laptop).get(FUNDS).json()["detail"] == (
        "This token was revoked (password changed). Ask for a new one."
    )
    assert {row(t).revoked_reason for t in (laptop, phone)} == {"password_changed"}
    assert row(theirs).revoked_at is None


def test_set_password_and_save_ends_every_token(official):
    token = issued(official)

    official.set_password(NEW_PASSWORD)
    official.save()

    assert not works(token)
    assert row(token).revoked_reason == "password_changed"
    # A token asked for with the new password works.
    assert works(
        request_token(official, password=NEW_PASSWORD, code=otp_code(official)).json()["token"]
    )


def test_a_password_hash_upgraded_at_sign_in_is_not_a_new_password(official, settings):
    # The stored hash is of an older hasher; checking the password re-hashes it (Django saves it
    # with update_fields=["password"]). The password is the same, so the tokens stay.
    token = issued(official)
    settings.PASSWORD_HASHERS = [
        "django.contrib.auth.hashers.PBKDF2PasswordHasher",
        "django.contrib.auth.hashers.MD5PasswordHasher",
    ]
    stored = official.password

    assert official.check_password(PASSWORD)

    official.refresh_from_db()
    assert official.password != stored and official.password.startswith("pbkdf2_sha256$")
    assert works(token)


def test_saving_other_fields_of_the_account_keeps_the_tokens(official):
    token = issued(official)

    official.first_name = "Aida"
    official.save()
    official.password = official.password  # the same hash, saved again
    official.save(update_fields=["password", "first_name"])

    assert works(token)


def test_a_password_set_directly_as_a_hash_ends_every_token_too(official):
    token = issued(official)

    official.password = make_password(NEW_PASSWORD)
    official.save()

    assert not works(token)


def test_deactivating_the_account_ends_every_token(official, root):
    token = issued(official)
    before = AuditEvent.objects.count()

    services.user_deactivate(actor=root, user=official)

    response = api(token).get(FUNDS)
    assert response.status_code == 401
    assert row(token).revoked_reason == "deactivated"
    assert AuditEvent.objects.count() == before + 1  # the deactivation's own event, no other


def test_an_account_saved_as_inactive_ends_every_token(official):
    token = issued(official)

    official.is_active = False
    official.save()

    assert not works(token)
    assert row(token).revoked_reason == "deactivated"


def test_a_deactivated_holder_is_refused_even_if_a_token_was_not_revoked(official):
    token = issued(official)
    type(official).objects.filter(pk=official.pk).update(is_active=False)  # no signal

    response = api(token).get(FUNDS)

    assert response.status_code == 401
    assert response.json()["detail"] == "This account is deactivated."


# ---------------------------------------------------------------------------------------------
# Signing out: this device, or every device
# ---------------------------------------------------------------------------------------------


def test_logout_ends_this_devices_token_and_leaves_the_other_devices_working(official):
    laptop, phone = issued(official, name="Laptop"), issued(official, name="Phone")

    response = api(laptop).post(LOGOUT)

    assert response.status_code == 204
    assert [works(laptop), works(phone)] == [False, True]
    assert row(laptop).revoked_reason == "signed_out"
    assert row(phone).revoked_at is None
    assert api(laptop).get(FUNDS).json()["detail"] == (
        "This token was revoked (signed out). Ask for a new one."
    )


def test_logout_all_ends_every_device_of_the_caller_only(official):
    laptop, phone = issued(official, name="Laptop"), issued(official, name="Phone")
    bystander = UserFactory(username="bystander")
    theirs = issued(bystander)

    response = api(phone).post(LOGOUT_ALL)

    assert response.status_code == 200
    assert response.json() == {"revoked": 2}
    assert [works(laptop), works(phone), works(theirs)] == [False, False, True]


def test_logout_without_a_token_revokes_nothing(official):
    token = issued(official)
    before = snapshot()
    session = APIClient()
    session.force_login(official)

    response = session.post(LOGOUT)

    assert response.status_code == 400
    assert snapshot() == before
    assert works(token)


def test_a_revoked_token_cannot_sign_out_or_list(official):
    token = issued(official)
    api(token).post(LOGOUT)
    before = snapshot()

    answers = [api(token).post(LOGOUT_ALL).status_code, api(token).get(TOKENS).status_code]

    assert answers == [401, 401]
    assert snapshot() == before


# ---------------------------------------------------------------------------------------------
# The caller's own tokens: listed and revoked, never anyone else's
# ---------------------------------------------------------------------------------------------


def test_the_token_list_shows_the_callers_tokens_never_a_value_or_digest(official):
    laptop, phone = issued(official, name="Laptop"), issued(official, name="Phone")
    api(laptop).post(LOGOUT)
    bystander = UserFactory(username="bystander")
    theirs = issued(bystander, name="Bystander's")

    response = api(phone).get(TOKENS)

    assert response.status_code == 200
    results = response.json()["results"]
    assert [(t["name"], t["current"], t["revoked_reason"]) for t in results] == [
        ("Phone", True, ""),
        ("Laptop", False, "signed_out"),
    ]
    assert sorted(results[0]) == [
        "created_at",
        "current",
        "expires_at",
        "id",
        "last_used_at",
        "name",
        "prefix",
        "revoked_at",
        "revoked_reason",
    ]
    assert results[0]["prefix"] == phone[:13]
    body = response.content.decode()
    for secret in (laptop, phone, theirs, sha256(laptop), sha256(phone), sha256(theirs)):
        assert secret not in body


def test_the_holder_revokes_one_token_and_the_other_keeps_working(official):
    laptop, phone = issued(official, name="Laptop"), issued(official, name="Phone")

    response = api(phone).delete(f"{TOKENS}{row(laptop).pk}/")

    assert response.status_code == 204
    assert [works(laptop), works(phone)] == [False, True]
    assert row(laptop).revoked_reason == "revoked_by_user"


def test_nobody_lists_or_revokes_another_persons_token(official):
    mine = issued(official)
    bystander = UserFactory(username="bystander")
    otp_device(bystander)
    theirs = issued(bystander)
    before = snapshot(user=bystander)

    listed = api(mine).get(TOKENS).json()["results"]
    revoked = api(mine).delete(f"{TOKENS}{row(theirs).pk}/")

    assert [t["id"] for t in listed] == [row(mine).pk]
    assert revoked.status_code == 404
    assert snapshot(user=bystander) == before
    assert works(theirs)


# ---------------------------------------------------------------------------------------------
# The "API tokens" page of the web app
# ---------------------------------------------------------------------------------------------


def test_the_page_lists_the_users_tokens_and_revokes_one(official, client):
    laptop, phone = issued(official, name="Laptop"), issued(official, name="Phone")
    ended = issued(official, name="Old tablet")
    api(ended).post(LOGOUT)
    bystander = UserFactory(username="bystander")
    theirs = issued(bystander, name="Bystander's script")
    web = signed_in(client, official)

    page = web.get(reverse("api-tokens"), HTTP_ACCEPT_LANGUAGE="en")

    html = page.content.decode()
    assert page.status_code == 200
    assert [t.name for t in page.context["live_tokens"]] == ["Phone", "Laptop"]
    assert [t.name for t in page.context["ended_tokens"]] == ["Old tablet"]
    assert row(laptop).prefix in html and "Signed out" in html
    assert "Bystander" not in html
    for secret in (laptop, phone, ended, theirs, sha256(laptop), sha256(phone), sha256(theirs)):
        assert secret not in html
    assert "script-src 'self'" in page["Content-Security-Policy"]
    assert inline_code(html) == []
    assert f'href="{reverse("api-tokens")}" aria-current="page"' in html

    response = web.post(reverse("api-tokens-revoke", args=[row(laptop).pk]))

    assert response.status_code == 302
    assert response["Location"] == reverse("api-tokens")
    assert [works(laptop), works(phone), works(theirs)] == [False, True, True]
    assert row(laptop).revoked_reason == "revoked_by_user"


def test_the_page_revokes_all_of_the_users_tokens_only(official, client):
    laptop, phone = issued(official), issued(official)
    bystander = UserFactory(username="bystander")
    theirs = issued(bystander)

    response = signed_in(client, official).post(reverse("api-tokens-revoke-all"))

    assert response.status_code == 302
    assert [works(laptop), works(phone), works(theirs)] == [False, False, True]


def test_the_page_cannot_revoke_another_persons_token(official, client):
    bystander = UserFactory(username="bystander")
    theirs = issued(bystander)
    before = snapshot()

    response = signed_in(client, official).post(reverse("api-tokens-revoke", args=[row(theirs).pk]))

    assert response.status_code == 404
    assert snapshot() == before
    assert works(theirs)


def test_the_page_needs_a_signed_in_user_and_revokes_by_post_only(official, client):
    token = issued(official)

    anonymous = client.get(reverse("api-tokens"))
    by_get = signed_in(client, official).get(reverse("api-tokens-revoke", args=[row(token).pk]))

    assert anonymous.status_code == 302
    assert anonymous["Location"].startswith(reverse("login"))
    assert by_get.status_code == 405
    assert works(token)


def test_every_page_links_to_the_tokens_page(official, client):
    html = signed_in(client, official).get(reverse("queue")).content.decode()

    assert f'href="{reverse("api-tokens")}"' in html


# ---------------------------------------------------------------------------------------------
# The back office: who holds which token, never the token; one administrator revokes
# ---------------------------------------------------------------------------------------------


def test_the_admin_shows_tokens_without_value_or_digest_and_revokes_selected(
    official, root, client
):
    laptop, phone = issued(official, name="Laptop"), issued(official, name="Phone")
    web = signed_in(client, root)
    changelist = reverse("admin:governance_apitoken_changelist")

    pages = [
        web.get(changelist),
        web.get(reverse("admin:governance_apitoken_change", args=[row(laptop).pk])),
    ]

    assert [page.status_code for page in pages] == [200, 200]
    for html in (page.content.decode() for page in pages):
        assert "Laptop" in html and row(laptop).prefix in html
        for secret in (laptop, phone, sha256(laptop), sha256(phone)):
            assert secret not in html
    assert web.get(reverse("admin:governance_apitoken_add")).status_code == 403

    response = web.post(
        changelist, {"action": "revoke_selected", "_selected_action": [row(laptop).pk]}
    )

    assert response.status_code == 302
    assert [works(laptop), works(phone)] == [False, True]
    assert row(laptop).revoked_reason == "revoked_by_admin"


def test_staff_who_are_not_site_administrators_cannot_revoke(official, client):
    from django.contrib.auth.models import Permission

    token = issued(official)
    clerk = UserFactory(username="clerk", is_staff=True)
    clerk.user_permissions.add(Permission.objects.get(codename="view_apitoken"))
    web = signed_in(client, clerk)
    changelist = reverse("admin:governance_apitoken_changelist")

    assert web.get(changelist).status_code == 200
    web.post(changelist, {"action": "revoke_selected", "_selected_action": [row(token).pk]})

    assert works(token)


# ---------------------------------------------------------------------------------------------
# DRF's plaintext tokens are gone
# ---------------------------------------------------------------------------------------------


def test_drfs_token_app_is_no_longer_installed():
    assert not apps.is_installed("rest_framework.authtoken")


def test_the_migration_deletes_drfs_plaintext_tokens(official):
    # The table as DRF's app left it on a database from before this change.
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE authtoken_token (key varchar(40) PRIMARY KEY, created timestamp, "
            "user_id integer NOT NULL UNIQUE)"
        )
        cursor.execute(
            "INSERT INTO authtoken_token VALUES (%s, %s, %s)",
            ["9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b", timezone.now(), official.pk],
        )
    editor = type("Editor", (), {"connection": connection})()

    MIGRATION.delete_plaintext_tokens(None, editor)

    with connection.cursor() as cursor:
        cursor.execute("SELECT COUNT(*) FROM authtoken_token")
        assert cursor.fetchone()[0] == 0
    # The old value is not a token of the new kind either.
    assert api("9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b").get(FUNDS).status_code == 401


def test_the_migration_does_nothing_where_drfs_table_never_was(db):
    assert "authtoken_token" not in connection.introspection.table_names()
    editor = type("Editor", (), {"connection": connection})()

    MIGRATION.delete_plaintext_tokens(None, editor)

    assert "authtoken_token" not in connection.introspection.table_names()


def test_a_token_issued_directly_is_stored_the_same_way(official):
    token, value = api_token_issue(user=official, name="Script")

    assert token.digest == sha256(value) and value not in str(token)
    assert works(value)
