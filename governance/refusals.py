"""Refusals and compliance checks in plain words, in the reader's language.

The services raise errors with a stable ``code`` and an English ``detail`` for the API and the
audit log; the pages show the rule behind each code in a sentence an official can act on.
"""

from decimal import Decimal

from django.utils.translation import gettext_lazy as _

from governance.exceptions import GovernanceError
from portfolio.prices import consensus as price_consensus
from portfolio.templatetags.alem_format import money, percent, quantity

REFUSALS = {
    "not_permitted": _("You do not hold the role on this fund that this action needs."),
    "second_factor_required": _(
        "This action needs a one-time code, and you have not set up an authenticator app yet."
    ),
    "second_factor_invalid": _(
        "The one-time code was wrong, already used or expired. Nothing was recorded; enter the "
        "current code from your authenticator app."
    ),
    "segregation_of_duties": _(
        "The author of a proposal can neither decide on it nor record its execution."
    ),
    "invalid_state": _("The proposal is no longer in a state that allows this action."),
    "stage_not_current": _("This stage is not the proposal's current stage."),
    "already_decided": _("You have already decided on this version of the proposal."),
    "compliance_blocked": _(
        "A pre-trade compliance check blocks this step; the checks below give the reasons."
    ),
    "no_policy_in_force": _(
        "The fund has no published approval policy, so nothing can be submitted."
    ),
    "policy_invalid": _("The approval policy's stages do not form a usable approval chain."),
    "four_eyes_required": _("A second person must make this change."),
    "approval_expired": _("The approval has expired; the proposal accepts no more fills."),
    "executed_in_future": _("The execution time is in the future."),
    "executed_before_approval": _("The execution time is before the proposal was approved."),
    "above_limit_price": _("The price is above the proposal's limit price."),
    "over_notional": _("The fill would spend more than the approved notional that remains."),
    "consensus_unusable": _(
        "There is no usable market price for this moment (stale, divergent or single-source), "
        "so the fill cannot be checked."
    ),
    "price_outside_tolerance": _(
        "The price is further from the market consensus than the fund's tolerance allows."
    ),
    "duplicate_external_ref": _(
        "This external reference is already booked against another proposal."
    ),
}

COMPLIANCE_CHECKS = {
    "whitelist": _("Asset on the fund's whitelist"),
    "single_proposal_limit": _("Single-proposal limit"),
    "cash": _("Cash available"),
    "concentration": _("Post-trade concentration"),
    "market_price": _("Usable market price"),
    "limit_price": _("Limit price against the market"),
}


def refusal_message(error: GovernanceError) -> str:
    """The plain-words rule behind ``error``, or its own detail for a code without one."""
    return str(REFUSALS.get(error.code, error.detail))


# What a compliance check found, per rule and outcome, worded from the check's values. The
# stored report keeps the English message for the API and the record; pages show these.
CHECK_SENTENCES = {
    ("whitelist", "pass"): _("%(asset)s is on the fund's whitelist."),
    ("whitelist", "block"): _("%(asset)s is not on the fund's whitelist."),
    ("single_proposal_limit", "pass"): _(
        "The notional of USD %(notional)s is within the single-proposal limit of USD %(limit)s."
    ),
    ("single_proposal_limit", "warn"): _(
        "The notional of USD %(notional)s is close to the single-proposal limit of USD %(limit)s."
    ),
    ("single_proposal_limit", "block"): _(
        "The notional of USD %(notional)s exceeds the single-proposal limit of USD %(limit)s."
    ),
    ("cash", "pass"): _("Enough cash: USD %(available)s available, USD %(notional)s needed."),
    ("cash", "warn"): _(
        "The proposal would use almost all available cash: USD %(available)s available, "
        "USD %(notional)s needed."
    ),
    ("cash", "block"): _(
        "Not enough cash: USD %(available)s available after USD %(reserved)s reserved for "
        "approved proposals, USD %(notional)s needed."
    ),
    ("concentration", "pass"): _(
        "After the trade %(asset)s would be %(share)s%% of the fund; the limit is %(limit)s%%."
    ),
    ("concentration", "warn"): _(
        "After the trade %(asset)s would be %(share)s%% of the fund, close to the limit of "
        "%(limit)s%%."
    ),
    ("concentration", "block"): _(
        "After the trade %(asset)s would be %(share)s%% of the fund, above the limit of "
        "%(limit)s%%."
    ),
    ("concentration", "unpriced"): _("Holdings cannot be valued: no price for %(unpriced)s."),
    ("concentration", "no_value"): _("The fund has no value to measure a share against."),
    ("market_price", "pass"): _("%(asset)s has a usable consensus price of USD %(price)s."),
    ("market_price", "warn"): _(
        "The consensus price of %(asset)s cannot back an approval yet: %(flags)s"
    ),
    ("market_price", "block"): _(
        "The consensus price of %(asset)s cannot back an approval: %(flags)s"
    ),
    ("limit_price", "pass"): _("The limit price is at or above the market."),
    ("limit_price", "no_market"): _("No market price to compare the limit price with."),
    ("limit_price", "warn"): _(
        "The limit price of USD %(limit)s is below the consensus price of USD %(market)s: the "
        "order may not fill."
    ),
}


def _check_key_and_values(check: dict, asset: str) -> tuple[tuple[str, str], dict]:
    rule, outcome, values = check.get("rule"), check.get("outcome"), check.get("values") or {}

    def number(name, shown=money):
        return shown(Decimal(values[name]))

    if rule == "concentration" and "unpriced" in values:
        return (rule, "unpriced"), {"unpriced": values["unpriced"]}
    if rule == "concentration" and "post_trade_share" not in values:
        return (rule, "no_value"), {}
    if rule == "limit_price" and "market_price_usd" not in values:
        return (rule, "no_market"), {}
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
    elif rule == "limit_price":
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
        key, words = _check_key_and_values(check, asset)
        sentence = CHECK_SENTENCES.get(key)
        checks.append(
            {
                **check,
                "label": str(COMPLIANCE_CHECKS.get(check.get("rule"), check.get("rule", ""))),
                "sentence": str(sentence) % words if sentence else check.get("message", ""),
            }
        )
    return checks
