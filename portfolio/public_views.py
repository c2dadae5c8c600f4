"""The public pages: what each disclosing fund holds and bought, its policy and its decision
statistics, with the audit chain's signed checkpoints, for anyone, without signing in.

Every answer is read from the fund's stored document (``portfolio.disclosure``), never computed
per visitor: one query for the document, one for the checkpoints, and the rendered page is kept
in the cache for a minute per fund, language and document. A fund that does not disclose, or has
no document yet, does not exist here (404). Nothing sets a cookie: no session, no CSRF token,
the language comes from ``?lang=`` or the browser's Accept-Language.
"""

import csv
import datetime as dt
from itertools import pairwise

from django.conf import settings
from django.contrib.syndication.views import Feed
from django.core.cache import cache
from django.http import Http404, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import translation
from django.utils.feedgenerator import Atom1Feed
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET

from portfolio.models import Fund, PublicDisclosure
from portfolio.views import DAILY_SPAN_DAYS

CACHE_SECONDS = 60
MAX_AGE = 300
CHECKPOINTS_SHOWN = 10
PURCHASES_SHOWN = 100  # on the page; the CSV and the JSON have them all
FEED_ENTRIES = 50  # the newest disclosures, as feed readers expect


def _disclosure(slug: str) -> PublicDisclosure:
    found = (
        PublicDisclosure.objects.select_related("fund")
        .filter(fund__slug=slug, fund__disclose_holdings=True)
        .first()
    )
    if found is None:
        raise Http404("No public disclosure for this fund.")
    return found


def _language(request) -> str:
    wanted = request.GET.get("lang", "")
    return wanted if wanted in dict(settings.LANGUAGES) else translation.get_language()


def _public(response: HttpResponse) -> HttpResponse:
    response["Cache-Control"] = f"public, max-age={MAX_AGE}"
    return response


def checkpoints_context() -> dict:
    """The latest signed checkpoints of the audit chain, with their anchors, and the public key
    that verifies them (``governance.checkpoints``)."""
    from governance.anchoring import explorer_url
    from governance.checkpoints import checkpoint_public_key, checkpoints_public

    checkpoints = list(checkpoints_public().select_related("anchor")[:CHECKPOINTS_SHOWN])
    rows = []
    for checkpoint in checkpoints:
        anchor = getattr(checkpoint, "anchor", None)
        rows.append(
            {
                "sequence": checkpoint.sequence,
                "digest": checkpoint.digest,
                "signed_at": checkpoint.signed_at,
                "signature": checkpoint.signature,
                "anchor_state": anchor.state if anchor else "",
                "anchor_url": explorer_url(anchor.tx_hash) if anchor and anchor.tx_hash else "",
            }
        )
    return {"checkpoints": rows, "public_key": checkpoint_public_key()}


def _month_ends(history: list) -> list:
    """The last row of each month (oldest first), the newest one included: what the chart shows
    of a history longer than ``DAILY_SPAN_DAYS``, as on the portfolio page. The JSON keeps
    every day."""
    ends = [row for row, following in pairwise(history) if row[0][:7] != following[0][:7]]
    return [*ends, history[-1]]


def _nav_charts(history: list) -> list[dict]:
    monthly = len(history) > DAILY_SPAN_DAYS
    shown = _month_ends(history) if monthly else history
    if monthly:
        label = _("Net asset value in %(unit)s at the end of each month, up to the cutoff.")
    else:
        label = _("Net asset value in %(unit)s at the end of each day, up to the cutoff.")
    return [
        _nav_chart(shown, 1, "USD", "nav-usd-data", _("NAV (USD)"), label),
        _nav_chart(shown, 2, "KZT", "nav-kzt-data", _("NAV (KZT)"), label),
    ]


def _nav_chart(
    history: list, column: int, unit: str, element_id: str, name: str, label: str
) -> dict:
    points = [[row[0], row[column], row[column]] for row in history if row[column] is not None]
    return {
        "element_id": element_id,
        "kind": "line",
        "label": label % {"unit": unit},
        "data": {"unit": unit, "series": [{"name": name, "points": points}]},
        "headers": [_("Date"), name],
        "rows": [[day, shown] for day, _value, shown in points],
    }


