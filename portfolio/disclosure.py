"""A fund's public disclosure: what anyone may see without signing in, and never anything newer
than the fund's delay.

The settings (``Fund.DISCLOSURE``) are drafted with an approval policy version and set on the
fund only when a second administrator publishes it (``governance.services.policy_publish``).
``disclosure_build`` computes, ahead of any visitor, one JSON document per disclosing fund
(``PublicDisclosure``); the public pages and feeds (``portfolio.public_views``) only read it.

The cutoff is ``built_at - delay``: an execution shows once ``executed_at <= cutoff`` (so one
executed exactly ``delay`` ago shows, one a second later does not); the NAV history stops at the
last snapshot dated on or before the cutoff's (Almaty) day; holdings are the ledger booked by the
cutoff, valued at the consensus prices and official rate of that moment; statistics count
proposals submitted by the cutoff, as they stood at the cutoff.
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from portfolio.calculations import decimal_string
from portfolio.models import Fund, NavSnapshot, PublicDisclosure

MAX_DELAY_DAYS = 3650

# The explorer page of a transaction, by the chain name assets carry (``Asset.chain``).
EXPLORERS = {
    "bnb smart chain": "https://bscscan.com/tx/{tx_hash}",
    "ethereum": "https://etherscan.io/tx/{tx_hash}",
    "bitcoin": "https://mempool.space/tx/{tx_hash}",
    "solana": "https://solscan.io/tx/{tx_hash}",
}


def explorer_url(chain: str, tx_hash: str) -> str:
    """The transaction on its chain's public explorer, or "" for a chain without one known."""
    if not tx_hash:
        return ""
    template = EXPLORERS.get(chain.strip().lower())
    return template.format(tx_hash=tx_hash) if template else ""


@dataclass(frozen=True)
class Disclosure:
    """A fund's disclosure settings, as a policy version carries them."""

    disclose_holdings: bool
    disclosure_delay_days: int
    disclose_deciders: bool

    @classmethod
    def of(cls, source) -> Disclosure:
        """The settings of a fund or of an approval policy version."""
        return cls(*(getattr(source, field) for field in Fund.DISCLOSURE))

    def validate(self) -> None:
        if not 0 <= self.disclosure_delay_days <= MAX_DELAY_DAYS:
            raise ValidationError(
                {"disclosure_delay_days": f"The delay is 0 to {MAX_DELAY_DAYS} days."}
            )


def _text(value: Decimal | int | None) -> str | None:
    """An amount as its exact digits, without storage zeros (None stays None)."""
    return None if value is None else decimal_string(value)


def disclosure_build(fund: Fund, *, now: dt.datetime | None = None) -> PublicDisclosure | None:
    """Build and store ``fund``'s public document as of ``now`` (default: now); None, and any
    stored document deleted, when the fund does not disclose."""
    if not fund.disclose_holdings:
        PublicDisclosure.objects.filter(fund=fund).delete()
        return None
    now = now or timezone.now()
    cutoff = now - dt.timedelta(days=fund.disclosure_delay_days)
    document = {
        "fund": {"name": fund.name, "slug": fund.slug},
        "built_at": now.isoformat(),
        "cutoff": cutoff.isoformat(),
        "delay_days": fund.disclosure_delay_days,
        "holdings": _holdings(fund, cutoff),
        "nav_history": _nav_history(fund, cutoff),
        "purchases": _purchases(fund, cutoff),
        "policy": _policy(fund),
        "mandate": {name: _text(getattr(fund, name)) for name in Fund.MANDATE_LIMITS},
        "statistics": _statistics(fund, cutoff),
    }
    with transaction.atomic():
        disclosure, _created = PublicDisclosure.objects.update_or_create(
            fund=fund, defaults={"built_at": now, "cutoff": cutoff, "document": document}
        )
    return disclosure


def disclosures_refresh(*, now: dt.datetime | None = None) -> int:
    """Rebuild the document of every fund that discloses and drop those of funds that stopped;
    returns how many were built. Run every 15 minutes (``portfolio.tasks``) and after a policy
    publication."""
    PublicDisclosure.objects.exclude(fund__disclose_holdings=True).delete()
    built = 0
    for fund in Fund.objects.filter(disclose_holdings=True).order_by("pk"):
        built += disclosure_build(fund, now=now) is not None
    return built


