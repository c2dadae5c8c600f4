"""Signing in with two factors, the lockout, enrolling an authenticator, sign-out and the admin."""

import datetime as dt
import re
import time
from base64 import b64decode

import pytest
from axes.models import AccessAttempt, AccessLog
from django.core.management import CommandError, call_command
from django.test import Client, RequestFactory
from django.urls import resolve, reverse
from django.utils import timezone
from django_otp import DEVICE_ID_SESSION_KEY
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice
from rest_framework.test import APIClient

from alem.middleware import SecondFactorEnrolmentMiddleware
from governance.api_tokens import token_digest
from governance.models import ApiToken, AuditEvent
from governance.services import role_grant
from portfolio.models import FundRole
from tests.factories import FundFactory, UserFactory, otp_code, otp_device
from tests.web import signed_in

PASSWORD = "pw-for-tests-only"  # UserFactory's
GENERIC_ERROR = "The username, password or code is wrong. Check them and try again."
OTHER_IP = "10.9.8.7"
TOKEN = "/api/v1/auth/token/"
# Four addresses to guess from, none of them OTHER_IP or the client's default.
ADDRESSES = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"]
LOCKED_OUT = "Too many failed sign-ins"


def sign_in(client, username, password=PASSWORD, code="", ip="127.0.0.1", **extra):
    data = {"username": username, "password": password, "otp_token": code, **extra}
    return client.post(reverse("login"), data, REMOTE_ADDR=ip)


def wrong_code(user) -> str:
    """A six-digit code the user's device rejects now (none of the steps it tolerates)."""
    device = otp_device(user)
    now = time.time()
    accepted = set()
    for offset in (-1, 0, 1):
        totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
        totp.time = now + offset * device.step
        accepted.add(totp.token())
    return next(f"{n:06d}" for n in range(1, 10) if n not in accepted)


def failures(username, ip="127.0.0.1") -> int:
    attempt = AccessAttempt.objects.filter(username=username, ip_address=ip).first()
    return attempt.failures_since_start if attempt else 0


def errors(response) -> list[str]:
    return [str(e) for e in response.context["form"].non_field_errors()]


def signed_in_user_id(client):
    return client.session.get("_auth_user_id")


# ---------------------------------------------------------------------------------------------
# Sign-in
# ---------------------------------------------------------------------------------------------


def test_user_without_authenticator_signs_in_with_the_password_alone(client, db):
    user = UserFactory(username="newcomer")

    response = sign_in(client, "newcomer")

    assert response.status_code == 302
    assert response["Location"] == reverse("queue")
    assert signed_in_user_id(client) == str(user.pk)
    assert DEVICE_ID_SESSION_KEY not in client.session


def test_user_with_authenticator_signs_in_with_the_code_and_the_session_is_verified(client, db):
    user = UserFactory(username="officer")
    device = otp_device(user)

    response = sign_in(client, "officer", code=otp_code(user))

    assert response.status_code == 302
    assert signed_in_user_id(client) == str(user.pk)
    assert client.session[DEVICE_ID_SESSION_KEY] == device.persistent_id


def test_code_typed_with_a_space_is_accepted(client, db):
    user = UserFactory(username="officer")
    code = otp_code(user)

    response = sign_in(client, "officer", code=f"{code[:3]} {code[3:]}")

    assert response.status_code == 302
    assert signed_in_user_id(client) == str(user.pk)


@pytest.mark.parametrize("code", ["", "wrong"])
def test_right_password_with_a_missing_or_wrong_code_is_a_counted_failure(client, db, code):
    user = UserFactory(username="officer")
    device = otp_device(user)
    code = wrong_code(user) if code == "wrong" else code

    response = sign_in(client, "officer", code=code)

    assert response.status_code == 200
    assert errors(response) == [GENERIC_ERROR]
    assert signed_in_user_id(client) is None
    assert DEVICE_ID_SESSION_KEY not in client.session
    assert failures("officer") == 1
    device.refresh_from_db()
    assert device.last_t == -1


