"""The API's token authentication: ``Authorization: Token <token>`` (or ``Bearer <token>``).

Its own module, importing nothing of DRF's views: DRF imports the authentication classes while
``rest_framework.views`` is still loading, so a module that imports views from here would be
circular (the views of issuing and revoking tokens are ``alem.api_auth``).
"""

from django.utils.translation import gettext as _
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.exceptions import AuthenticationFailed

from governance.api_tokens import api_token_find, api_token_mark_used, api_token_refusal


class ApiTokenAuthentication(BaseAuthentication):
    """A token issued by ``POST /api/v1/auth/token/``, looked up by its SHA-256 digest.

    A revoked or expired token, or one whose holder is deactivated, gets 401 saying which. A
    request without the header is left to the next class (the session); a request without any
    credentials gets 401 with ``WWW-Authenticate: Token``, since this class comes first.
    """

    keyword = "Token"
    keywords = (b"token", b"bearer")

    def authenticate(self, request):
        words = get_authorization_header(request).split()
        if not words or words[0].lower() not in self.keywords:
            return None
        if len(words) != 2:
            raise AuthenticationFailed(
                _("The Authorization header must be “Token” and the token, one space between.")
            )
        try:
            value = words[1].decode("ascii")
        except UnicodeError as exc:
            raise AuthenticationFailed(_("Invalid token.")) from exc
        token = api_token_find(value)
        if token is None:
            raise AuthenticationFailed(_("Invalid token."))
        if refusal := api_token_refusal(token):
            raise AuthenticationFailed(refusal)
        api_token_mark_used(token)
        return (token.user, token)

    def authenticate_header(self, request):
        return self.keyword
