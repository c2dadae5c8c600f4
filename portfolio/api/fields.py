"""Decimal amounts in the API: exact strings without the trailing zeros of their storage.

Computed amounts are stored with 28 decimal places, so DRF's ``DecimalField`` would render
"25000000.0000000000000000000000000000". ``ExactDecimalField`` renders "25000000": trailing zeros
stripped, never rounded, never in exponent notation, never a float.
"""

from django.db import models
from rest_framework import serializers

from portfolio.calculations import decimal_string

__all__ = ["ExactDecimalField", "ExactDecimalModelSerializer", "decimal_string"]


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
