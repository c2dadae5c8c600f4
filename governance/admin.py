"""Back office for governance: proposals, decisions, policies, the audit log and fund roles.

Nothing here moves a proposal or writes a record directly. Proposals, decisions, audit events
and published policies are read-only for everyone, superusers included; role grants, policy
drafts, policy publication and custody accounts go through ``governance.services``, which
enforce the rules (site administrator for roles, ``manage_policy`` and four eyes for policies and
custody accounts) and write the audit events. Nothing here books a ledger entry: every movement
of a fund's assets is a proposal (rule 15).
"""

import json

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Prefetch
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from django.utils.timezone import localtime
from django.utils.translation import gettext_lazy as _
from django_celery_beat import admin as beat_admin
from django_celery_beat.admin import PeriodicTaskAdmin as BeatPeriodicTaskAdmin
from django_celery_beat.models import (
    ClockedSchedule,
    CrontabSchedule,
    IntervalSchedule,
    PeriodicTask,
    PeriodicTasks,
    SolarSchedule,
)

from governance import permissions, services
from governance.admin_audit import OnTheRecordAdminMixin
from governance.audit import audit_verify
from governance.exceptions import GovernanceError, NotPermitted
from governance.forms import (
    AdminChangeConfirmForm,
    CustodyAccountRemoveForm,
    CustodyChangeRequestForm,
    ManualPriceForm,
    PolicyDraftForm,
    PolicyStageFormSet,
    RoleChangeForm,
)
from governance.models import (
    AdminChange,
    ApprovalPolicy,
    AuditChain,
    AuditCheckpoint,
    AuditEvent,
    AuditVerification,
    CheckpointAnchor,
    CustodyAccountChange,
    Decision,
    Execution,
    PolicyStage,
    Preference,
    Proposal,
    TaskOutbox,
)
from governance.roles import direct_grants, roles_on_fund, users_with_role
from governance.selectors import policy_in_force, proposal_stage_statuses
from governance.services import back_office
from portfolio import admin as portfolio_admin
from portfolio.admin_mixins import ExtraPagesMixin, ReadOnlyAdminMixin
from portfolio.exceptions import PortfolioError
from portfolio.models import Asset, Fund, FundingSource, FundRole, Price


def _pretty_json(value) -> str:
    return format_html(
        "<pre>{}</pre>",
        json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False),
    )


def _proposal_link(proposal_id: int | None) -> str:
    if proposal_id is None:
        return "-"
    url = reverse("admin:governance_proposal_change", args=[proposal_id])
    return format_html('<a href="{}">#{}</a>', url, proposal_id)


class ReadOnlyInlineMixin(ReadOnlyAdminMixin):
    extra = 0
    can_delete = False
    show_change_link = True


# ---------------------------------------------------------------------------------------------
# Funds: role grants and custody accounts, on top of portfolio's fund page
# ---------------------------------------------------------------------------------------------

admin.site.unregister(Fund)