def test_every_failure_reads_the_same_so_usernames_cannot_be_probed(client, db):
    user = UserFactory(username="officer")
    otp_device(user)
    UserFactory(username="plain")

    unknown = sign_in(client, "nobody")
    wrong_password = sign_in(client, "plain", password="wrong")
    wrong_password_with_device = sign_in(client, "officer", password="wrong", code=otp_code(user))
    missing_code = sign_in(client, "officer")

    for response in (unknown, wrong_password, wrong_password_with_device, missing_code):
        assert response.status_code == 200
        assert errors(response) == [GENERIC_ERROR]
        assert response.context["form"]["username"].errors == []
        assert response.context["form"]["password"].errors == []
        assert response.context["form"]["otp_token"].errors == []
    assert signed_in_user_id(client) is None


def test_a_code_is_not_checked_when_the_password_is_wrong(client, db):
    # Otherwise a guesser could burn the person's codes and throttle their device.
    user = UserFactory(username="officer")
    device = otp_device(user)

    sign_in(client, "officer", password="wrong", code=wrong_code(user))

    device.refresh_from_db()
    assert device.throttling_failure_count == 0


def test_the_login_page_shows_the_code_field_with_its_help(client, db):
    response = client.get(reverse("login"))

    assert response.status_code == 200
    page = response.content.decode()
    assert 'name="otp_token"' in page
    assert 'autocomplete="one-time-code"' in page
    assert "Leave it empty if you have not set up an authenticator yet." in page


def test_a_safe_next_address_is_followed_after_sign_in(client, db):
    UserFactory(username="newcomer")

    response = sign_in(client, "newcomer", next="/funds/1/")

    assert response["Location"] == "/funds/1/"


def test_a_next_address_on_another_site_is_ignored(client, db):
    UserFactory(username="newcomer")

    response = sign_in(client, "newcomer", next="https://evil.example/steal")

    assert response["Location"] == reverse("queue")


# ---------------------------------------------------------------------------------------------
# Lockout (django-axes)
# ---------------------------------------------------------------------------------------------


def age_failures(**elapsed) -> None:
    """Move every counted failure back in time, as if ``elapsed`` had passed since it."""
    AccessAttempt.objects.update(attempt_time=timezone.now() - dt.timedelta(**elapsed))


def request_token(username, password=PASSWORD, code="", ip="127.0.0.1"):
    body = {"username": username, "password": password, "otp_token": code}
    return APIClient().post(TOKEN, body, format="json", REMOTE_ADDR=ip)


def test_guesses_at_one_account_from_four_addresses_lock_that_account(client, db, settings):
    settings.AXES_COOLOFF_TIME = 0.25
    officer = UserFactory(username="officer")
    device = otp_device(officer)
    UserFactory(username="colleague")

    # Four rounds of guesses from four addresses: wrong passwords, and from the last address the
    # right password with a wrong code.
    guesses = [(ip, "wrong", "") for ip in ADDRESSES[:3]]
    guesses.append((ADDRESSES[3], PASSWORD, wrong_code(officer)))
    answers = [
        sign_in(Client(), "officer", password, code, ip=ip).status_code
        for _ in range(4)
        for ip, password, code in guesses
    ]
    # Even the right password and code, from a fifth address, after the fifth failure.
    with_right_credentials = sign_in(client, "officer", code=otp_code(officer), ip=OTHER_IP)

    assert answers == [200] * 4 + [429] * 12
    assert with_right_credentials.status_code == 429
    page = with_right_credentials.content.decode()
    assert LOCKED_OUT in page
    assert "You can try again in 15 minutes" in page
    assert signed_in_user_id(client) is None
    device.refresh_from_db()
    assert device.last_t == -1  # the code was never checked, so it is not spent
    assert not AccessLog.objects.exists()
    # The lockout is the account's: another account signs in from one of those addresses.
    assert sign_in(Client(), "colleague", ip=ADDRESSES[0]).status_code == 302

    # Once the cool-off has passed since the last failure, the account signs in again.
    age_failures(minutes=14)
    assert sign_in(Client(), "officer", code=otp_code(officer), ip=OTHER_IP).status_code == 429
    age_failures(minutes=15, seconds=1)
    response = sign_in(client, "officer", code=otp_code(officer), ip=OTHER_IP)

    assert response.status_code == 302
    assert signed_in_user_id(client) == str(officer.pk)


