"""The address a request came from, behind a known number of trusted proxies.

``ALEM_TRUSTED_PROXIES`` (N) says how many reverse proxies stand between the internet and the
web process. Each of them appends the address it saw to ``X-Forwarded-For``, so the Nth entry
from the right is the one the outermost trusted proxy saw: the client. Everything left of it was
written by the client and proves nothing. With N = 0 (the default) the header is never read and
the address is the connection's (``REMOTE_ADDR``).

django-axes counts failed sign-ins per address through this function
(``AXES_CLIENT_IP_CALLABLE``); DRF's throttles use the same N (``REST_FRAMEWORK["NUM_PROXIES"]``).
"""

import ipaddress

from django.conf import settings
from django.http import HttpRequest


def client_address(request: HttpRequest) -> str | None:
    """The client's address: the Nth ``X-Forwarded-For`` entry from the right with N trusted
    proxies, else ``REMOTE_ADDR``. A header shorter than N entries, or an entry that is not an
    address, means the request did not come through every trusted proxy: the connection's
    address is counted then, never a value the client could have chosen."""
    remote_addr = request.META.get("REMOTE_ADDR")
    proxies = settings.ALEM_TRUSTED_PROXIES
    if proxies <= 0:
        return remote_addr
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    entries = [entry.strip() for entry in forwarded.split(",")] if forwarded else []
    if len(entries) < proxies:
        return remote_addr
    candidate = entries[-proxies]
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return remote_addr
