"""People's preferences: the language their pages and e-mails are written in.

Choosing a language with the switcher while signed in stores it (``language_preference_set``);
signing in on another browser brings it back, and e-mails to the person are rendered in it
(``language_of``). Anyone without a stored choice gets the site's language.
"""

from django.conf import settings
from django.core.exceptions import ValidationError

from governance.models import Preference

OFFERED_LANGUAGES = tuple(code for code, _name in settings.LANGUAGES)


def stored_language(user) -> str | None:
    """The language ``user`` chose, or None if they never chose one. Reads ``user.preference``,
    so select it with the user (``select_related("preference")``) when looping over people."""
    try:
        return user.preference.language
    except Preference.DoesNotExist:
        return None


def language_of(user) -> str:
    """The language to write to ``user`` in: their choice, or the site's."""
    return stored_language(user) or settings.LANGUAGE_CODE


def language_preference_set(*, user, language: str) -> Preference:
    """Store ``language`` as ``user``'s choice; a language the site does not offer is refused."""
    if language not in OFFERED_LANGUAGES:
        offered = ", ".join(OFFERED_LANGUAGES)
        refusal = ValidationError(
            f"{language!r} is not offered; choose one of {offered}.", code="language_not_offered"
        )
        raise ValidationError({"language": refusal})
    preference, _created = Preference.objects.update_or_create(
        user=user, defaults={"language": language}
    )
    user.preference = preference
    return preference