def _holdings(fund: Fund, cutoff: dt.datetime) -> dict:
    from portfolio.selectors import fund_valuation

    current = fund_valuation(fund, at=cutoff)
    valuation, rate = current.valuation, current.rate
    kzt = rate.rate if rate else None
    return {
        "cash_usd": _text(valuation.cash_usd),
        "nav_usd": _text(valuation.nav_usd),
        "nav_kzt": _text(current.nav_kzt),
        "usd_kzt_rate": _text(kzt),
        "rate_date": rate.date.isoformat() if rate else None,
        "positions": [
            {
                "asset": position.symbol,
                "quantity": _text(position.quantity),
                "price_usd": _text(position.price_usd),
                "value_usd": _text(position.market_value_usd),
                "value_kzt": _text(
                    None
                    if position.market_value_usd is None or kzt is None
                    else position.market_value_usd * kzt
                ),
                "share": _text(position.share),
            }
            for position in valuation.positions
        ],
    }


def _nav_history(fund: Fund, cutoff: dt.datetime) -> list[list]:
    # NAV snapshots are dated by the Almaty day, like the cutoff's day here.
    day = timezone.localdate(cutoff)
    rows = NavSnapshot.objects.filter(fund=fund, date__lte=day).order_by("date")
    return [
        [day.isoformat(), _text(nav_usd), _text(nav_kzt)]
        for day, nav_usd, nav_kzt in rows.values_list("date", "nav_usd", "nav_kzt")
    ]


def _purchases(fund: Fund, cutoff: dt.datetime) -> list[dict]:
    from governance.models import Execution

    executions = (
        Execution.objects.filter(proposal__fund=fund, executed_at__lte=cutoff)
        .select_related("proposal__asset")
        .order_by("-executed_at", "-id")
    )
    return [
        {
            "id": execution.pk,
            "executed_at": execution.executed_at.isoformat(),
            "asset": execution.proposal.asset.symbol,
            "chain": execution.proposal.asset.chain,
            "quantity": _text(execution.quantity),
            "price_usd": _text(execution.price_usd),
            "cost_usd": _text(execution.cost_usd),
            "tx_hash": execution.tx_hash,
            "explorer_url": explorer_url(execution.proposal.asset.chain, execution.tx_hash),
        }
        for execution in executions
    ]


def _policy(fund: Fund) -> dict | None:
    from governance.selectors import policy_in_force

    policy = policy_in_force(fund)
    if policy is None:
        return None
    return {
        "version": policy.version,
        "published_at": policy.published_at.isoformat(),
        "stages": [
            {
                "order": stage.order,
                "name": stage.name,
                "role": stage.permission,
                "quorum": stage.quorum,
                "applies_from_usd": _text(stage.applies_from_usd),
            }
            for stage in policy.stages.order_by("order")
        ],
    }


def _statistics(fund: Fund, cutoff: dt.datetime) -> dict:
    """Proposals submitted by the cutoff, by where they stood at the cutoff, and the median
    hours from a stage opening to its last deciding approval. Deciders are named only when the
    fund says so."""
    from governance.models import Decision, Proposal

    submitted = Proposal.objects.filter(fund=fund, submitted_at__lte=cutoff)
    outcome = defaultdict(int)
    for state, decided_at in submitted.values_list("state", "decided_at"):
        settled = decided_at is not None and decided_at <= cutoff
        outcome[state if settled else "in_review"] += 1
    decisions = (
        Decision.objects.filter(proposal__in=submitted, created_at__lte=cutoff)
        .select_related("stage", "user", "proposal")
        .order_by("proposal_id", "proposal_version", "created_at", "id")
    )
    hours_by_stage: dict[str, list[float]] = defaultdict(list)
    opened: dict[tuple[int, int], dt.datetime] = {}
    deciders: dict[str, int] = defaultdict(int)
    for decision in decisions:
        key = (decision.proposal_id, decision.proposal_version)
        start = opened.get(key, decision.proposal.submitted_at)
        if decision.verdict == Decision.Verdict.APPROVE:
            hours_by_stage[decision.stage.name].append(
                (decision.created_at - start).total_seconds() / 3600
            )
            opened[key] = decision.created_at
        deciders[decision.user.get_username()] += 1
    result = {
        "submitted": submitted.count(),
        "approved": outcome["approved"] + outcome["executed"] + outcome["expired"],
        "rejected": outcome["rejected"],
        "withdrawn": outcome["withdrawn"],
        "in_review": outcome["in_review"] + outcome["changes_requested"],
        "median_hours_per_stage": {
            name: round(statistics.median(hours), 1) for name, hours in hours_by_stage.items()
        },
    }
    if fund.disclose_deciders:
        result["decisions_by_person"] = dict(sorted(deciders.items()))
    return result
