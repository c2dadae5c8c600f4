"""Back office for people: accounts, authenticators and the four-eyes changes to who may act.

One site administrator alone may create an account (it holds nothing), edit names and e-mail,
set a password, deactivate an account, remove back-office access and revoke roles: all of these
only narrow who may act. Everything that widens it (a fund role, staff or site administrator
status, reactivation, resetting someone's authenticator) is an ``AdminChange`` that a second
site administrator confirms with their own one-time code (``governance.services``). No page
shows an authenticator's secret or an API token: django-otp's admin pages, which show the key,
are replaced here, and API tokens are stored as digests that no page shows.
"""

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import GroupAdmin as DjangoGroupAdmin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.hashers import is_password_usable
from django.contrib.auth.models import Group
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.http import HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext
from django_otp.plugins.otp_totp.models import TOTPDevice

from governance import events, services
from governance.account_record import recorded_by_service
from governance.api_tokens import api_tokens_revoke
from governance.exceptions import GovernanceError
from governance.forms import AdminChangeConfirmForm, AdminChangeRequestForm
from governance.models import AdminChange, ApiToken
from portfolio.admin_mixins import ExtraPagesMixin, ReadOnlyAdminMixin

User = get_user_model()

# What only four eyes may change: shown, never edited, on a person's page.
PRIVILEGE_FIELDS = ("is_active", "is_staff", "is_superuser", "groups", "user_permissions")


def _error_text(exc: Exception) -> str:
    return getattr(exc, "detail", None) or "; ".join(getattr(exc, "messages", [str(exc)]))


# ---------------------------------------------------------------------------------------------
# Four-eyes changes
# ---------------------------------------------------------------------------------------------


@admin.register(AdminChange)
class AdminChangeAdmin(ExtraPagesMixin, admin.ModelAdmin):
    """Requests to widen who may act. "Add" asks for one (``admin_change_request``); each
    change's page confirms it with a one-time code (``admin_change_confirm``) or cancels it
    (``admin_change_cancel``). Rows are never edited or deleted."""

    list_display = ("id", "kind", "user", "fund", "role", "state_link", "requested_by")
    list_display += ("requested_at", "confirmed_by", "effective_at")
    list_filter = ("state", "kind", "fund")
    search_fields = ("user__username", "requested_by__username", "reason")
    ordering = ("-requested_at", "-id")
    list_select_related = ("user", "fund", "requested_by", "confirmed_by")
    fields = ("kind", "user", "fund", "role", "reason", "state", "requested_by", "requested_at")
    fields += ("confirmed_by", "confirmed_at", "confirmed_by_device", "effective_at")
    fields += ("applied_at", "cancelled_by", "cancelled_at")
    readonly_fields = fields

    extra_pages = (("<path:object_id>/confirm/", "confirm_view", "confirm"),)

    def has_module_permission(self, request):
        return request.user.is_active and request.user.is_superuser

    def has_view_permission(self, request, obj=None):
        return self.has_module_permission(request)

    def has_add_permission(self, request):
        return self.has_module_permission(request)

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description=_("state"), ordering="state")
    def state_link(self, change: AdminChange) -> str:
        url = reverse("admin:governance_adminchange_confirm", args=[change.pk])
        return format_html('<a href="{}">{}</a>', url, change.get_state_display())

    def add_view(self, request, form_url="", extra_context=None):
        """Ask for a change through ``admin_change_request``."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = AdminChangeRequestForm(request.POST or None, initial=request.GET.dict())
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                change = services.admin_change_request(actor=request.user, **data)
            except (GovernanceError, ValidationError) as exc:
                form.add_error(None, _error_text(exc))
            else:
                self.message_user(
                    request,
                    _("Requested: %(change)s. Another site administrator must confirm it.")
                    % {"change": change},
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(reverse("admin:governance_adminchange_changelist"))
        return self.page(
            request,
            "admin/governance/adminchange/request.html",
            _("Request a change to who may act"),
            form=form,
        )

    def confirm_view(self, request, object_id):
        """One change, with the buttons its state allows: confirm (one-time code) or cancel."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        change = self.get_object(request, unquote(object_id))
        if change is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        form = AdminChangeConfirmForm()
        if request.method == "POST":
            form = AdminChangeConfirmForm(request.POST)
            cancel = "cancel" in request.POST
            if cancel or form.is_valid():
                try:
                    if cancel:
                        services.admin_change_cancel(actor=request.user, change_id=change.pk)
                        text = _("The change is cancelled.")
                    else:
                        change = services.admin_change_confirm(
                            actor=request.user,
                            change_id=change.pk,
                            otp_token=form.cleaned_data["otp_token"],
                        )
                        text = _("Confirmed: the change is %(state)s.") % {
                            "state": change.get_state_display().lower()
                        }
                except GovernanceError as exc:
                    form.add_error(None, _error_text(exc))
                else:
                    self.message_user(request, text, messages.SUCCESS)
                    return HttpResponseRedirect(request.path)
            change.refresh_from_db()
        return self.page(
            request,
            "admin/governance/adminchange/confirm.html",
            str(change),
            original=change,
            change=change,
            form=form,
            can_confirm=change.state == AdminChange.State.PENDING,
            can_cancel=change.state in AdminChange.OPEN_STATES,
        )


