"""The officials' pages of the portfolio app: one fund's positions, NAV and mandate.

Reads only: every number comes from ``portfolio.selectors`` and is shown through the
``alem_format`` filters; the charts get exact decimal strings in ``json_script`` blocks, which
``alem/static/alem/charts.js`` draws (the tables beside them are the accessible fallback).
"""

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from itertools import pairwise

from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, render
from django.utils import formats, timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_GET

from governance.selectors import request_roles
from portfolio import selectors
from portfolio.calculations import decimal_string
from portfolio.prices import consensus
from portfolio.reconciliation.selectors import VIEWING_ROLES, account_statuses
from portfolio.templatetags.alem_format import money
from portfolio.templatetags.alem_format import share as share_percent

# The NAV history periods offered, by their ``?days=`` value; None is the whole history.
PERIODS = {"30": 30, "90": 90, "365": 365, "all": None}
DEFAULT_PERIOD = "90"
# A NAV history spanning at most this many days is drawn day by day; a longer one (all of a
# fund's years) by the end of each month, which is all a chart's width and a table read aloud
# can carry.
DAILY_SPAN_DAYS = 366
PERIOD_LABELS = {
    "30": gettext_lazy("30 days"),
    "90": gettext_lazy("90 days"),
    "365": gettext_lazy("One year"),
    "all": gettext_lazy("All history"),
}


@dataclass(frozen=True)
class Flag:
    code: str
    text: str


@dataclass(frozen=True)
class PositionRow:
    position: object  # portfolio.calculations.Position
    flags: list[Flag]


@dataclass
class Chart:
    """One chart: the data ``charts.js`` draws and the same values as a table.

    ``data`` is ``{"unit": …, "series": [{"name": …, "points": [[x, value, display], …]}]}``;
    values are exact decimal strings, ``display`` the server's formatting of them.
    """

    element_id: str
    kind: str
    label: str
    data: dict
    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)


def _period(raw: str | None) -> str:
    """The requested period, or the default for anything else (no error: it is only a view)."""
    return raw if raw in PERIODS else DEFAULT_PERIOD


def _share(part: Decimal | None, whole: Decimal | None) -> Decimal | None:
    return None if part is None or not whole else part / whole


def _percent_text(ratio: Decimal | None) -> str:
    if ratio is None:
        return ""
    return _("%(value)s%%") % {"value": share_percent(ratio)}


def _allocation_chart(valuation) -> Chart:
    """Market value per priced asset, then cash; shares of NAV as the legend shows them."""
    nav = valuation.nav_usd
    points = [
        [p.symbol, decimal_string(p.market_value_usd), _percent_text(p.share)]
        for p in valuation.positions
        if p.market_value_usd is not None
    ]
    cash_label = _("US dollar cash")
    if valuation.cash_usd:
        share = _share(valuation.cash_usd, nav)
        points.append([cash_label, decimal_string(valuation.cash_usd), _percent_text(share)])
    return Chart(
        element_id="allocation-data",
        kind="donut",
        label=_("Allocation of the fund by market value in US dollars, with each share of NAV."),
        data={"unit": "USD", "series": [{"name": _("Allocation"), "points": points}]},
        headers=[_("Holding"), _("Market value (USD)"), _("Share of NAV")],
        rows=[[label, money(value), share] for label, value, share in points],
    )


def _month_ends(snapshots: list) -> list:
    """The last snapshot of each month (oldest first), the newest one included."""
    ends = [
        snapshot
        for snapshot, following in pairwise(snapshots)
        if (snapshot.date.year, snapshot.date.month) != (following.date.year, following.date.month)
    ]
    return [*ends, snapshots[-1]]