def test_a_spray_of_eleven_accounts_from_one_address_locks_that_address(client, db, settings):
    settings.AXES_COOLOFF_TIME = 0.25
    sprayed = [UserFactory(username=f"official{n}") for n in range(11)]
    bystander = UserFactory(username="bystander")
    device = otp_device(bystander)

    # One guess at each of eleven accounts, from one address.
    answers = [
        sign_in(Client(), user.username, password="wrong", ip=OTHER_IP).status_code
        for user in sprayed
    ]
    # Then the right password and code of an account nobody guessed at, from that address.
    from_that_address = sign_in(client, "bystander", code=otp_code(bystander), ip=OTHER_IP)

    assert answers == [200] * 4 + [429] * 7
    assert from_that_address.status_code == 429
    assert LOCKED_OUT in from_that_address.content.decode()
    assert signed_in_user_id(client) is None
    device.refresh_from_db()
    assert device.last_t == -1
    assert not AccessLog.objects.exists()
    # The lockout is the address's: the same accounts sign in from another address.
    assert (
        sign_in(Client(), "bystander", code=otp_code(bystander), ip=ADDRESSES[0]).status_code == 302
    )
    assert sign_in(Client(), "official0", ip=ADDRESSES[0]).status_code == 302

    # Once the cool-off has passed since the last failure, the address may sign in again.
    age_failures(minutes=15, seconds=1)
    response = sign_in(client, "bystander", code=otp_code(bystander), ip=OTHER_IP)

    assert response.status_code == 302
    assert signed_in_user_id(client) == str(bystander.pk)


def test_signing_in_to_one_account_does_not_clear_the_failures_of_its_address(client, db):
    # Otherwise the holder of one valid account could guess at the others without end.
    UserFactory(username="insider")
    targets = [UserFactory(username=f"official{n}") for n in range(4)]
    for target in targets:
        sign_in(Client(), target.username, password="wrong", ip=OTHER_IP)

    assert sign_in(Client(), "insider", ip=OTHER_IP).status_code == 302
    assert sign_in(Client(), "official0", password="wrong", ip=OTHER_IP).status_code == 429

    assert sign_in(client, "insider", ip=OTHER_IP).status_code == 429
    assert signed_in_user_id(client) is None


def test_a_success_does_not_clear_the_accounts_failures_before_the_cool_off(client, db):
    UserFactory(username="officer")
    for ip in ADDRESSES:
        sign_in(Client(), "officer", password="wrong", ip=ip)

    assert sign_in(Client(), "officer").status_code == 302
    assert sign_in(Client(), "officer", password="wrong").status_code == 429

    assert sign_in(client, "officer").status_code == 429
    assert signed_in_user_id(client) is None


def test_the_lockout_ends_after_the_cool_off(client, db, settings):
    settings.AXES_COOLOFF_TIME = 0.25
    UserFactory(username="officer")
    for _ in range(5):
        sign_in(client, "officer", password="wrong")
    assert sign_in(client, "officer").status_code == 429

    # The last attempt (which started the wait again) was 14 minutes ago: still locked.
    age_failures(minutes=14)
    assert sign_in(client, "officer").status_code == 429
    # And 15 minutes and a second ago: the account may try again.
    age_failures(minutes=15, seconds=1)
    response = sign_in(client, "officer")

    assert response.status_code == 302
    assert failures("officer") == 0


def test_the_lockout_page_names_the_cool_off_from_settings(client, db, settings):
    settings.AXES_COOLOFF_TIME = 1.0
    UserFactory(username="officer")

    for _ in range(5):
        response = sign_in(client, "officer", password="wrong")

    assert response.status_code == 429
    assert "You can try again in 60 minutes" in response.content.decode()