@admin.register(Fund)
class FundAdmin(OnTheRecordAdminMixin, ExtraPagesMixin, portfolio_admin.FundAdmin):
    """Portfolio's fund page plus the governance tools: per-fund roles and custody accounts.
    Every creation and edit is audited with old and new values (``OnTheRecordAdminMixin``)."""

    extra_pages = (
        ("<path:object_id>/roles/", "roles_view", "roles"),
        ("<path:object_id>/custody/", "custody_view", "custody"),
    )

    def fund_tools(self, request, fund: Fund) -> list[tuple[str, str]]:
        tools = []
        if request.user.is_superuser:
            tools.append((_("Roles"), reverse("admin:portfolio_fund_roles", args=[fund.pk])))
        tools.append(
            (_("Custody accounts"), reverse("admin:portfolio_fund_custody", args=[fund.pk]))
        )
        return tools

    def _fund_or_redirect(self, request, object_id):
        fund = self.get_object(request, unquote(object_id))
        if fund is None:
            return None, self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        return fund, None

    def _fund_page(self, request, fund: Fund, template: str, title, **context):
        """A page about one fund, with the fund's breadcrumbs and permissions."""
        return self.page(
            request,
            template,
            title,
            original=fund,
            has_view_permission=self.has_view_permission(request, fund),
            has_change_permission=self.has_change_permission(request, fund),
            **context,
        )

    def roles_view(self, request, object_id):
        """Who holds which role on the fund, and the grants waiting or cooling off. A grant is
        a request a second site administrator confirms (``admin_change_request``); a revocation
        is immediate (``role_revoke``). Site administrators only; GET changes nothing.
        """
        if not request.user.is_superuser:
            raise PermissionDenied
        fund, redirect = self._fund_or_redirect(request, object_id)
        if redirect:
            return redirect
        form = RoleChangeForm()
        if request.method == "POST":
            form = RoleChangeForm(request.POST)
            action = request.POST.get("action", "")
            if action not in ("grant", "revoke"):
                form.add_error(None, _("Choose to grant or to revoke."))
            elif form.is_valid():
                user, role = form.cleaned_data["user"], form.cleaned_data["role"]
                names = {"user": user.username, "role": role, "fund": fund}
                try:
                    if action == "grant":
                        services.admin_change_request(
                            actor=request.user,
                            kind=AdminChange.Kind.ROLE_GRANT,
                            user=user,
                            fund=fund,
                            role=role,
                            reason=form.cleaned_data["reason"],
                        )
                        text = _(
                            "Requested: {role} on {fund} for {user}. Another site administrator "
                            "must confirm it under Admin changes."
                        )
                    elif services.role_revoke(actor=request.user, user=user, fund=fund, role=role):
                        text = _("{user} no longer holds {role} on {fund}.")
                    else:
                        text = _("{user} did not hold {role} on {fund}.")
                except NotPermitted as exc:
                    raise PermissionDenied(exc.detail) from exc
                except (GovernanceError, ValidationError) as exc:
                    messages.error(request, getattr(exc, "detail", None) or "; ".join(exc.messages))
                else:
                    self.message_user(request, text.format(**names), messages.SUCCESS)
                return HttpResponseRedirect(request.path)
        direct = direct_grants(fund)
        roles = [
            {
                "code": role.value,
                "label": role.label,
                "holders": [
                    {"user": user, "direct": (user.pk, role.value) in direct}
                    for user in users_with_role(fund, role.value).order_by("username")
                ],
            }
            for role in FundRole
        ]
        return self._fund_page(
            request,
            fund,
            "admin/portfolio/fund/roles.html",
            _("Roles on %(fund)s") % {"fund": fund},
            roles=roles,
            open_changes=AdminChange.objects.filter(
                fund=fund, state__in=AdminChange.OPEN_STATES
            ).select_related("user", "requested_by"),
            form=form,
        )

    def custody_view(self, request, object_id):
        """The fund's custody accounts and the changes waiting for a second administrator.

        Every button POSTs here and calls one service: a request to add or change an account
        (``custody_change_request``), a confirmation with the confirmer's one-time code
        (``custody_change_confirm``), a cancellation (``custody_change_cancel``) or a removal
        (``custody_account_remove``); the services check ``manage_policy`` and four eyes and
        write the audit events. Nothing on the page edits an account directly.
        """
        fund, redirect = self._fund_or_redirect(request, object_id)
        if redirect:
            return redirect
        if not self.has_view_permission(request, fund):
            raise PermissionDenied
        form = CustodyChangeRequestForm(fund=fund, initial={"action": "add"})
        if request.method == "POST":
            action = request.POST.get("action", "")
            if action in ("add", "change"):
                form = CustodyChangeRequestForm(request.POST, fund=fund)
                if form.is_valid() and self._custody_act(
                    request, form, self._custody_request, fund=fund
                ):
                    return HttpResponseRedirect(request.path)
            elif action in ("confirm", "cancel", "remove"):
                self._custody_act(request, None, getattr(self, f"_custody_{action}"), fund=fund)
                return HttpResponseRedirect(request.path)
            else:
                messages.error(request, _("Choose what to do."))
                return HttpResponseRedirect(request.path)
        roles = roles_on_fund(request.user, fund)
        pending = CustodyAccountChange.objects.filter(
            fund=fund, state=CustodyAccountChange.State.PENDING
        ).select_related("fund", "account", "requested_by")
        return self._fund_page(
            request,
            fund,
            "admin/portfolio/fund/custody.html",
            _("Custody accounts of %(fund)s") % {"fund": fund},
            accounts=fund.custody_accounts.order_by("-active", "name"),
            pending=[
                {
                    "change": change,
                    "confirm_refusal": permissions.custody_change_confirm_refusal(
                        request.user, change, roles=roles
                    ),
                    "cancel_refusal": permissions.custody_change_cancel_refusal(
                        request.user, change, roles=roles
                    ),
                }
                for change in pending
            ],
            decided=CustodyAccountChange.objects.filter(fund=fund)
            .exclude(state=CustodyAccountChange.State.PENDING)
            .select_related("requested_by", "decided_by")[:20],
            may_administer=permissions.fund_admin_refusal(request.user, fund, roles=roles) is None,
            form=form,
            code_form=AdminChangeConfirmForm(),
            now=timezone.now(),
        )

    def _custody_act(self, request, form, act, **kwargs) -> bool:
        """Run one custody service call; its refusal becomes the form's error (a request) or a
        message (the buttons). Whether it succeeded."""
        try:
            text = act(request, form, **kwargs)
        except (GovernanceError, ValidationError) as exc:
            if form is not None:
                form.add_error(None, exc.detail if isinstance(exc, GovernanceError) else exc)
            else:
                detail = getattr(exc, "detail", None) or "; ".join(exc.messages)
                messages.error(request, detail)
            return False
        self.message_user(request, text, messages.SUCCESS)
        return True

    def _custody_request(self, request, form, *, fund):
        change = services.custody_change_request(actor=request.user, fund=fund, **form.cleaned_data)
        return _(
            "Requested: %(change)s. Another fund administrator must confirm it with their "
            "one-time code."
        ) % {"change": change}

    def _custody_change(self, request, fund: Fund) -> CustodyAccountChange:
        change = CustodyAccountChange.objects.filter(
            fund=fund, pk=request.POST.get("change") or None
        ).first()
        if change is None:
            raise ValidationError(_("There is no such change of this fund."))
        return change

    def _custody_confirm(self, request, form, *, fund):
        change = services.custody_change_confirm(
            actor=request.user,
            change_id=self._custody_change(request, fund).pk,
            otp_token=request.POST.get("otp_token", ""),
        )
        return _("Confirmed: %(name)s is usable from %(when)s.") % {
            "name": change.account.name,
            "when": localtime(change.account.usable_from).strftime("%Y-%m-%d %H:%M"),
        }

    def _custody_cancel(self, request, form, *, fund):
        change = services.custody_change_cancel(
            actor=request.user, change_id=self._custody_change(request, fund).pk
        )
        return _("Cancelled: %(change)s.") % {"change": change}

    def _custody_remove(self, request, form, *, fund):
        remove = CustodyAccountRemoveForm(request.POST, fund=fund)
        if not remove.is_valid():
            raise ValidationError([e for errors in remove.errors.values() for e in errors])
        account = services.custody_account_remove(
            actor=request.user,
            account_id=remove.cleaned_data["account"].pk,
            reason=remove.cleaned_data["reason"],
        )
        return _("Removed: %(account)s; no operation uses it from now on.") % {"account": account}


