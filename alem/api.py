"""The API's error contract: domain errors become 403 or 409 with a stable ``code``."""

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from governance.exceptions import GovernanceError
from portfolio.exceptions import PortfolioError


def exception_handler(exc, context):
    """Map domain errors: ``NotPermitted`` to 403, other rule conflicts to 409, both with
    ``{"code", "detail"}``; Django validation errors to 400 with field errors."""
    if isinstance(exc, GovernanceError | PortfolioError):
        return Response({"code": exc.code, "detail": exc.detail}, status=exc.status_code)
    if isinstance(exc, DjangoValidationError):
        detail = (
            exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        )
        exc = exceptions.ValidationError(detail=detail)
    response = drf_exception_handler(exc, context)
    if response is not None and response.status_code == status.HTTP_403_FORBIDDEN:
        response.data.setdefault("code", "not_permitted")
    return response
