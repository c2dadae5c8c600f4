"""Step-up: every decision and execution is confirmed by a fresh code from the actor's device.

Signing in proves who opened the session; a one-time code at the moment of the act proves the
person is at the keyboard now. Codes come from TOTP devices (django-otp): each code is good once
(the device remembers the last time step it accepted) and repeated wrong codes throttle the
device, so a code cannot be guessed at the decision form either.
"""

from django.db import transaction
from django_otp import devices_for_user
from django_otp.plugins.otp_totp.models import TOTPDevice

from governance import events
from governance.exceptions import SecondFactorInvalid, SecondFactorRequired
from governance.models import DECIDING_ROLES
from portfolio.models import FundRole

DEVICE_NAME = "Authenticator"

# The roles whose acts need a fresh code: their holders must enrol a device before acting.
STEP_UP_ROLES = (*DECIDING_ROLES, FundRole.EXECUTE_TRADES)


def has_confirmed_device(user) -> bool:
    return any(True for _ in devices_for_user(user, confirmed=True))


def second_factor_confirm(*, user, otp_token: str | None) -> str:
    """Check ``otp_token`` against ``user``'s confirmed devices and consume it.

    Returns the persistent id of the device that accepted the code. Raises
    ``SecondFactorRequired`` when the user has no confirmed device, ``SecondFactorInvalid`` when
    the code is empty, wrong, replayed or the device is throttled. The device's state (last
    accepted step, failure count) is saved in the caller's transaction; the devices are read
    once, locked, so two requests cannot both spend the same code.
    """
    with transaction.atomic():
        devices = list(devices_for_user(user, confirmed=True, for_verify=True))
        if not devices:
            raise SecondFactorRequired(
                "This action needs a one-time code, and you have not enrolled an authenticator "
                "device yet."
            )
        token = "".join((otp_token or "").split())
        accepting = next((d for d in devices if token and d.verify_token(token)), None)
    if accepting is not None:
        return accepting.persistent_id
    raise SecondFactorInvalid(
        "The one-time code is missing, wrong or already used; enter the current code from "
        "your authenticator app."
    )


def second_factor_enrolment_start(*, user) -> TOTPDevice:
    """The user's authenticator awaiting its first code, created on the first call.

    Reused on later calls, so the QR code a person sees stays the same until they confirm it.
    """
    device = TOTPDevice.objects.filter(user=user, confirmed=False).order_by("pk").first()
    if device is None:
        device = TOTPDevice.objects.create(user=user, name=DEVICE_NAME, confirmed=False)
    return device


def second_factor_enrolment_confirm(*, device: TOTPDevice) -> TOTPDevice:
    """Confirm ``device`` once its first code was accepted (the caller checked it).

    Effects: the device counts for sign-in and step-up from now on; audit
    ``second_factor.enrolled`` with the device's persistent id.
    """
    with transaction.atomic():
        device.confirmed = True
        device.save(update_fields=["confirmed"])
        events.second_factor_enrolled_event(device=device)
    return device