admin.site.unregister(Asset)


@admin.register(Asset)
class AssetAdmin(OnTheRecordAdminMixin, portfolio_admin.AssetAdmin):
    """Portfolio's asset page; every creation and edit is audited with old and new values."""


admin.site.unregister(FundingSource)


@admin.register(FundingSource)
class FundingSourceAdmin(OnTheRecordAdminMixin, portfolio_admin.FundingSourceAdmin):
    """Portfolio's funding-source page; every creation and edit is audited, on its fund."""


admin.site.unregister(PeriodicTask)


@admin.register(PeriodicTask)
class PeriodicTaskAdmin(OnTheRecordAdminMixin, BeatPeriodicTaskAdmin):
    """django-celery-beat's schedule page, on the record: form saves, deletes and the enable,
    disable and toggle actions (which upstream does with one ``queryset.update``) are audited
    row by row with old and new values."""

    def _each_on_the_record(self, request, queryset, change) -> int:
        count = 0
        with transaction.atomic():
            for task in queryset.select_for_update(of=("self",)):
                with back_office.on_the_record(
                    actor=request.user, instance=task, via=back_office.ADMIN
                ):
                    change(task)
                    task.save()
                count += 1
        PeriodicTasks.update_changed()
        return count

    def _done(self, request, count, what):
        self.message_user(request, _("%(count)d tasks %(what)s.") % {"count": count, "what": what})

    @admin.action(description=_("Enable selected tasks"))
    def enable_tasks(self, request, queryset):
        def enable(task):
            task.enabled = True

        self._done(request, self._each_on_the_record(request, queryset, enable), _("enabled"))

    @admin.action(description=_("Disable selected tasks"))
    def disable_tasks(self, request, queryset):
        def disable(task):
            task.enabled, task.last_run_at = False, None

        self._done(request, self._each_on_the_record(request, queryset, disable), _("disabled"))

    @admin.action(description=_("Toggle activity of selected tasks"))
    def toggle_tasks(self, request, queryset):
        def toggle(task):
            task.enabled = not task.enabled

        self._done(request, self._each_on_the_record(request, queryset, toggle), _("toggled"))


