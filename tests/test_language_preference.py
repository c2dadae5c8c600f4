"""The language a person chooses follows them: stored when they switch while signed in, brought
back when they sign in on another browser, and used for the e-mails they get
(tests/governance/test_notifications.py)."""

import pytest
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.urls import reverse

from governance.models import Preference
from governance.preferences import language_of, language_preference_set, stored_language
from tests.factories import UserFactory

PASSWORD = "pw-for-tests-only"  # UserFactory's
COOKIE = settings.LANGUAGE_COOKIE_NAME


def sign_in(client, username):
    return client.post(reverse("login"), {"username": username, "password": PASSWORD})


def switch(client, language, next_url="/"):
    return client.post(reverse("set_language"), {"language": language, "next": next_url})


def test_switching_language_while_signed_in_stores_the_choice(client, db):
    user = UserFactory(username="officer")
    sign_in(client, "officer")

    response = switch(client, "kk")

    assert response.status_code == 302
    assert response.cookies[COOKIE].value == "kk"
    assert stored_language(user) == "kk"
    switch(client, "ru")
    user.refresh_from_db()
    assert stored_language(user) == "ru"


def test_switching_language_before_signing_in_stores_nothing(client, db):
    response = switch(client, "ru")

    assert response.cookies[COOKIE].value == "ru"
    assert not Preference.objects.exists()


def test_a_language_the_site_does_not_offer_changes_nothing(client, db):
    user = UserFactory(username="officer")
    sign_in(client, "officer")
    switch(client, "kk")

    response = switch(client, "de")

    assert response.status_code == 302
    user.refresh_from_db()
    assert stored_language(user) == "kk"


def test_signing_in_brings_back_the_stored_language(client, db):
    user = UserFactory(username="officer")
    language_preference_set(user=user, language="kk")
    client.cookies[COOKIE] = "en"

    response = sign_in(client, "officer")

    assert response.cookies[COOKIE].value == "kk"
    page = client.get(response["Location"])
    assert '<html lang="kk">' in page.content.decode()
    assert stored_language(user) == "kk"


def test_a_language_chosen_on_the_sign_in_page_is_stored_for_someone_who_never_chose(client, db):
    user = UserFactory(username="officer")
    client.cookies[COOKIE] = "ru"

    response = sign_in(client, "officer")

    assert COOKIE not in response.cookies
    assert stored_language(user) == "ru"


def test_signing_in_without_any_choice_stores_nothing(client, db):
    UserFactory(username="officer")

    response = sign_in(client, "officer")

    assert response.status_code == 302
    assert COOKIE not in response.cookies
    assert not Preference.objects.exists()


def test_someone_who_never_chose_is_written_to_in_the_sites_language(db, settings):
    settings.LANGUAGE_CODE = "ru"

    assert language_of(UserFactory()) == "ru"


def test_the_service_refuses_a_language_the_site_does_not_offer(db):
    user = UserFactory()

    with pytest.raises(ValidationError) as refused:
        language_preference_set(user=user, language="de")

    assert refused.value.error_dict["language"][0].code == "language_not_offered"
    assert not Preference.objects.exists()


def test_the_database_refuses_a_language_the_site_does_not_offer(db):
    user = UserFactory()

    with pytest.raises(IntegrityError), transaction.atomic():
        Preference.objects.create(user=user, language="de")