# ---------------------------------------------------------------------------------------------
# Accounts
# ---------------------------------------------------------------------------------------------

admin.site.unregister(User)


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    """Django's user pages with the privileges read-only: they change through the actions
    (narrowing, at once) and Admin changes (widening, four eyes)."""

    readonly_fields = (*PRIVILEGE_FIELDS, "last_login", "date_joined")
    actions = ["deactivate_selected", "remove_access_selected"]

    def get_actions(self, request):
        # Deleting people is never the way: their records keep them (PROTECT); deactivate.
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def has_delete_permission(self, request, obj=None):
        return False

    def user_change_password(self, request, id, form_url=""):
        """Django's password form, audited (``user.password_set``) in the same transaction when
        it set someone's password. The account still needs its owner's authenticator, and the
        new password revokes the person's API tokens (``governance.api_tokens``)."""
        stored = User.objects.filter(pk=unquote(id)).values_list("password", flat=True)
        with transaction.atomic():
            before = stored.first()
            with recorded_by_service():  # audited here, as user.password_set
                response = super().user_change_password(request, id, form_url)
            if before is not None and stored.first() != before:
                target = User.objects.get(pk=unquote(id))
                events.user_password_set_event(
                    actor=request.user, user=target, had_password=is_password_usable(before)
                )
        return response

    def _each(self, request, queryset, service, done):
        for user in queryset.order_by("username"):
            try:
                service(actor=request.user, user=user)
            except GovernanceError as exc:
                self.message_user(request, f"{user}: {exc.detail}", messages.ERROR)
            else:
                self.message_user(request, done % {"user": user}, messages.SUCCESS)

    @admin.action(description=_("Deactivate selected accounts (their pending approvals void)"))
    def deactivate_selected(self, request, queryset):
        self._each(
            request,
            queryset.filter(is_active=True),
            services.user_deactivate,
            _("%(user)s is deactivated."),
        )

    @admin.action(description=_("Remove back-office access from selected accounts"))
    def remove_access_selected(self, request, queryset):
        self._each(
            request,
            queryset.filter(is_staff=True) | queryset.filter(is_superuser=True),
            services.user_access_remove,
            _("%(user)s no longer has back-office access."),
        )


admin.site.unregister(Group)


@admin.register(Group)
class GroupAdmin(ReadOnlyAdminMixin, DjangoGroupAdmin):
    """Groups are read-only: fund roles are granted per person, through four eyes."""


# ---------------------------------------------------------------------------------------------
# Authenticators and API tokens: never shown
# ---------------------------------------------------------------------------------------------

admin.site.unregister(TOTPDevice)


@admin.register(TOTPDevice)
class AuthenticatorAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Who has an authenticator and when it was last used; never its key or QR code. People
    enrol their own at sign-in; a reset is an Admin change confirmed by a second
    administrator."""

    list_display = ("user", "name", "confirmed", "created_at", "last_used_at")
    list_filter = ("confirmed",)
    search_fields = ("user__username",)
    list_select_related = ("user",)
    fields = ("user", "name", "confirmed", "created_at", "last_used_at")
    readonly_fields = fields


@admin.register(ApiToken)
class ApiTokenAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Who holds which API token, for which device, until when; never the token or its digest.
    Tokens are issued through the API with both factors; a site administrator may revoke them
    (narrowing, so one is enough)."""

    list_display = ("user", "name", "prefix", "created_at", "expires_at", "last_used_at")
    list_display += ("revoked_at", "revoked_reason")
    list_filter = ("revoked_reason",)
    search_fields = ("user__username", "name", "prefix")
    list_select_related = ("user",)
    ordering = ("-created_at", "-id")
    fields = ("user", "name", "prefix", "created_at", "expires_at", "last_used_at")
    fields += ("revoked_at", "revoked_reason")
    readonly_fields = fields
    actions = ["revoke_selected"]

    def has_revoke_permission(self, request):
        return request.user.is_active and request.user.is_superuser

    @admin.action(description=_("Revoke selected tokens"), permissions=["revoke"])
    def revoke_selected(self, request, queryset):
        revoked = api_tokens_revoke(tokens=queryset, reason=ApiToken.RevokedReason.REVOKED_BY_ADMIN)
        self.message_user(
            request,
            ngettext("%(count)d token revoked.", "%(count)d tokens revoked.", revoked)
            % {"count": revoked},
            messages.SUCCESS,
        )
