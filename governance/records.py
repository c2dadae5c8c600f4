"""The records the audit chain vouches for, beyond its own rows (rule 11).

Every write of a ledger entry, a policy version, a policy stage, a decision or an execution is
audited by an event whose payload carries the row as it was written (``rows_json``): the fields
below, in one canonical form. ``governance.audit.audit_verify`` replays those snapshots and
compares them with the rows in the database, and replays ``role.granted`` / ``role.revoked``
against the fund roles held; so a ledger entry multiplied by 100, a quorum lowered from 2 to 1,
a row added or deleted behind the services' back, or a role assigned in SQL is named, even
though the chain itself is intact.
"""

import datetime as dt
from datetime import UTC
from decimal import Decimal

from django.apps import apps
from django.db import models

from portfolio.calculations import decimal_string

# model label -> the fields a snapshot holds (foreign keys by their ``_id``).
RECORDED = {
    "portfolio.ledgerentry": (
        "fund_id",
        "kind",
        "asset_id",
        "quantity",
        "value_usd",
        "funding_source_id",
        "reference",
        "booked_at",
        "booked_by_id",
        "account_id",
    ),
    "governance.approvalpolicy": (
        "fund_id",
        "version",
        "note",
        "drafted_by_id",
        "published_by_id",
        "published_at",
        "max_asset_share",
        "max_proposal_notional_usd",
        "execution_window_days",
        "price_tolerance",
        "max_fee_share",
        "custody_cooling_off_hours",
    ),
    "governance.policystage": (
        "policy_id",
        "order",
        "name",
        "permission",
        "quorum",
        "applies_from_usd",
        "kinds",
    ),
    "governance.decision": (
        "proposal_id",
        "proposal_version",
        "stage_id",
        "user_id",
        "verdict",
        "comment",
        "confirmed_by_device",
        "voided_at",
    ),
    "governance.execution": (
        "proposal_id",
        "quantity",
        "price_usd",
        "fee_usd",
        "cost_usd",
        "venue",
        "external_ref",
        "executed_at",
        "recorded_by_id",
        "confirmed_by_device",
        "kind",
        "fee_quantity",
        "realised_pnl_usd",
        "account_id",
        "destination_account_id",
    ),
}

# Fields recorded only since the whole-reserve issue: rows written before it have snapshots
# without them, so the verifier compares each only where the snapshot carries it.
RECORDED_SINCE_RESERVE = {
    "portfolio.ledgerentry": {"account_id"},
    "governance.approvalpolicy": {
        "max_asset_share",
        "max_proposal_notional_usd",
        "execution_window_days",
        "price_tolerance",
        "max_fee_share",
        "custody_cooling_off_hours",
    },
    "governance.policystage": {"kinds"},
    "governance.execution": {
        "kind",
        "fee_quantity",
        "realised_pnl_usd",
        "account_id",
        "destination_account_id",
    },
}


def recorded_differences(label: str, stored: dict, recorded: dict) -> list[str]:
    """The fields of a row's snapshot ``stored`` now that differ from its ``recorded`` one."""
    later = RECORDED_SINCE_RESERVE.get(label, set())
    return [
        f"{field} is {stored[field]!r}, recorded {recorded.get(field)!r}"
        for field in RECORDED[label]
        if (field in recorded or field not in later) and stored[field] != recorded.get(field)
    ]


def canonical(value):
    """One spelling per value, whether it comes from memory or back from the database."""
    if isinstance(value, Decimal):
        return decimal_string(value)
    if isinstance(value, dt.datetime):
        return value.astimezone(UTC).isoformat()
    return value


def snapshot(label: str, values: dict, fields=None) -> dict:
    """The snapshot of one row from its ``values()`` (as the database returns them), of
    ``fields`` (default: all that ``RECORDED`` names)."""
    return {
        "model": label,
        "id": values["id"],
        **{field: canonical(values[field]) for field in fields or RECORDED[label]},
    }


def recorded_before_reserve(label: str) -> list[str]:
    """The fields recorded of ``label`` before the whole-reserve issue: what a migration older
    than its columns can read."""
    later = RECORDED_SINCE_RESERVE.get(label, set())
    return [field for field in RECORDED[label] if field not in later]


def rows_json(*objs: models.Model) -> list[dict]:
    """Snapshots of just-written rows, read back from the database, so that they hold what was
    stored (a decimal rounded to its column, say), not what was in memory."""
    rows = []
    by_label: dict[str, list[int]] = {}
    for obj in objs:
        by_label.setdefault(obj._meta.label_lower, []).append(obj.pk)
    for label, ids in by_label.items():
        stored = apps.get_model(label)._default_manager.filter(pk__in=ids)
        for values in stored.order_by("pk").values("id", *RECORDED[label]):
            rows.append(snapshot(label, values))
    return rows


def recorded_models() -> list[type[models.Model]]:
    return [apps.get_model(label) for label in RECORDED]