# The schedules the periodic tasks run on: an interval shortened or a time of day moved changes
# when every task using it runs, so these are on the record too.
for _model, _upstream in (
    (ClockedSchedule, beat_admin.ClockedScheduleAdmin),
    (CrontabSchedule, beat_admin.CrontabScheduleAdmin),
    (IntervalSchedule, beat_admin.IntervalScheduleAdmin),
    (SolarSchedule, beat_admin.SolarScheduleAdmin),
):
    admin.site.unregister(_model)
    _on_the_record = (OnTheRecordAdminMixin, _upstream)
    admin.site.register(_model, type(_upstream.__name__, _on_the_record, {"__module__": __name__}))


admin.site.unregister(Price)


@admin.register(Price)
class PriceAdmin(ExtraPagesMixin, portfolio_admin.PriceAdmin):
    """Portfolio's read-only price list plus an audited manual entry for site administrators."""

    change_list_template = "admin/portfolio/price/change_list.html"

    extra_pages = (("manual/", "manual_price_view", "manual"),)

    def manual_price_view(self, request):
        """Enter a price through ``price_enter_manual`` (site administrators only)."""
        if not request.user.is_superuser:
            raise PermissionDenied
        form = ManualPriceForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                price = services.price_enter_manual(actor=request.user, **form.cleaned_data)
            except (GovernanceError, PortfolioError) as exc:
                form.add_error(None, exc.detail)
            else:
                self.message_user(
                    request,
                    _("Manual price stored: %(price)s.") % {"price": price},
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(reverse("admin:portfolio_price_changelist"))
        return self.page(
            request, "admin/portfolio/price/manual.html", _("Enter a manual price"), form=form
        )


# ---------------------------------------------------------------------------------------------
# Approval policies
# ---------------------------------------------------------------------------------------------


class PolicyStatusFilter(admin.SimpleListFilter):
    title = _("status")
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return [("draft", _("Draft")), ("published", _("Published"))]

    def queryset(self, request, queryset):
        if self.value() == "draft":
            return queryset.filter(published_at__isnull=True)
        if self.value() == "published":
            return queryset.filter(published_at__isnull=False)
        return queryset


class PolicyStageInline(ReadOnlyInlineMixin, admin.TabularInline):
    model = PolicyStage
    fields = ("order", "name", "permission", "quorum", "applies_from_usd", "kinds")
    readonly_fields = fields
    ordering = ("order",)
    show_change_link = False


@admin.register(ApprovalPolicy)
class ApprovalPolicyAdmin(admin.ModelAdmin):
    """Versions are drafted through ``policy_draft`` (own add page) and put in force by the
    "Publish" action (``policy_publish``, four eyes). No version is ever edited or deleted: to
    change a policy, draft the next version."""

    list_display = (
        "fund",
        "version",
        "status",
        "stage_summary",
        "note",
        "drafted_by",
        "drafted_at",
        "published_by",
        "published_at",
    )
    list_display_links = ("fund", "version")
    list_filter = (PolicyStatusFilter, "fund")
    search_fields = ("fund__name", "note")
    date_hierarchy = "drafted_at"
    ordering = ("fund__name", "-version")
    list_select_related = ("fund", "drafted_by", "published_by")
    inlines = [PolicyStageInline]
    fields = (
        "fund",
        "version",
        "status",
        "note",
        "drafted_by",
        "drafted_at",
        "published_by",
        "published_at",
        *Fund.DISCLOSURE,
        *Fund.MANDATE,
    )
    readonly_fields = fields
    actions = ["publish_selected"]

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("stages")

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description=_("status"), ordering="published_at")
    def status(self, policy: ApprovalPolicy) -> str:
        return _("Published") if policy.is_published else _("Draft")

    @admin.display(description=_("stages"))
    def stage_summary(self, policy: ApprovalPolicy) -> str:
        return format_html_join(
            mark_safe("<br>"),
            "{}. {} ({} × {}{}{})",
            (
                (
                    s.order,
                    s.name,
                    s.permission,
                    s.quorum,
                    f", from USD {s.applies_from_usd}" if s.applies_from_usd else "",
                    f", for {', '.join(s.kinds)}" if s.kinds else "",
                )
                for s in sorted(policy.stages.all(), key=lambda s: s.order)
            ),
        )

    @admin.action(description=_("Publish selected draft"))
    def publish_selected(self, request, queryset):
        for policy in queryset.select_related("fund").order_by("fund__name", "version"):
            try:
                services.policy_publish(actor=request.user, policy_id=policy.pk)
            except GovernanceError as exc:
                self.message_user(request, f"{policy}: {exc.detail}", messages.ERROR)
            else:
                self.message_user(
                    request, _("%(policy)s is now in force.") % {"policy": policy}, messages.SUCCESS
                )

    def add_view(self, request, form_url="", extra_context=None):
        """Draft the next version of a fund's policy through ``policy_draft``."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        if request.method == "POST":
            form = PolicyDraftForm(request.POST)
            stages = PolicyStageFormSet(request.POST, prefix="stages")
            if form.is_valid() and stages.is_valid():
                try:
                    policy = services.policy_draft(
                        actor=request.user,
                        fund=form.cleaned_data["fund"],
                        stages=stages.stage_specs(),
                        note=form.cleaned_data["note"],
                        disclosure=form.disclosure(),
                        mandate=form.mandate(),
                    )
                except GovernanceError as exc:
                    form.add_error(None, exc.detail)
                except ValidationError as exc:
                    form.add_error(None, exc)  # the service names the field it refuses
                else:
                    self.message_user(
                        request,
                        _("%(policy)s is drafted. Another fund administrator must publish it.")
                        % {"policy": policy},
                        messages.SUCCESS,
                    )
                    return HttpResponseRedirect(
                        reverse("admin:governance_approvalpolicy_change", args=[policy.pk])
                    )
        else:
            fund = self._fund_from_query(request)
            in_force = policy_in_force(fund) if fund else None
            carried = (*Fund.DISCLOSURE, *Fund.MANDATE)
            current = {field: getattr(fund, field) for field in carried} if fund else {}
            form = PolicyDraftForm(initial={"fund": fund, **current})
            stages = PolicyStageFormSet(
                prefix="stages",
                initial=[
                    {
                        "order": s.order,
                        "name": s.name,
                        "permission": s.permission,
                        "quorum": s.quorum,
                        "applies_from_usd": s.applies_from_usd,
                        "kinds": s.kinds,
                    }
                    for s in (in_force.stages.order_by("order") if in_force else [])
                ],
            )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": _("Draft a new policy version"),
            "form": form,
            "stages": stages,
            "funds": Fund.objects.order_by("name"),
            "add": True,
            "has_view_permission": self.has_view_permission(request),
            **(extra_context or {}),
        }
        return TemplateResponse(request, "admin/governance/approvalpolicy/draft.html", context)

    @staticmethod
    def _fund_from_query(request) -> Fund | None:
        """``?fund=<id>`` starts the draft from the stages of that fund's policy in force."""
        if "fund" not in request.GET:
            return None
        try:
            return PolicyDraftForm.base_fields["fund"].clean(request.GET["fund"])
        except ValidationError:
            return None


