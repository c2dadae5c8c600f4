"""API tokens: issuing one per device, checking it on each request, revoking it.

A token is ``alem_`` and 43 URL-safe characters (32 random bytes). It is shown to its holder
once, when it is issued (``api_token_issue``); the database keeps its SHA-256 digest, never the
token, so a copy of the database or of a backup holds nothing a client could send. A token
lasts ``ALEM_API_TOKEN_TTL_HOURS`` (12 by default) and ends sooner when it is revoked:

- by its holder, signing out of that device (``POST /api/v1/auth/logout/``), of every device
  (``logout-all/``), or revoking one from the list of their tokens (the API or the "API tokens"
  page);
- by a site administrator (Admin → API tokens → "Revoke selected tokens"): it only narrows who
  may act, so one administrator may do it;
- when the holder's password changes, however it is changed (the back office's password form,
  ``set_password`` and ``save``, ``manage.py changepassword``), or the account is deactivated:
  the receivers at the end of this module compare the user row being saved with the stored one,
  and ``services.user_deactivate``, which updates the row without saving the model, revokes
  explicitly.

Issuing and revoking are access records, not decisions about the fund: they are kept on the
token's row (who, when, why), not in the audit log.
"""

import hashlib
import secrets
from datetime import timedelta

from django.conf import settings
from django.db.models import Q, QuerySet
from django.db.models.signals import post_save, pre_save
from django.dispatch import receiver
from django.utils import timezone
from django.utils.translation import gettext as _

from governance.models import DEFAULT_NAME, ApiToken
from portfolio.text import refuse_hidden_characters

TOKEN_PREFIX = "alem_"
# What the holder sees of a token to recognise it: the fixed prefix and 8 random characters
# (48 of its 256 random bits; the other 208 stay secret).
SHOWN_LENGTH = len(TOKEN_PREFIX) + 8
# ``last_used_at`` is written at most once a minute per token, not on every request.
LAST_USED_RESOLUTION = timedelta(minutes=1)

Reason = ApiToken.RevokedReason