def _nav_chart(
    snapshots, *, attribute: str, unit: str, element_id: str, name: str, label: str
) -> Chart:
    points = [
        [s.date.isoformat(), decimal_string(getattr(s, attribute)), money(getattr(s, attribute))]
        for s in snapshots
        if getattr(s, attribute) is not None
    ]
    dates = {s.date.isoformat(): formats.date_format(s.date, "DATE_FORMAT") for s in snapshots}
    return Chart(
        element_id=element_id,
        kind="line",
        label=label,
        data={"unit": unit, "series": [{"name": name, "points": points}]},
        headers=[_("Date"), name],
        rows=[[dates[day], shown] for day, _value, shown in points],
    )


def _nav_charts_shown(*, monthly: bool) -> list[tuple[str, str, dict]]:
    """The NAV histories drawn, in order: (snapshot attribute, unit, ``_nav_chart`` texts)."""
    if monthly:
        usd = _("Net asset value in US dollars at the end of each month of the period.")
        kzt = _("Net asset value in tenge at the end of each month of the period.")
    else:
        usd = _("Net asset value in US dollars at the end of each day of the period.")
        kzt = _("Net asset value in tenge at the end of each day of the period.")
    return [
        ("nav_usd", "USD", {"element_id": "nav-usd-data", "name": _("NAV (USD)"), "label": usd}),
        ("nav_kzt", "KZT", {"element_id": "nav-kzt-data", "name": _("NAV (KZT)"), "label": kzt}),
    ]


@login_required
@require_GET
def portfolio(request, pk: int):
    """One fund's positions, allocation, NAV history, custody accounts with what each holds,
    funding sources and mandate limits.

    404 for a fund the user holds no role on. ``?days=30|90|365|all`` picks the NAV period;
    anything else shows the default period.
    """
    fund = get_object_or_404(selectors.funds_for_user(request.user), pk=pk)
    period = _period(request.GET.get("days"))
    current = selectors.fund_valuation(fund)
    valuation = current.valuation

    days = PERIODS[period]
    start = None if days is None else timezone.localdate() - dt.timedelta(days=days - 1)
    snapshots = list(selectors.nav_history(fund, start=start).only("date", "nav_usd", "nav_kzt"))
    monthly = bool(snapshots) and (snapshots[-1].date - snapshots[0].date).days > DAILY_SPAN_DAYS
    if monthly:
        snapshots = _month_ends(snapshots)

    accounts = selectors.custody_accounts_with_positions(fund)
    statuses = account_statuses(entry.account.pk for entry in accounts)
    for entry in accounts:
        entry.account.reconciliation = statuses[entry.account.pk]
    positions = [
        PositionRow(
            position=p,
            flags=[
                Flag(code, str(consensus.FLAG_WORDS.get(code, code)))
                for code in current.consensus[p.asset_id].flags
            ],
        )
        for p in valuation.positions
    ]
    nav_charts = [
        _nav_chart(snapshots, attribute=attribute, unit=unit, **texts)
        for attribute, unit, texts in _nav_charts_shown(monthly=monthly)
    ]
    context = {
        "nav_section": "portfolio",
        "nav_fund_id": fund.pk,
        "fund": fund,
        "current": current,
        "valuation": valuation,
        "positions": positions,
        "cash_share": _share(valuation.cash_usd, valuation.nav_usd),
        "allocation_chart": _allocation_chart(valuation),
        "nav_charts": nav_charts,
        "periods": [(key, PERIOD_LABELS[key]) for key in PERIODS],
        "period": period,
        "funding_sources": selectors.funding_sources_with_contributions(fund),
        # From the roles the page's navigation reads anyway: no query of its own.
        "sees_reconciliation": bool(request_roles(request).get(fund.pk, set()) & VIEWING_ROLES),
        "custody_accounts": accounts,
        "outside_accounts": selectors.holdings_outside_accounts(
            [
                selectors.Holding(p.asset_id, p.symbol, p.quantity, p.cost_basis_usd)
                for p in valuation.positions
            ],
            accounts,
        ),
        "now": timezone.now(),
    }
    return render(request, "portfolio/portfolio.html", context)