@admin.register(CustodyAccountChange)
class CustodyAccountChangeAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Requests to add or change a custody account, across funds. Read-only: each fund's
    "Custody accounts" page asks, confirms and cancels them through ``governance.services``."""

    list_display = ("id", "fund", "action", "name", "chain", "address", "account_reference")
    list_display += ("state", "requested_by", "requested_at", "decided_by", "decided_at")
    list_filter = ("state", "action", "fund")
    search_fields = ("name", "address", "account_reference", "reason")
    ordering = ("-requested_at", "-id")
    list_select_related = ("fund", "requested_by", "decided_by")


@admin.register(PolicyStage)
class PolicyStageAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Stages across policies, e.g. to find every stage a role decides at. Edited never: a
    stage belongs to its policy version (drafted through ``policy_draft``)."""

    list_display = ("policy", "order", "name", "permission", "quorum", "applies_from_usd", "kinds")
    list_filter = ("permission", "policy__fund")
    search_fields = ("name", "policy__fund__name")
    ordering = ("policy__fund__name", "-policy__version", "order")
    list_select_related = ("policy__fund",)


# ---------------------------------------------------------------------------------------------
# Proposals, decisions and executions
# ---------------------------------------------------------------------------------------------


class DecisionInline(ReadOnlyInlineMixin, admin.TabularInline):
    model = Decision
    fk_name = "proposal"
    fields = ("proposal_version", "stage", "user", "verdict", "comment", "created_at")
    readonly_fields = fields
    ordering = ("created_at", "id")

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("stage", "user")


