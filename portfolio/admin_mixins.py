"""Behaviour shared by the back office's pages of both apps: records only services write, and
fields fixed once a row exists."""

from django.contrib import admin
from django.template.response import TemplateResponse
from django.urls import path

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


class ExtraPagesMixin:
    """Pages of a model's admin beyond its lists and forms. ``extra_pages`` holds one
    ``(route, view method name, suffix)`` per page; the route is below the model's admin URL,
    the view runs behind the admin's login, and the URL is named ``<app>_<model>_<suffix>``."""

    extra_pages: tuple[tuple[str, str, str], ...] = ()

    def page(self, request, template: str, title, **context) -> TemplateResponse:
        """One of these pages: the admin site's context, the model's options and ``title``,
        then the page's own ``context``."""
        return TemplateResponse(
            request,
            template,
            {**self.admin_site.each_context(request), "opts": self.opts, "title": title, **context},
        )

    def get_urls(self):
        prefix = f"{self.opts.app_label}_{self.opts.model_name}_"
        pages = [
            path(route, self.admin_site.admin_view(getattr(self, view)), name=prefix + suffix)
            for route, view, suffix in self.extra_pages
        ]
        return pages + super().get_urls()


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