def test_the_lockout_page_says_both_counts_and_when_to_retry(client, db, settings):
    settings.AXES_COOLOFF_TIME = 0.25
    UserFactory(username="officer")

    for _ in range(5):
        response = sign_in(client, "officer", password="wrong")

    page = response.content.decode()
    assert response.status_code == 429
    assert response["Retry-After"] == "900"
    assert response["Content-Type"].startswith("text/html")
    assert "for this username, from any address, or from your address" in page
    assert "for this username from your address" not in page


def test_a_locked_out_token_request_gets_the_apis_json_with_retry_after(db, settings):
    settings.AXES_COOLOFF_TIME = 0.25
    officer = UserFactory(username="officer")
    otp_device(officer)
    for _ in range(5):
        request_token("officer", password="wrong", code="123456", ip=ADDRESSES[0])

    response = request_token("officer", code=otp_code(officer), ip=OTHER_IP)

    assert response.status_code == 429
    assert response["Content-Type"] == "application/json"
    assert response["Retry-After"] == "900"
    assert response.json() == {
        "code": "locked_out",
        "detail": "Too many failed sign-ins for this username or from this address. Try again "
        "in 15 minutes; every attempt before then starts the wait again.",
        "retry_after": 900,
    }
    assert not ApiToken.objects.exists()


# The API token endpoint checks the same form, so django-axes counts and refuses it the same way.


def test_guesses_at_one_account_through_the_token_endpoint_lock_that_account(client, db, settings):
    settings.AXES_COOLOFF_TIME = 0.25
    officer = UserFactory(username="officer")
    otp_device(officer)

    answers = [
        request_token("officer", code=wrong_code(officer), ip=ip).status_code
        for _ in range(2)
        for ip in ADDRESSES
    ]
    with_right_credentials = request_token("officer", code=otp_code(officer), ip=OTHER_IP)

    assert answers == [400] * 4 + [429] * 4
    assert with_right_credentials.status_code == 429
    assert with_right_credentials.json()["code"] == "locked_out"
    assert LOCKED_OUT in with_right_credentials.json()["detail"]
    assert not ApiToken.objects.exists()
    # The sign-in page refuses the account too: one count for both ways in.
    assert sign_in(client, "officer", code=otp_code(officer), ip=OTHER_IP).status_code == 429
    assert signed_in_user_id(client) is None

    age_failures(minutes=15, seconds=1)
    response = request_token("officer", code=otp_code(officer), ip=OTHER_IP)

    assert response.status_code == 200
    assert ApiToken.objects.get(user=officer).digest == token_digest(response.json()["token"])


def test_a_spray_through_the_token_endpoint_locks_that_address(db, settings):
    settings.AXES_COOLOFF_TIME = 0.25
    sprayed = [UserFactory(username=f"official{n}") for n in range(11)]
    bystander = UserFactory(username="bystander")
    otp_device(bystander)

    answers = [
        request_token(user.username, password="wrong", code="123456", ip=OTHER_IP).status_code
        for user in sprayed
    ]
    from_that_address = request_token("bystander", code=otp_code(bystander), ip=OTHER_IP)

    assert answers == [400] * 4 + [429] * 7
    assert from_that_address.status_code == 429
    assert not ApiToken.objects.exists()
    from_another_address = request_token("bystander", code=otp_code(bystander), ip=ADDRESSES[0])
    assert from_another_address.status_code == 200

    age_failures(minutes=15, seconds=1)
    response = request_token("bystander", code=otp_code(bystander), ip=OTHER_IP)

    assert response.status_code == 200
    assert ApiToken.objects.filter(user=bystander).count() == 2  # one per request, per device
    assert ApiToken.objects.filter(digest=token_digest(response.json()["token"])).exists()


# The address counted is the client's behind ALEM_TRUSTED_PROXIES proxies (alem.client_address),
# never one the client wrote into X-Forwarded-For.
PROXY_IP = "192.0.2.10"