class AuditEventInline(ReadOnlyInlineMixin, admin.TabularInline):
    model = AuditEvent
    fk_name = "proposal"
    verbose_name = _("audit event")
    verbose_name_plural = _("audit timeline")
    fields = ("sequence", "created_at", "actor", "action", "details")
    readonly_fields = fields
    ordering = ("sequence",)

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("actor")

    @admin.display(description=_("details"))
    def details(self, event: AuditEvent) -> str:
        return _pretty_json(event.payload)


class ExecutionInline(ReadOnlyInlineMixin, admin.TabularInline):
    model = Execution
    fk_name = "proposal"
    fields = ("executed_at", "quantity", "price_usd", "fee_usd", "cost_usd", "venue")
    fields += ("external_ref", "recorded_by")
    readonly_fields = fields
    ordering = ("executed_at", "id")

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("recorded_by")


@admin.register(Proposal)
class ProposalAdmin(admin.ModelAdmin):
    """Read-only: proposals are created, edited and moved only through the services (and so
    through the API and the officials' pages), never by editing fields here."""

    list_display = (
        "id",
        "fund",
        "asset",
        "kind",
        "notional_usd",
        "state",
        "version",
        "stage_progress",
        "author",
        "submitted_at",
        "created_at",
    )
    list_display_links = ("id",)
    list_filter = ("state", "fund", "asset", "kind")
    search_fields = ("=id", "rationale", "author__username", "asset__symbol", "fund__name")
    date_hierarchy = "created_at"
    ordering = ("-created_at", "-id")
    list_select_related = ("fund", "asset", "author", "policy", "current_stage")
    inlines = [DecisionInline, ExecutionInline, AuditEventInline]
    fieldsets = (
        (
            _("Terms"),
            {
                "fields": (
                    "fund",
                    "asset",
                    "kind",
                    "notional_usd",
                    "limit_price_usd",
                    "funding_source",
                    "rationale",
                    "author",
                )
            },
        ),
        (
            _("Workflow"),
            {
                "fields": (
                    "state",
                    "version",
                    "policy",
                    "current_stage",
                    "stage_table",
                    "approval_expires_at",
                    "executed_notional_usd",
                )
            },
        ),
        (_("Pre-trade compliance"), {"fields": ("compliance_report",)}),
        (
            _("Timestamps"),
            {"fields": ("created_at", "updated_at", "submitted_at", "decided_at")},
        ),
    )
    readonly_fields = ("stage_table", "compliance_report", "created_at", "updated_at")

    def get_queryset(self, request):
        # What stage_progress needs, fetched once per page rather than once per proposal.
        return (
            super()
            .get_queryset(request)
            .prefetch_related(
                "policy__stages",
                Prefetch("decisions", queryset=Decision.objects.select_related("user", "stage")),
            )
        )

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description=_("stages"))
    def stage_progress(self, proposal: Proposal) -> str:
        statuses = proposal_stage_statuses(proposal)
        if not statuses:
            return "-"
        return format_html_join(
            mark_safe("<br>"),
            "{}. {}: {} ({}/{})",
            ((s.order, s.name, s.status, len(s.approvals), s.quorum) for s in statuses),
        )

    @admin.display(description=_("stages of the current version"))
    def stage_table(self, proposal: Proposal) -> str:
        statuses = proposal_stage_statuses(proposal)
        if not statuses:
            return _("Not submitted yet: no policy snapshot.")
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    s.order,
                    s.name,
                    s.permission,
                    s.quorum,
                    ", ".join(s.approvals) or "-",
                    s.status,
                )
                for s in statuses
            ),
        )
        return format_html(
            "<table><thead><tr><th>#</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th>"
            "<th>{}</th></tr></thead><tbody>{}</tbody></table>",
            _("stage"),
            _("role"),
            _("quorum"),
            _("approvals"),
            _("status"),
            rows,
        )

    @admin.display(description=_("latest report"))
    def compliance_report(self, proposal: Proposal) -> str:
        report = proposal.compliance or {}
        if not report:
            return _("Not checked yet: compliance runs at submission and at final approval.")
        checks = format_html_join(
            "",
            "<tr><td>{}</td><td><strong>{}</strong></td><td>{}</td><td>{}</td></tr>",
            (
                (
                    check.get("rule", ""),
                    str(check.get("outcome", "")).upper(),
                    check.get("message", ""),
                    ", ".join(f"{k} = {v}" for k, v in (check.get("values") or {}).items()),
                )
                for check in report.get("checks", [])
            ),
        )
        price = report.get("price") or {}
        price_text = (
            f"{price.get('asset')} at USD {price['price_usd']} "
            f"({price.get('source')}, observed {price.get('observed_at')})"
            if price.get("price_usd")
            else _("no stored price")
        )
        return format_html(
            "<p><strong>{}</strong> · {} {} · {} {}</p><p>{} {}</p>"
            "<table><thead><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr></thead>"
            "<tbody>{}</tbody></table>",
            str(report.get("outcome", "")).upper(),
            _("checked for"),
            report.get("checked_for", "-"),
            _("at"),
            report.get("checked_at", "-"),
            _("Price seen:"),
            price_text,
            _("check"),
            _("outcome"),
            _("message"),
            _("values"),
            checks,
        )


class ProposalRecordAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Read-only pages of what was recorded against a proposal, with the evidence behind it."""

    @admin.display(description=_("proposal"), ordering="proposal_id")
    def proposal_link(self, record: Decision | Execution) -> str:
        return _proposal_link(record.proposal_id)


@admin.register(Decision)
class DecisionAdmin(ProposalRecordAdmin):
    list_display = ("id", "proposal_link", "proposal_version", "stage", "user", "verdict")
    list_display += ("created_at",)
    list_filter = ("verdict", "proposal__fund", "stage__permission")
    search_fields = ("=proposal__id", "user__username", "comment")
    date_hierarchy = "created_at"
    ordering = ("-created_at", "-id")
    list_select_related = ("stage", "user")
    fields = ("proposal", "proposal_version", "stage", "user", "proposal_author", "verdict")
    fields += ("comment", "confirmed_by_device", "evidence_display", "created_at")
    readonly_fields = fields

    @admin.display(description=_("evidence: what the decider saw"))
    def evidence_display(self, decision: Decision) -> str:
        return _pretty_json(decision.evidence)


@admin.register(Execution)
class ExecutionAdmin(ProposalRecordAdmin):
    """Fills are recorded by treasury operators through the execution service, never here."""

    list_display = ("id", "proposal_link", "quantity", "price_usd", "fee_usd", "cost_usd")
    list_display += ("venue", "external_ref", "executed_at", "recorded_by")
    list_filter = ("venue", "proposal__fund")
    search_fields = ("external_ref", "=proposal__id", "venue")
    date_hierarchy = "executed_at"
    ordering = ("-executed_at", "-id")
    list_select_related = ("recorded_by",)
    fields = ("proposal", "quantity", "price_usd", "fee_usd", "cost_usd", "venue")
    fields += ("external_ref", "executed_at", "recorded_by", "recorded_at")
    fields += ("confirmed_by_device", "evidence_display")
    readonly_fields = fields

    @admin.display(description=_("evidence: the price it was checked against"))
    def evidence_display(self, execution: Execution) -> str:
        return _pretty_json(execution.evidence)


# ---------------------------------------------------------------------------------------------
# The audit log
# ---------------------------------------------------------------------------------------------


@admin.register(AuditEvent)
class AuditEventAdmin(ExtraPagesMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    """Append-only and read-only for everyone, superusers included (rule 11).

    The changelist shows the chain head; verifying the whole chain replays every row, so it
    runs on its own page when asked for.
    """

    list_display = ("sequence", "created_at", "actor", "action", "fund", "proposal_link")
    list_display_links = ("sequence",)
    list_filter = ("action", "fund")
    search_fields = ("action", "payload", "actor__username")
    date_hierarchy = "created_at"
    ordering = ("-sequence",)
    list_select_related = ("actor", "fund")
    fields = (
        "sequence",
        "created_at",
        "actor",
        "action",
        "fund",
        "proposal",
        "payload_display",
        "previous_hash",
        "hash",
    )
    readonly_fields = fields

    extra_pages = (("verify/", "verify_view", "verify"),)

    @admin.display(description=_("proposal"), ordering="proposal_id")
    def proposal_link(self, event: AuditEvent) -> str:
        return _proposal_link(event.proposal_id)

    @admin.display(description=_("payload"))
    def payload_display(self, event: AuditEvent) -> str:
        return _pretty_json(event.payload)

    def changelist_view(self, request, extra_context=None):
        extra_context = {
            "audit_chain": AuditChain.objects.filter(pk=1).first(),
            **(extra_context or {}),
        }
        return super().changelist_view(request, extra_context)

    def verify_view(self, request):
        """Replay the whole chain (``audit_verify``) and show the result. Reads only."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        return self.page(
            request,
            "admin/governance/auditevent/verify.html",
            _("Audit chain verification"),
            result=audit_verify(),
            has_view_permission=True,
        )


