"""Every write of the governance app: one function per use case, one transaction each.

Each service locks what it changes (``_locks``, in one fixed order), asks
``governance.permissions`` whether the actor may act and raises the refusal it returns, checks
the state against the transition table in ``governance.policies``, writes its audit event
through ``governance.events`` in the same transaction and saves with ``update_fields``.
Refusals of consequence are written to the audit log before the error is raised, so the record
of the attempt survives the refusal.

Callers import from here (``from governance import services``); the modules split the
services by domain.
"""

from governance.services.accounts import user_access_remove, user_deactivate
from governance.services.admin_changes import (
    admin_change_cancel,
    admin_change_confirm,
    admin_change_request,
    admin_changes_apply_due,
)
from governance.services.contributions import opening_balance_record
from governance.services.custody import (
    custody_account_remove,
    custody_change_cancel,
    custody_change_confirm,
    custody_change_request,
)
from governance.services.decisions import approvals_void, decision_record
from governance.services.executions import execution_record, proposal_close
from governance.services.policies import policy_draft, policy_publish
from governance.services.prices import price_enter_manual
from governance.services.proposals import (
    EDITABLE_FIELDS,
    proposal_create,
    proposal_submit,
    proposal_update,
    proposal_withdraw,
    proposals_expire_due,
)
from governance.services.roles import role_grant, role_revoke

__all__ = [
    "EDITABLE_FIELDS",
    "admin_change_cancel",
    "admin_change_confirm",
    "admin_change_request",
    "admin_changes_apply_due",
    "approvals_void",
    "custody_account_remove",
    "custody_change_cancel",
    "custody_change_confirm",
    "custody_change_request",
    "decision_record",
    "execution_record",
    "opening_balance_record",
    "policy_draft",
    "policy_publish",
    "price_enter_manual",
    "proposal_close",
    "proposal_create",
    "proposal_submit",
    "proposal_update",
    "proposal_withdraw",
    "proposals_expire_due",
    "role_grant",
    "role_revoke",
    "user_access_remove",
    "user_deactivate",
]
