"""Getting an API token: the same two factors as the sign-in page, never the password alone."""

from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.authtoken.models import Token
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from alem.forms import SignInForm


class TokenRequestSerializer(serializers.Serializer):
    username = serializers.CharField()
    password = serializers.CharField(trim_whitespace=False, style={"input_type": "password"})
    otp_token = serializers.CharField(help_text="The current code of the user's authenticator.")


class TokenView(APIView):
    """``POST`` username, password and the current one-time code: the caller's API token.

    The factors are checked as the sign-in page checks them (``SignInForm``): one generic error
    for any wrong factor, each failure counted by django-axes against the username and address.
    A user without an authenticator gets no token: they set one up on the sign-in page first.
    """

    authentication_classes = []
    permission_classes = [AllowAny]

    @extend_schema(
        summary="Get an API token with the password and a current one-time code",
        request=TokenRequestSerializer,
        responses={
            200: inline_serializer("Token", {"token": serializers.CharField()}),
            400: OpenApiResponse(description="A factor is wrong or missing."),
        },
        auth=[],
    )
    def post(self, request):
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
        token, _ = Token.objects.get_or_create(user=form.user)
        return Response({"token": token.key})