@require_GET
def public_index(request):
    """The funds that disclose, with links to their pages."""
    language = _language(request)
    with translation.override(language):
        funds = Fund.objects.filter(disclose_holdings=True, disclosure__isnull=False).order_by(
            "name"
        )
        response = render(request, "public/index.html", {"funds": funds, "language": language})
    return _public(response)


@require_GET
def public_fund(request, slug: str):
    """A fund's public page, rendered once a minute per language from its stored document."""
    language = _language(request)
    key = f"public-fund:{slug}:{language}"
    cached = cache.get(key)
    if cached is None:
        disclosure = _disclosure(slug)
        document = disclosure.document
        with translation.override(language):
            context = {
                "fund": disclosure.fund,
                "document": document,
                "cutoff": disclosure.cutoff,
                "built_at": disclosure.built_at,
                "language": language,
                "nav_charts": _nav_charts(document["nav_history"]),
                "purchases": document["purchases"][:PURCHASES_SHOWN],
                "purchases_total": len(document["purchases"]),
                **checkpoints_context(),
            }
            cached = render(request, "public/fund.html", context).content
        cache.set(key, cached, CACHE_SECONDS)
    return _public(HttpResponse(cached, content_type="text/html; charset=utf-8"))


@require_GET
def public_fund_json(request, slug: str):
    """The fund's whole stored document, and the checkpoints, as JSON."""
    disclosure = _disclosure(slug)
    checkpoints = checkpoints_context()
    document = {
        **disclosure.document,
        "public_key": checkpoints["public_key"].hex,
        "checkpoints": [
            {**row, "signed_at": row["signed_at"].isoformat()} for row in checkpoints["checkpoints"]
        ],
    }
    return _public(JsonResponse(document, json_dumps_params={"ensure_ascii": False}))


PURCHASE_COLUMNS = (
    "executed_at",
    "asset",
    "chain",
    "quantity",
    "price_usd",
    "cost_usd",
    "tx_hash",
    "explorer_url",
)


@require_GET
def public_fund_purchases_csv(request, slug: str):
    """The disclosed purchases, newest first, one per row, amounts exact."""
    disclosure = _disclosure(slug)
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{slug}-purchases.csv"'
    writer = csv.writer(response)
    writer.writerow(PURCHASE_COLUMNS)
    for purchase in disclosure.document["purchases"]:
        writer.writerow([purchase[column] for column in PURCHASE_COLUMNS])
    return _public(response)


class PublicPurchasesFeed(Feed):
    """An Atom entry per disclosed purchase, the newest ``FEED_ENTRIES`` first: what became
    public and when.

    One instance serves every request, so nothing per request is kept on it: the language rides
    on the object, and the entries are built with their titles and links in ``items``."""

    feed_type = Atom1Feed
    item_guid_is_permalink = False

    def get_object(self, request, slug: str):
        disclosure = _disclosure(slug)
        disclosure.language = _language(request)
        return disclosure

    def title(self, disclosure):
        with translation.override(disclosure.language):
            return _("%(fund)s: disclosed purchases") % {"fund": disclosure.fund.name}

    def link(self, disclosure):
        return reverse("public-fund", args=[disclosure.fund.slug])

    def subtitle(self, disclosure):
        with translation.override(disclosure.language):
            return _("Purchases are disclosed %(days)s days after they were executed.") % {
                "days": disclosure.document["delay_days"]
            }

    def items(self, disclosure):
        page = reverse("public-fund", args=[disclosure.fund.slug])
        with translation.override(disclosure.language):
            return [
                {
                    **purchase,
                    "title": _("Bought %(quantity)s %(asset)s at %(price)s USD")
                    % {
                        "quantity": purchase["quantity"],
                        "asset": purchase["asset"],
                        "price": purchase["price_usd"],
                    },
                    "link": purchase["explorer_url"] or f"{page}#purchases-heading",
                }
                for purchase in disclosure.document["purchases"][:FEED_ENTRIES]
            ]

    def item_title(self, purchase):
        return purchase["title"]

    def item_description(self, purchase):
        return purchase["tx_hash"]

    def item_link(self, purchase):
        return purchase["link"]

    def item_guid(self, purchase):
        return f"alem-purchase-{purchase['id']}"

    def item_pubdate(self, purchase):
        return dt.datetime.fromisoformat(purchase["executed_at"])

    def __call__(self, request, *args, **kwargs):
        return _public(super().__call__(request, *args, **kwargs))
