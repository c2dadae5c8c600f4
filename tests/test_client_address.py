"""The client's address behind ``ALEM_TRUSTED_PROXIES`` trusted proxies (alem.client_address),
and DRF's throttles keyed on the same address."""

import pytest
from django.test import RequestFactory
from rest_framework.request import Request
from rest_framework.throttling import AnonRateThrottle

from alem.client_address import client_address

PROXY = "192.0.2.10"


def request_from(remote_addr: str, forwarded_for: str | None = None):
    extra = {"REMOTE_ADDR": remote_addr}
    if forwarded_for is not None:
        extra["HTTP_X_FORWARDED_FOR"] = forwarded_for
    return RequestFactory().get("/", **extra)


@pytest.mark.parametrize(
    ("proxies", "forwarded_for", "expected"),
    [
        # No trusted proxy: the header is never read.
        (0, None, PROXY),
        (0, "203.0.113.7", PROXY),
        # One: the entry it appended, whatever the client wrote before it.
        (1, "203.0.113.7", "203.0.113.7"),
        (1, "10.0.0.1, 10.0.0.2, 203.0.113.7", "203.0.113.7"),
        (1, " 2001:db8::7 ", "2001:db8::7"),
        # Two: the entry the outer proxy appended, second from the right.
        (2, "10.0.0.1, 203.0.113.7, 198.51.100.2", "203.0.113.7"),
        # Fewer entries than proxies, or no header: the connection's address, not a guess.
        (2, "203.0.113.7", PROXY),
        (1, None, PROXY),
        (1, "", PROXY),
        # Not an address where the proxy's entry should be: the connection's address.
        (1, "10.0.0.1, not-an-address", PROXY),
        (1, "10.0.0.1,", PROXY),
    ],
)
def test_the_client_address_is_the_entry_the_outermost_trusted_proxy_appended(
    settings, proxies, forwarded_for, expected
):
    settings.ALEM_TRUSTED_PROXIES = proxies

    assert client_address(request_from(PROXY, forwarded_for)) == expected


@pytest.mark.parametrize("proxies", [0, 1])
def test_api_throttles_key_on_the_same_address_as_the_lockout(settings, proxies):
    settings.ALEM_TRUSTED_PROXIES = proxies
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": proxies}
    request = request_from(PROXY, "10.6.6.6, 203.0.113.7")

    ident = AnonRateThrottle().get_ident(Request(request))

    assert ident == client_address(request)
    assert ident == ("203.0.113.7" if proxies else PROXY)