def sign_in_through(client, username, forwarded_for, password=PASSWORD, code="", ip=PROXY_IP):
    data = {"username": username, "password": password, "otp_token": code}
    return client.post(reverse("login"), data, REMOTE_ADDR=ip, HTTP_X_FORWARDED_FOR=forwarded_for)


def counted_addresses() -> set[str]:
    return set(AccessAttempt.objects.values_list("ip_address", flat=True))


def test_without_trusted_proxies_a_forged_forwarded_for_changes_nothing(client, db, settings):
    settings.ALEM_TRUSTED_PROXIES = 0
    sprayed = [UserFactory(username=f"official{n}") for n in range(5)]
    bystander = UserFactory(username="bystander")

    # Five guesses from one address, each claiming another in X-Forwarded-For.
    answers = [
        sign_in_through(
            Client(), user.username, f"10.0.0.{n}", password="wrong", ip=OTHER_IP
        ).status_code
        for n, user in enumerate(sprayed, start=1)
    ]
    forged_again = sign_in_through(client, "bystander", ADDRESSES[0], ip=OTHER_IP)

    assert answers == [200] * 4 + [429]
    assert counted_addresses() == {OTHER_IP}
    assert forged_again.status_code == 429
    assert signed_in_user_id(client) is None
    assert sign_in(Client(), "bystander", ip=ADDRESSES[0]).status_code == 302
    assert bystander.is_active


def test_behind_one_trusted_proxy_each_client_address_counts_on_its_own(client, db, settings):
    settings.ALEM_TRUSTED_PROXIES = 1
    UserFactory(username="officer")

    # Four failures through the proxy from one client, one from another client.
    for _ in range(4):
        sign_in_through(Client(), "official-a", ADDRESSES[0], password="wrong")
    sign_in_through(Client(), "official-b", ADDRESSES[1], password="wrong")

    assert counted_addresses() == {ADDRESSES[0], ADDRESSES[1]}
    assert failures("official-a", ip=ADDRESSES[0]) == 4
    assert failures("official-b", ip=ADDRESSES[1]) == 1
    # Neither address reached five, and the proxy's own address counts for nothing.
    assert sign_in_through(client, "officer", ADDRESSES[1]).status_code == 302
    assert signed_in_user_id(client) is not None


def test_behind_one_trusted_proxy_fake_leading_entries_cannot_move_the_count(client, db, settings):
    settings.ALEM_TRUSTED_PROXIES = 1
    sprayed = [UserFactory(username=f"official{n}") for n in range(5)]
    bystander = UserFactory(username="bystander")

    # The client writes a new fake address in front each time; the proxy appends the real one.
    answers = [
        sign_in_through(
            Client(), user.username, f"10.0.0.{n}, {OTHER_IP}", password="wrong"
        ).status_code
        for n, user in enumerate(sprayed, start=1)
    ]
    from_that_client = sign_in_through(client, "bystander", f"{ADDRESSES[0]}, {OTHER_IP}")

    assert answers == [200] * 4 + [429]
    assert counted_addresses() == {OTHER_IP}
    assert from_that_client.status_code == 429
    assert signed_in_user_id(client) is None
    # Another client through the same proxy is not locked out.
    assert sign_in_through(Client(), "bystander", ADDRESSES[1]).status_code == 302
    assert bystander.is_active


# ---------------------------------------------------------------------------------------------
# Sign-out
# ---------------------------------------------------------------------------------------------


def test_sign_out_is_post_only(client, db):
    user = UserFactory(username="officer")
    signed_in(client, user)

    refused = client.get(reverse("logout"))
    assert refused.status_code == 405
    assert signed_in_user_id(client) == str(user.pk)

    response = client.post(reverse("logout"))

    assert response.status_code == 302
    assert response["Location"] == reverse("login")
    assert signed_in_user_id(client) is None


# ---------------------------------------------------------------------------------------------
# Enrolling an authenticator
# ---------------------------------------------------------------------------------------------


def test_enrolment_needs_a_signed_in_user(client, db):
    response = client.get(reverse("otp-enrol"))

    assert response.status_code == 302
    assert response["Location"] == f"{reverse('login')}?next={reverse('otp-enrol')}"


