"""Behaviour shared by the back office's pages of both apps: records only services write, and
fields fixed once a row exists."""

from django.contrib import admin

from portfolio.calculations import decimal_string


class ReadOnlyAdminMixin:
    """Viewable by staff with the view permission; nobody adds, changes or deletes, not even a
    superuser. For records written only by services."""

    actions = None

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class CreateOnlyFieldsMixin:
    """Fields that are set when a row is created and shown read-only afterwards."""

    create_only_fields: tuple[str, ...] = ()

    def get_readonly_fields(self, request, obj=None):
        readonly = tuple(super().get_readonly_fields(request, obj))
        if obj is None:
            return readonly
        return readonly + tuple(f for f in self.create_only_fields if f not in readonly)


def exact(value) -> str:
    """An amount as its exact digits without storage zeros ("-" when there is none)."""
    return "-" if value is None else decimal_string(value)


def exact_column(field: str, description, *, ordering: str | None = None):
    """A column showing the amount ``field`` as its exact digits: the default rendering would
    show the storage zeros of an 18-place decimal."""

    @admin.display(description=description, ordering=ordering)
    def column(model_admin, obj) -> str:
        return exact(getattr(obj, field))

    return column