def token_digest(value: str) -> str:
    """The SHA-256 of a token, in hex: what the database stores and looks tokens up by."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------------------------------------
# Issuing and checking
# ---------------------------------------------------------------------------------------------


def api_token_issue(*, user, name: str = "") -> tuple[ApiToken, str]:
    """A new token for ``user`` on one device or client, and its value, which is never stored.

    Preconditions: the caller has checked both of ``user``'s factors (``alem.api_auth``).
    ``name`` (what the holder calls the device; ``DEFAULT_NAME`` when empty) must not hide
    characters. Effects: one ``ApiToken`` row, expiring ``ALEM_API_TOKEN_TTL_HOURS`` from now.
    The caller shows the value once and keeps no copy.
    """
    name = (name or "").strip() or DEFAULT_NAME
    refuse_hidden_characters(name=name)
    value = TOKEN_PREFIX + secrets.token_urlsafe(32)
    now = timezone.now()
    token = ApiToken.objects.create(
        user=user,
        name=name,
        prefix=value[:SHOWN_LENGTH],
        digest=token_digest(value),
        created_at=now,
        expires_at=now + timedelta(hours=settings.ALEM_API_TOKEN_TTL_HOURS),
    )
    return token, value


def api_token_find(value: str) -> ApiToken | None:
    """The token whose value is ``value``, with its holder, or None."""
    if not value.startswith(TOKEN_PREFIX):
        return None
    return ApiToken.objects.select_related("user").filter(digest=token_digest(value)).first()


def api_token_refusal(token: ApiToken, *, now=None) -> str | None:
    """Why ``token`` cannot be used now, in words for its holder, or None if it can."""
    now = now or timezone.now()
    if token.revoked_at is not None:
        return _("This token was revoked (%(reason)s). Ask for a new one.") % {
            "reason": token.get_revoked_reason_display().lower()
        }
    if token.expires_at <= now:
        return _("This token has expired. Ask for a new one.")
    if not token.user.is_active:
        return _("This account is deactivated.")
    return None


def api_token_mark_used(token: ApiToken, *, now=None) -> None:
    """Record that ``token`` was used now, unless that was recorded less than a minute ago."""
    now = now or timezone.now()
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now


# ---------------------------------------------------------------------------------------------
# Reading: a person's own tokens
# ---------------------------------------------------------------------------------------------


def api_tokens_of(user) -> QuerySet[ApiToken]:
    """``user``'s tokens, newest first: nobody else's."""
    return ApiToken.objects.filter(user=user).order_by("-created_at", "-id")


def api_tokens_live(tokens: QuerySet[ApiToken], *, now=None) -> QuerySet[ApiToken]:
    """Those of ``tokens`` that still work: neither revoked nor expired."""
    return tokens.filter(revoked_at__isnull=True, expires_at__gt=now or timezone.now())


def api_tokens_ended(tokens: QuerySet[ApiToken], *, now=None) -> QuerySet[ApiToken]:
    """Those of ``tokens`` that no longer work: revoked or expired."""
    return tokens.filter(Q(revoked_at__isnull=False) | Q(expires_at__lte=now or timezone.now()))


# ---------------------------------------------------------------------------------------------
# Revoking
# ---------------------------------------------------------------------------------------------


def api_tokens_revoke(*, tokens: QuerySet[ApiToken], reason: str) -> int:
    """Revoke those of ``tokens`` that still work, for ``reason`` (an ``ApiToken.RevokedReason``);
    tokens already revoked or expired keep what ended them. Returns how many were revoked."""
    now = timezone.now()
    return api_tokens_live(tokens, now=now).update(revoked_at=now, revoked_reason=reason)


def api_tokens_revoke_all(*, user, reason: str) -> int:
    """Revoke every token of ``user`` that still works. Returns how many were revoked."""
    return api_tokens_revoke(tokens=api_tokens_of(user), reason=reason)


def api_token_revoke(*, user, token_id: int, reason: str = Reason.REVOKED_BY_USER) -> ApiToken:
    """Revoke one of ``user``'s own tokens (if it still works) and return it.

    Raises ``ApiToken.DoesNotExist`` for a token that is not ``user``'s, so another person's
    token looks exactly like one that does not exist.
    """
    token = api_tokens_of(user).get(pk=token_id)
    api_tokens_revoke(tokens=api_tokens_of(user).filter(pk=token.pk), reason=reason)
    token.refresh_from_db()
    return token


# ---------------------------------------------------------------------------------------------
# A changed password or a deactivated account ends every token (connected at start-up by
# governance.apps, which imports this module)
# ---------------------------------------------------------------------------------------------

_PENDING_REASON = "_api_tokens_revoke_reason"


def _is_hash_upgrade(user, update_fields) -> bool:
    """Django re-hashes a password at sign-in when its hasher's settings have grown: the same
    password under a new hash, saved with ``update_fields=["password"]`` and no ``set_password``
    (Django's own test for "not a password change"). Anything else that changes the hash is a
    new password."""
    if update_fields is None or set(update_fields) != {"password"}:
        return False
    return getattr(user, "_password", None) is None


@receiver(pre_save, sender=settings.AUTH_USER_MODEL, dispatch_uid="api_tokens_note_ended_access")
def _note_ended_access(sender, instance, raw=False, update_fields=None, **kwargs):
    """Before a user row is saved: note whether the save changes the password or deactivates
    the account, compared with the row as stored."""
    if raw or instance.pk is None:
        return
    # Only the fields this save writes (a save of last_login alone costs no query).
    saved = {"password", "is_active"}
    if update_fields is not None:
        saved &= set(update_fields)
    if not saved:
        return
    stored = sender._default_manager.filter(pk=instance.pk).values(*saved).first()
    if stored is None:
        return
    if "is_active" in saved and stored["is_active"] and not instance.is_active:
        setattr(instance, _PENDING_REASON, Reason.DEACTIVATED)
    elif (
        "password" in saved
        and stored["password"] != instance.password
        and not _is_hash_upgrade(instance, update_fields)
    ):
        setattr(instance, _PENDING_REASON, Reason.PASSWORD_CHANGED)


@receiver(post_save, sender=settings.AUTH_USER_MODEL, dispatch_uid="api_tokens_revoke_on_save")
def _revoke_on_ended_access(sender, instance, raw=False, **kwargs):
    """Once the row is saved: revoke every token of a user whose password changed or whose
    account was deactivated."""
    reason = instance.__dict__.pop(_PENDING_REASON, None)
    if reason is not None and not raw:
        api_tokens_revoke_all(user=instance, reason=reason)
