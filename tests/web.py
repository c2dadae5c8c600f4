"""Helpers for tests that drive the web app through Django's test client."""

from django_otp import DEVICE_ID_SESSION_KEY

from tests.factories import otp_device


def signed_in(client, user, device=None):
    """Sign ``user`` in on ``client`` as if they had passed the two-factor sign-in.

    The user's confirmed authenticator is enrolled if they have none (or ``device`` is used),
    the session is opened with ``force_login`` and then marked verified by that device the way
    ``django_otp.login`` does, so ``request.user.is_verified()`` is true on the next request
    (the admin and the enrolment middleware both look at it). Returns ``client``.
    """
    device = device or otp_device(user)
    client.force_login(user)
    session = client.session
    session[DEVICE_ID_SESSION_KEY] = device.persistent_id
    session.save()
    return client