def test_enrolment_from_qr_code_to_a_verified_session(alem, client):
    risk = alem.users["risk"]
    client.force_login(risk)

    page = client.get(reverse("otp-enrol"))

    # One device awaiting confirmation, shown as a QR code of its otpauth:// URI and its key.
    device = TOTPDevice.objects.get(user=risk)
    assert (device.name, device.confirmed) == ("Authenticator", False)
    html = page.content.decode()
    qr = re.search(r'<img src="data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)" alt="([^"]+)"', html)
    assert qr is not None
    assert b64decode(qr.group(1)).startswith(b"<svg")
    assert qr.group(2) == "QR code that adds your Alem account to an authenticator app"
    assert page.context["secret"].replace(" ", "") in device.config_url
    # A second visit shows the same device, not a new one.
    assert client.get(reverse("otp-enrol")).context["secret"] == page.context["secret"]
    assert TOTPDevice.objects.filter(user=risk).count() == 1

    # A wrong code confirms nothing.
    refused = client.post(reverse("otp-enrol"), {"otp_token": wrong_code(risk)})
    assert refused.status_code == 200
    assert refused.context["form"]["otp_token"].errors
    device.refresh_from_db()
    assert device.confirmed is False
    assert DEVICE_ID_SESSION_KEY not in client.session
    TOTPDevice.objects.filter(pk=device.pk).update(
        throttling_failure_count=0, throttling_failure_timestamp=None
    )

    # The app's code, computed from the device key as the app does, confirms it.
    code = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift).token()
    response = client.post(reverse("otp-enrol"), {"otp_token": f"{code:06d}"})

    assert response.status_code == 302
    assert response["Location"] == reverse("queue")
    device.refresh_from_db()
    assert device.confirmed is True
    assert client.session[DEVICE_ID_SESSION_KEY] == device.persistent_id
    enrolled = AuditEvent.objects.get(action="second_factor.enrolled")
    assert (enrolled.actor, enrolled.payload["device"]) == (risk, device.persistent_id)
    # Now the page says the authenticator is set up and names it; nothing new is offered.
    after = client.get(reverse("otp-enrol"))
    assert after.status_code == 200
    assert "Your authenticator is set up." in after.content.decode()
    assert [d.name for d in after.context["devices"]] == ["Authenticator"]
    assert "qr_code" not in after.context


# ---------------------------------------------------------------------------------------------
# Deciders must enrol (alem.middleware)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["risk", "committee1", "ministry", "treasury"])
def test_a_decider_without_authenticator_is_sent_to_enrol_from_any_page(alem, client, role):
    client.force_login(alem.users[role])

    for path in (reverse("queue"), reverse("portfolio", args=[alem.fund.pk])):
        response = client.get(path)
        assert response.status_code == 302, path
        assert response["Location"] == reverse("otp-enrol"), path


@pytest.mark.parametrize("role", ["manager", "auditor", "fundadmin"])
def test_a_user_without_a_deciding_role_is_not_sent_to_enrol(alem, client, role):
    client.force_login(alem.users[role])

    response = client.get(reverse("portfolio", args=[alem.fund.pk]))

    assert response.status_code == 200


def test_a_decider_with_a_verified_session_is_not_sent_to_enrol(alem, client):
    signed_in(client, alem.users["risk"])

    response = client.get(reverse("portfolio", args=[alem.fund.pk]))

    assert response.status_code == 200


def test_the_pages_a_decider_needs_before_enrolling_stay_reachable(alem, client):
    client.force_login(alem.users["risk"])

    assert client.get(reverse("otp-enrol")).status_code == 200
    assert client.get(reverse("login")).status_code == 200
    assert client.post(reverse("set_language"), {"language": "ru"}).status_code == 302
    assert client.post(reverse("set_language"), {"language": "ru"})["Location"] != reverse(
        "otp-enrol"
    )
    # The API answers for itself (second_factor_required on decisions), the admin too.
    assert client.get("/api/v1/funds/").status_code == 200
    assert client.get("/admin/")["Location"].startswith(reverse("admin:login"))
    assert client.post(reverse("logout")).status_code == 302
    assert signed_in_user_id(client) is None


