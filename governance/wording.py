"""Records in plain words, in the reader's language: refusals, compliance checks, audit events.

The services raise errors with a stable ``code`` and an English ``detail`` for the API and the
audit log, and store compliance reports and event payloads as values; these functions fill the
phrase tables of ``governance.vocabulary`` with them, so an official reads a sentence they can
act on.
"""

import datetime as dt
from decimal import Decimal

from django.utils import formats, timezone
from django.utils.translation import gettext as _t

from governance.exceptions import GovernanceError
from governance.vocabulary import (
    CHECK_SENTENCES,
    COMPLIANCE_CHECKS,
    EVENT_SENTENCES,
    REFUSALS,
    VERDICT_SENTENCES,
    VOID_REASONS,
    AuditAction,
)
from portfolio.prices import consensus as price_consensus
from portfolio.templatetags.alem_format import money, percent, quantity


def action_label(action: str) -> str:
    """The plain-words label of an audit action, in the reader's language (an unknown action
    shows as its own code)."""
    return str(AuditAction(action).label) if action in AuditAction.values else action


def asset_symbol(proposal) -> str:
    """What the proposal moves, as its checks and headings name it: the asset's symbol, or USD
    for an intake of US dollars."""
    return proposal.asset.symbol if proposal.asset is not None else "USD"


def refusal_message(error: GovernanceError) -> str:
    """The plain-words rule behind ``error``, or its own detail for a code without one."""
    return str(REFUSALS.get(error.code, error.detail))


def _check_key_and_values(check: dict, asset: str) -> tuple[tuple[str, str], dict]:
    rule, outcome, values = check.get("rule"), check.get("outcome"), check.get("values") or {}

    def number(name, shown=money):
        return shown(Decimal(values[name]))

    if rule == "concentration" and "unpriced" in values:
        return (rule, "unpriced"), {"unpriced": values["unpriced"]}
    if rule == "concentration" and "post_trade_share" not in values:
        return (rule, "no_value"), {}
    if rule in ("limit_price", "lowest_price") and "market_price_usd" not in values:
        return (rule, "no_market"), {}
    if rule == "custody_accounts":
        # The reasons name accounts and moments; the stored message says them.
        return (rule, outcome if outcome == "pass" else "stored"), {}
    if rule == "market_price" and outcome == "pass" and "price_usd" not in values:
        # US dollars, valued at par: no sentence of its own, the stored message says so.
        return (rule, "par"), {}
    words = {"asset": asset}
    if rule == "single_proposal_limit":
        words |= {"notional": number("notional_usd"), "limit": number("limit_usd")}
    elif rule == "cash":
        words |= {
            "available": number("available_usd"),
            "reserved": number("reserved_usd"),
            "notional": number("notional_usd"),
        }
    elif rule == "concentration":
        words |= {
            "share": number("post_trade_share", percent),
            "limit": number("limit", percent),
        }
    elif rule == "market_price" and outcome == "pass":
        words |= {"price": number("price_usd", quantity)}
    elif rule == "market_price":
        flags = [flag.strip() for flag in values.get("flags", "").split(",") if flag.strip()]
        flag_words = price_consensus.FLAG_WORDS
        words |= {"flags": " ".join(str(flag_words.get(flag, flag)) for flag in flags)}
    elif rule == "holdings":
        words |= {
            "available": number("available_quantity", quantity),
            "reserved": number("reserved_quantity", quantity),
            "needed": number("quantity", quantity),
        }
    elif rule in ("limit_price", "lowest_price"):
        words |= {
            "limit": number("limit_price_usd", quantity),
            "market": number("market_price_usd", quantity),
        }
    return (rule, outcome), words


def compliance_checks(report: dict | None, *, asset: str, outcome: str | None = None) -> list:
    """The checks of a stored compliance report (``outcome`` only, if given), each with its
    ``label`` and ``sentence`` in the reader's language; a check this module cannot word
    keeps its stored English message."""
    checks = []
    for check in (report or {}).get("checks", []):
        if outcome is not None and check.get("outcome") != outcome:
            continue
        (rule, found), words = _check_key_and_values(check, asset)
        sentence = CHECK_SENTENCES.get(rule, {}).get(found)
        checks.append(
            {
                **check,
                "label": str(COMPLIANCE_CHECKS.get(check.get("rule"), check.get("rule", ""))),
                "sentence": str(sentence) % words if sentence else check.get("message", ""),
            }
        )
    return checks


def _when(iso: str | None) -> str:
    if not iso:
        return ""
    moment = dt.datetime.fromisoformat(iso)
    return formats.date_format(timezone.localtime(moment), "DATETIME_FORMAT")


def event_sentence(event, proposal, stage_names: dict[int, str]) -> dict:
    """One audit event in plain words: the sentence, and the refusal or comment beside it."""
    payload = event.payload or {}

    def stage(order):
        return stage_names.get(order) or _t("stage %(order)s") % {"order": order}

    values = {
        "actor": (
            (event.actor.get_full_name() or event.actor.username)
            if event.actor
            else _t("Alem (automatic)")
        ),
        "version": payload.get("version", ""),
        "policy_version": payload.get("policy_version", ""),
        "stage": stage(payload.get("stage")),
        "next_stage": stage(payload.get("next_stage")),
        "expires": _when(payload.get("approval_expires_at")),
        "quantity": quantity(payload.get("quantity")),
        "asset": asset_symbol(proposal),
        "price": quantity(payload.get("price_usd")),
        "cost": money(payload.get("cost_usd")),
        "reference": payload.get("external_ref", ""),
        "executed": money(payload.get("executed_notional_usd")),
        "person": payload.get("user", ""),
        "reason": VOID_REASONS.get(payload.get("reason"), payload.get("reason", "")),
    }
    if event.action == AuditAction.DECISION_RECORDED:
        template = VERDICT_SENTENCES.get(payload.get("verdict"))
    else:
        template = EVENT_SENTENCES.get(event.action)
    sentence = str(template) % values if template else event.action
    code = payload.get("code", "")
    is_decision = event.action == AuditAction.DECISION_RECORDED
    return {
        "event": event,
        "sentence": sentence,
        "refusal": str(REFUSALS.get(code, payload.get("detail", ""))) if code else "",
        "code": code,
        "comment": payload.get("comment", "") if is_decision else "",
    }
