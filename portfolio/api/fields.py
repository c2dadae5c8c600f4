"""Fields of the API's own: exact decimal amounts, and durations in whole seconds.

Computed amounts are stored with 28 decimal places, so DRF's ``DecimalField`` would render
"25000000.0000000000000000000000000000". ``ExactDecimalField`` renders "25000000": trailing zeros
stripped, never rounded, never in exponent notation, never a float.
"""

from django.db import models
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from portfolio.calculations import decimal_string

__all__ = [
    "ExactDecimalField",
    "ExactDecimalModelSerializer",
    "OptionalSecondsField",
    "SecondsField",
    "decimal_string",
]


class ExactDecimalField(serializers.DecimalField):
    """A decimal rendered by ``decimal_string``; input is parsed and validated as by DRF's
    ``DecimalField`` (``max_digits`` and ``decimal_places`` apply when given)."""

    def __init__(self, max_digits=None, decimal_places=None, **kwargs):
        kwargs.setdefault("coerce_to_string", True)
        super().__init__(max_digits, decimal_places, **kwargs)

    def to_representation(self, value):
        return decimal_string(value)


class ExactDecimalModelSerializer(serializers.ModelSerializer):
    """A ``ModelSerializer`` whose model ``DecimalField``\\ s render through ``ExactDecimalField``
    (input validation keeps the model field's ``max_digits`` and ``decimal_places``)."""

    serializer_field_mapping = {
        **serializers.ModelSerializer.serializer_field_mapping,
        models.DecimalField: ExactDecimalField,
    }


@extend_schema_field(OpenApiTypes.INT)
class SecondsField(serializers.Field):
    """A duration (``timedelta``) as whole seconds, truncated; read-only."""

    def __init__(self, **kwargs):
        super().__init__(read_only=True, **kwargs)

    def to_representation(self, value) -> int:
        return int(value.total_seconds())


# Declared whole so the schema reads as it did when these were method fields.
@extend_schema_field({"type": "integer", "nullable": True})
class OptionalSecondsField(SecondsField):
    """``SecondsField`` of a duration that may be missing: null then."""

    def __init__(self, **kwargs):
        super().__init__(allow_null=True, **kwargs)