def _middleware_queries(django_assert_max_num_queries, user, session, limit):
    request = RequestFactory().get("/funds/1/")
    request.user = user
    request.session = session
    request.resolver_match = resolve("/funds/1/")
    user.is_verified = lambda: False
    middleware = SecondFactorEnrolmentMiddleware(lambda r: "page")
    with django_assert_max_num_queries(limit):
        return middleware.process_view(request, None, (), {})


def test_the_enrolment_check_costs_at_most_two_queries(alem, django_assert_max_num_queries):
    fund2 = FundFactory()
    many_roles = alem.users["committee1"]
    for role in (FundRole.REVIEW_RISK, FundRole.EXECUTE_TRADES):
        role_grant(user=many_roles, fund=fund2, role=role)

    # guardian looks each permission's content type up once per process; a server has them.
    _middleware_queries(django_assert_max_num_queries, alem.users["risk"], {}, 10)

    for user, expected in ((many_roles, 302), (alem.users["manager"], None)):
        response = _middleware_queries(django_assert_max_num_queries, user, {}, 2)
        assert getattr(response, "status_code", None) == expected, user.username


# ---------------------------------------------------------------------------------------------
# The back office needs a verified session
# ---------------------------------------------------------------------------------------------


def test_admin_refuses_a_staff_session_signed_in_with_the_password_alone(client, db):
    staff = UserFactory(username="siteadmin", is_staff=True, is_superuser=True)
    otp_device(staff)
    client.force_login(staff)

    response = client.get("/admin/", follow=True)

    assert response.redirect_chain == [
        (f"{reverse('admin:login')}?next=/admin/", 302),
        (f"{reverse('login')}?next=%2Fadmin%2F", 302),
    ]
    assert response.context["next"] == "/admin/"


def test_admin_sends_a_staff_member_without_authenticator_to_enrol_first(client, db):
    staff = UserFactory(username="siteadmin", is_staff=True, is_superuser=True)
    client.force_login(staff)

    response = client.get("/admin/", follow=True)

    assert response.redirect_chain[-1] == (f"{reverse('otp-enrol')}?next=%2Fadmin%2F", 302)
    assert response.status_code == 200
    assert response.context["next"] == "/admin/"


def test_admin_opens_for_a_session_verified_through_the_sign_in_page(client, db):
    staff = UserFactory(username="siteadmin", is_staff=True, is_superuser=True)

    response = sign_in(client, "siteadmin", code=otp_code(staff), next="/admin/")

    assert response["Location"] == "/admin/"
    assert client.get("/admin/").status_code == 200


def test_admin_opens_for_a_verified_session(client, db):
    signed_in(client, UserFactory(username="siteadmin", is_staff=True, is_superuser=True))

    assert client.get("/admin/").status_code == 200
    assert client.get(reverse("admin:login"))["Location"] == reverse("admin:index")


# ---------------------------------------------------------------------------------------------
# otp_code (demo aid)
# ---------------------------------------------------------------------------------------------


def test_otp_code_refuses_to_run_without_debug(db, settings, capsys):
    settings.DEBUG = False
    user = UserFactory(username="committee1")
    otp_device(user)

    with pytest.raises(CommandError, match="only runs with DEBUG on"):
        call_command("otp_code", "committee1")


def test_otp_code_prints_a_code_the_device_accepts(db, settings, capsys):
    settings.DEBUG = True
    user = UserFactory(username="committee1")
    device = otp_device(user)

    call_command("otp_code", "committee1")

    code = capsys.readouterr().out.strip()
    assert re.fullmatch(r"\d{6}", code)
    assert device.verify_token(code)


def test_otp_code_names_a_user_without_authenticator(db, settings):
    settings.DEBUG = True
    UserFactory(username="newcomer")

    with pytest.raises(CommandError, match="newcomer has no confirmed authenticator"):
        call_command("otp_code", "newcomer")
