"""API tokens: getting one with the same two factors as the sign-in page, never the password
alone; seeing and revoking one's own; signing out.

A token belongs to one device or client: each ``POST auth/token/`` issues a new one, shown once
in the answer and stored only as its digest (``governance.api_tokens``). It expires after
``ALEM_API_TOKEN_TTL_HOURS`` and is revoked by signing out, by its holder from the list, by a
site administrator, or by a change of the holder's password or the deactivation of their
account. The token authentication itself is ``alem.authentication.ApiTokenAuthentication``.
"""

from django.utils.translation import gettext as _
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import generics, serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from alem.forms import SignInForm
from governance.api_tokens import (
    api_token_issue,
    api_token_revoke,
    api_tokens_of,
    api_tokens_revoke,
    api_tokens_revoke_all,
)
from governance.models import ApiToken
from portfolio.text import reject_hidden_characters

Reason = ApiToken.RevokedReason


class ApiTokenScheme(OpenApiAuthenticationExtension):
    """How the schema describes ``ApiTokenAuthentication``: the Authorization header."""

    target_class = "alem.authentication.ApiTokenAuthentication"
    name = "tokenAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": (
                "`Token <token>` or `Bearer <token>`, with a token from `POST /api/v1/auth/token/`."
            ),
        }


# ---------------------------------------------------------------------------------------------
# Issuing
# ---------------------------------------------------------------------------------------------


def token_name_field() -> serializers.CharField:
    return serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=ApiToken._meta.get_field("name").max_length,
        validators=[reject_hidden_characters],
        help_text="The device or client the token is for, to recognise it in the list of tokens "
        '(default "API client").',
    )


class TokenNameSerializer(serializers.Serializer):
    name = token_name_field()


class TokenRequestSerializer(serializers.Serializer):
    username = serializers.CharField()
    password = serializers.CharField(trim_whitespace=False, style={"input_type": "password"})
    otp_token = serializers.CharField(help_text="The current code of the user's authenticator.")
    name = token_name_field()


class IssuedTokenSerializer(serializers.ModelSerializer):
    token = serializers.CharField(help_text="The token: shown this once, never again.")

    class Meta:
        model = ApiToken
        fields = ["id", "token", "name", "expires_at"]
        read_only_fields = fields


class TokenView(APIView):
    """``POST`` username, password and the current one-time code: a new API token for one device.

    The factors are checked as the sign-in page checks them (``SignInForm``): one generic error
    for any wrong factor, each failure counted by django-axes against the username and address.
    A user without an authenticator gets no token: they set one up on the sign-in page first.
    """

    authentication_classes = []
    permission_classes = [AllowAny]

    @extend_schema(
        summary="Get an API token with the password and a current one-time code",
        description="Each call issues a new token, for one device or client; the token is in "
        "this answer only. It expires at `expires_at`, and sooner if it is revoked.",
        request=TokenRequestSerializer,
        responses={
            200: IssuedTokenSerializer,
            400: OpenApiResponse(description="A factor is wrong or missing."),
            429: OpenApiResponse(
                response=inline_serializer(
                    "LockedOut",
                    {
                        "code": serializers.CharField(help_text='"locked_out"'),
                        "detail": serializers.CharField(),
                        "retry_after": serializers.IntegerField(
                            help_text="Seconds until the next attempt may succeed."
                        ),
                    },
                ),
                description="Too many failed sign-ins for this username or from this address: "
                "locked out. `Retry-After` says for how many seconds; every attempt before then "
                "starts the wait again.",
            ),
        },
        auth=[],
    )
    def post(self, request):
        # The name first: a bad one is refused before the factors are checked (and the code used).
        named = TokenNameSerializer(data=request.data)
        named.is_valid(raise_exception=True)
        form = SignInForm(request._request, data=request.data)
        if not form.is_valid():
            raise serializers.ValidationError(
                {"non_field_errors" if k == "__all__" else k: v for k, v in form.errors.items()}
            )
        if form.device is None:
            raise serializers.ValidationError(
                {
                    "otp_token": [
                        "An API token needs a one-time code: set up an authenticator on the "
                        "sign-in page first."
                    ]
                }
            )
        token, value = api_token_issue(user=form.user, name=named.validated_data.get("name", ""))
        issued = {
            "id": token.pk,
            "token": value,
            "name": token.name,
            "expires_at": token.expires_at,
        }
        return Response(IssuedTokenSerializer(issued).data)


# ---------------------------------------------------------------------------------------------
# Signing out
# ---------------------------------------------------------------------------------------------


class LogoutView(APIView):
    """``POST``: revoke the token this request was made with (sign this device out)."""

    @extend_schema(
        summary="Sign out: revoke the token this request carries",
        request=None,
        responses={
            204: OpenApiResponse(description="The token is revoked."),
            400: OpenApiResponse(description="The request was not made with an API token."),
        },
    )
    def post(self, request):
        if not isinstance(request.auth, ApiToken):
            raise serializers.ValidationError(
                {
                    "non_field_errors": [
                        _(
                            "This request carries no API token. A browser session ends with "
                            "the web app's Sign out button."
                        )
                    ]
                }
            )
        api_tokens_revoke(
            tokens=api_tokens_of(request.user).filter(pk=request.auth.pk),
            reason=Reason.SIGNED_OUT,
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


class LogoutAllView(APIView):
    """``POST``: revoke every token of the caller, on every device."""

    @extend_schema(
        summary="Sign out everywhere: revoke all of the caller's tokens",
        request=None,
        responses={
            200: inline_serializer(
                "TokensRevoked",
                {"revoked": serializers.IntegerField(help_text="How many tokens were revoked.")},
            )
        },
    )
    def post(self, request):
        revoked = api_tokens_revoke_all(user=request.user, reason=Reason.SIGNED_OUT)
        return Response({"revoked": revoked})


# ---------------------------------------------------------------------------------------------
# The caller's tokens
# ---------------------------------------------------------------------------------------------


class ApiTokenSerializer(serializers.ModelSerializer):
    """A token as its holder sees it: never the token, never its digest."""

    current = serializers.SerializerMethodField(
        help_text="Whether this request was made with this token."
    )

    class Meta:
        model = ApiToken
        fields = [
            "id",
            "name",
            "prefix",
            "created_at",
            "expires_at",
            "last_used_at",
            "revoked_at",
            "revoked_reason",
            "current",
        ]
        read_only_fields = fields

    def get_current(self, token: ApiToken) -> bool:
        auth = self.context["request"].auth
        return isinstance(auth, ApiToken) and auth.pk == token.pk


@extend_schema(summary="The caller's API tokens, newest first")
class TokenListView(generics.ListAPIView):
    """``GET``: the caller's own tokens, working or not, newest first."""

    serializer_class = ApiTokenSerializer

    def get_queryset(self):
        return api_tokens_of(self.request.user)


class TokenRevokeView(APIView):
    """``DELETE``: revoke one of the caller's tokens; anyone else's is not found."""

    @extend_schema(
        summary="Revoke one of the caller's tokens",
        responses={
            204: OpenApiResponse(description="The token is revoked (or had already ended)."),
            404: OpenApiResponse(description="The caller has no token with this id."),
        },
    )
    def delete(self, request, pk: int):
        try:
            api_token_revoke(user=request.user, token_id=pk, reason=Reason.REVOKED_BY_USER)
        except ApiToken.DoesNotExist as exc:
            raise NotFound() from exc
        return Response(status=status.HTTP_204_NO_CONTENT)