@admin.register(AuditChain)
class AuditChainAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("id", "length", "head_hash", "head_digest")
    fields = ("length", "head_hash", "head_digest")
    readonly_fields = fields


@admin.register(AuditCheckpoint)
class AuditCheckpointAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Signed checkpoints of the public chain's head (``governance.checkpoints``), newest first."""

    list_display = ("sequence", "signed_at", "digest", "public_key")
    fields = ("sequence", "digest", "signed_at", "public_key", "signature")
    readonly_fields = fields


@admin.register(CheckpointAnchor)
class CheckpointAnchorAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Checkpoints written on chain (``governance.checkpoints.checkpoint_anchors_run``): each
    one's state, transaction, attempts and the last failure's reason, for the auditors."""

    list_display = ("checkpoint", "state", "tx_hash", "block_number", "attempts", "last_error")
    list_filter = ("state",)
    list_select_related = ("checkpoint",)
    fields = (
        "checkpoint",
        "state",
        "chain_id",
        "tx_hash",
        "block_number",
        "attempts",
        "last_error",
        "next_attempt_at",
        "sent_at",
        "confirmed_at",
    )
    readonly_fields = fields


@admin.register(AuditVerification)
class AuditVerificationAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """The chain's verifications as they ran (hourly, or asked for by an auditor)."""

    list_display = ("checked_at", "ok", "verified_count", "first_bad_sequence", "requested_by")
    list_filter = ("ok",)
    list_select_related = ("requested_by",)
    fields = ("checked_at", "requested_by", "ok", "verified_count", "first_bad_sequence", "reason")
    readonly_fields = fields


@admin.register(Preference)
class PreferenceAdmin(admin.ModelAdmin):
    """People's language, as they chose it with the switcher; e-mails to them are in it."""

    list_display = ("user", "language", "updated_at")
    list_filter = ("language",)
    search_fields = ("user__username", "user__email")
    list_select_related = ("user",)
    autocomplete_fields = ("user",)


@admin.register(TaskOutbox)
class TaskOutboxAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """The tasks changes queued (``governance.outbox``): what waits for the broker and why, and
    what went out lately. Written by the outbox only; ``manage.py outbox_relay`` sends now."""

    list_display = ("created_at", "task", "sent_at", "attempts", "available_at", "last_error")
    list_filter = (("sent_at", admin.EmptyFieldListFilter), "task")
    fields = (
        "task",
        "args",
        "kwargs",
        "request_id",
        "created_at",
        "available_at",
        "sent_at",
        "attempts",
        "last_error",
    )
    readonly_fields = fields


# People: accounts, authenticators, four-eyes changes (its own module, registered on import).
from governance import admin_people  # noqa: E402, F401
