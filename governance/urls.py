"""The officials' pages of the governance app (the API lives in ``governance.api``)."""

from django.urls import path

from governance.views import audit, proposals, review

# Deciders and treasury: what waits for me, one proposal, a decision, a fill.
review_urls = [
    path("", review.queue, name="queue"),
    path("queue/updates/", review.queue_updates, name="queue-updates"),
    path("proposals/<int:pk>/", review.proposal_detail, name="proposal-detail"),
    path("proposals/<int:pk>/decide/", review.proposal_decide, name="proposal-decide"),
    path("proposals/<int:pk>/fills/", review.execution_create, name="execution-create"),
]

# Managers: drafts, edits, submission, withdrawal.
manager_urls = [
    path("funds/<int:fund_pk>/proposals/new/", proposals.proposal_new, name="proposal-new"),
    path("proposals/<int:pk>/edit/", proposals.proposal_edit, name="proposal-edit"),
    path("proposals/<int:pk>/submit/", proposals.proposal_submit, name="proposal-submit"),
    path("proposals/<int:pk>/withdraw/", proposals.proposal_withdraw, name="proposal-withdraw"),
]

# Auditors.
audit_urls = [
    path("audit/", audit.audit_log, name="audit-log"),
    path("audit/export.csv", audit.audit_export, name="audit-export"),
    path("audit/verify/", audit.audit_verify_request, name="audit-verify"),
]

urlpatterns = review_urls + manager_urls + audit_urls
