"""Every write of market data: prices, official rates, fetch runs and their failures.

``prices_store`` is the one writer of ``Price`` rows, with one idempotency rule: an observation
(asset, source, quote currency, time) is stored once, and storing it again adds nothing. The
fetches, the backfills, the import of daily closes and manual entry all store through it. It
streams a batch with COPY into a temporary staging table and merges it with one ``INSERT ...
ON CONFLICT DO NOTHING``, so a five-year backfill costs little more than the COPY itself.

Each fetch is one ``PriceFetch`` row, run by one skeleton (``_fetch_run``). It is created
``running`` before the first request and holds the lock of its provider and kind (a unique
constraint admits one running fetch), so an overlapping run does nothing. It is finished in one
transaction with everything it stored and every failure, with the reason. Nothing that failed to
parse is ever stored as a price.

A provider that answered 429 or 418 with Retry-After is paused: until then its fetches are
recorded as ``skipped`` and make no request.
"""

import csv
import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Context, Decimal, InvalidOperation, localcontext
from pathlib import Path
from typing import NamedTuple

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Model
from django.utils import timezone

from portfolio.exceptions import PriceImportError
from portfolio.fields import PriceField
from portfolio.models import Asset, FetchFailure, FxRate, MarketDataProvider, Price, PriceFetch
from portfolio.prices import selectors
from portfolio.prices.clients import CLIENTS, FetchError, NbkClient, ProviderClient, client_for
from portfolio.prices.exceptions import ManualPriceInvalid
from portfolio.prices.parsing import DIVISION_DIGITS

logger = logging.getLogger(__name__)

Outcome = PriceFetch.Outcome
Reason = FetchFailure.Reason
Kind = PriceFetch.Kind
# Not a stored outcome: another fetch of the same provider and kind was running, so this one
# did nothing at all.
BUSY = "busy"
# progress(done, total, label, stored): after each step of a backfill, with the rows it has
# stored so far.
Progress = Callable[[int, int, str, int], None]
# Days of official rates stored per transaction by a backfill.
OFFICIAL_RATES_BATCH = 100


@dataclass(frozen=True)
class FailureNote:
    reason: str
    detail: str
    asset: Asset | None = None
    http_status: int | None = None
    pause_seconds: float | None = None

    @classmethod
    def from_error(cls, error: FetchError, asset: Asset | None = None) -> "FailureNote":
        return cls(error.reason, error.detail, asset, error.http_status, error.pause_seconds)


@dataclass
class FetchReport:
    """What one fetch did: for the command's output, the task's result and tests."""

    provider: str
    kind: str
    outcome: str
    fetch_id: int | None = None
    requests: int = 0
    stored: int = 0
    # (asset symbol, price, quote currency) for every price the provider returned.
    prices: list[tuple[str, Decimal, str]] = field(default_factory=list)
    failures: list[FailureNote] = field(default_factory=list)
    paused_until: dt.datetime | None = None
    detail: str = ""

    def as_json(self) -> dict:
        return {
            "provider": self.provider,
            "kind": self.kind,
            "outcome": self.outcome,
            "fetch_id": self.fetch_id,
            "requests": self.requests,
            "stored": self.stored,
            "prices": [[symbol, str(price), quote] for symbol, price, quote in self.prices],
            "failures": [
                {"reason": f.reason, "detail": f.detail, "asset": f.asset and f.asset.symbol}
                for f in self.failures
            ],
            "paused_until": self.paused_until and self.paused_until.isoformat(),
            "detail": self.detail,
        }


# ---------------------------------------------------------------------------------------------
# Storage helpers
# ---------------------------------------------------------------------------------------------


# The precision of stored prices, read once: a backfill rounds every one of its values.
_PRICE_FIELD = PriceField()
PRICE_DIGITS, PRICE_PLACES = _PRICE_FIELD.max_digits, _PRICE_FIELD.decimal_places
PRICE_QUANTUM = Decimal(1).scaleb(-PRICE_PLACES)
# Rounding to the last place happens in a context wide enough that nothing else is rounded.
_ROUNDING = Context(prec=DIVISION_DIGITS, rounding=ROUND_HALF_EVEN)


def storable_price(value: Decimal) -> Decimal | None:
    """``value`` at the stored precision (half-even beyond the last place), or None when it
    does not fit the column or rounds to nothing."""
    stored = value.quantize(PRICE_QUANTUM, context=_ROUNDING)
    if stored <= 0 or stored.adjusted() >= PRICE_DIGITS - PRICE_PLACES:
        return None
    return stored


class PriceRow(NamedTuple):
    """An observation to store, for ``prices_store``: what a ``Price`` row holds, without the
    cost of a model instance (a backfill makes tens of thousands)."""

    asset_id: int
    source: str
    quote_currency: str
    price: Decimal
    observed_at: dt.datetime
    entered_by_id: int | None = None


def _copy_merge(
    model: type[Model],
    columns: Sequence[str],
    rows: Iterable[tuple],
    *,
    unique: Sequence[str],
    constants: dict[str, object] | None = None,
) -> int:
    """Insert the ``rows`` (values of ``columns``) whose ``unique`` columns match no stored
    row; returns how many were inserted. ``constants`` are the same in every row.

    The rows are streamed with COPY into a temporary staging table with the columns' types,
    then merged with one ``INSERT ... SELECT ... ON CONFLICT (unique) DO NOTHING``: a key
    stored already, or by a concurrent transaction (the merge waits for it to end), is left
    as it is, and so is the second row of a key within ``rows``. The table's constraints
    apply to the merge: one refused row refuses the whole batch (the savepoint is rolled
    back, nothing of it is stored). The staging table lives until the transaction ends and
    is emptied after each merge.
    """
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    staging = quote(f"{model._meta.db_table}_staging")
    copied = ", ".join(quote(name) for name in columns)
    constants = constants or {}
    inserted = ", ".join([copied, *(quote(name) for name in constants)])
    selected = ", ".join([copied, *(["%s"] * len(constants))])
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"CREATE TEMPORARY TABLE IF NOT EXISTS {staging} ON COMMIT DROP AS "
            f"SELECT {copied} FROM {table} WITH NO DATA"
        )
        with (
            connection.wrap_database_errors,
            cursor.copy(f"COPY {staging} ({copied}) FROM STDIN") as copy,
        ):
            for row in rows:
                copy.write_row(row)
        cursor.execute(
            f"INSERT INTO {table} ({inserted}) SELECT {selected} FROM {staging} "
            f"ON CONFLICT ({', '.join(quote(name) for name in unique)}) DO NOTHING",
            list(constants.values()),
        )
        new = cursor.rowcount
        cursor.execute(f"TRUNCATE {staging}")
    return new


_PRICE_COLUMNS = ("asset_id", "source", "quote_currency", "price", "observed_at", "entered_by_id")
_PRICE_KEY = ("asset_id", "source", "quote_currency", "observed_at")


def prices_store(rows: Sequence[Price | PriceRow]) -> int:
    """Store the observations not stored yet (same asset, source, quote currency and time);
    returns how many were new. Safe to repeat, and to race: a concurrent writer's row wins.
    Within ``rows`` the first row of an observation is the one stored.

    The one writer of ``Price`` rows; ``rows`` are ``Price`` instances (unsaved) or
    ``PriceRow``s. Preconditions: each row's price fits the column (``storable_price``).
    Runs in the caller's transaction when there is one, in a savepoint: a row the table's
    constraints refuse (a price not positive) raises ``IntegrityError`` and stores nothing of
    the batch. ``fetched_at`` is now for every row; ``entered_by`` is kept.
    """
    if not rows:
        return 0
    seen = set()

    def first_of_each_observation():
        for row in rows:
            key = (row.asset_id, row.source, row.quote_currency, row.observed_at)
            if key not in seen:
                seen.add(key)
                yield (*key[:3], row.price, row.observed_at, row.entered_by_id)

    return _copy_merge(
        Price,
        _PRICE_COLUMNS,
        first_of_each_observation(),
        unique=_PRICE_KEY,
        constants={"fetched_at": timezone.now()},
    )


def _store_fx_rates(rates: Sequence[FxRate]) -> int:
    """Insert the rates of days not stored yet; returns how many were new. A stored rate is
    never overwritten; within ``rates`` the first rate of a day is the one stored."""
    if not rates:
        return 0
    columns = ("base_currency", "quote_currency", "date", "rate", "source")
    first = {}
    for rate in rates:
        first.setdefault((rate.base_currency, rate.quote_currency, rate.date), rate)
    return _copy_merge(
        FxRate,
        columns,
        ((r.base_currency, r.quote_currency, r.date, r.rate, r.source) for r in first.values()),
        unique=columns[:3],
    )


def _begin(provider: str, kind: str, requested: list[str], now: dt.datetime) -> PriceFetch | None:
    """Take the lock of ``provider`` and ``kind`` by creating the running fetch; None when
    another one runs. A running fetch older than the lease is taken for dead first."""
    lease = dt.timedelta(
        seconds=settings.ALEM_PRICE_BACKFILL_LEASE_SECONDS
        if kind == Kind.HISTORY
        else settings.ALEM_PRICE_FETCH_LEASE_SECONDS
    )
    PriceFetch.objects.filter(
        provider=provider, kind=kind, outcome=Outcome.RUNNING, started_at__lt=now - lease
    ).update(
        outcome=Outcome.ABANDONED,
        finished_at=now,
        detail=f"still running after {lease}; its worker is taken for dead",
    )
    try:
        with transaction.atomic():
            return PriceFetch.objects.create(
                provider=provider, kind=kind, requested=requested, started_at=now
            )
    except IntegrityError:
        return None


def _finish(
    fetch: PriceFetch,
    *,
    failures: list[FailureNote],
    requests: int,
    priced: int,
    rows: Sequence[PriceRow] = (),
    fx_rates: Sequence[FxRate] = (),
    stored_already: int = 0,
    detail: str = "",
) -> tuple[int, dt.datetime | None]:
    """Store what the fetch brought and its failures, and close it, in one transaction.
    Returns the number of rows stored and the pause the failures asked for, if any."""
    now = timezone.now()
    pauses = [now + dt.timedelta(seconds=f.pause_seconds) for f in failures if f.pause_seconds]
    paused_until = max(pauses) if pauses else None
    with transaction.atomic():
        stored = stored_already + prices_store(rows) + _store_fx_rates(fx_rates)
        FetchFailure.objects.bulk_create(
            FetchFailure(
                fetch=fetch,
                provider=fetch.provider,
                asset=note.asset,
                reason=note.reason,
                http_status=note.http_status,
                detail=note.detail[:2000],
                paused_until=(
                    now + dt.timedelta(seconds=note.pause_seconds) if note.pause_seconds else None
                ),
                occurred_at=now,
            )
            for note in failures
        )
        if not failures:
            fetch.outcome = Outcome.OK
        elif priced:
            fetch.outcome = Outcome.PARTIAL
        else:
            fetch.outcome = Outcome.FAILED
        fetch.stored = stored
        fetch.attempts = min(requests, 32767)
        fetch.detail = detail
        fetch.finished_at = now
        fetch.save(update_fields=["outcome", "stored", "attempts", "detail", "finished_at"])
    return stored, paused_until


def _finish_interrupted(fetch: PriceFetch, failures: list[FailureNote], requests: int) -> None:
    """Close a fetch a fault (or a signal) broke off, so it does not hold the lock until its
    lease runs out. The fault is raised again by the caller; this must not hide it."""
    try:
        _finish(fetch, failures=failures, requests=requests, priced=0)
    except Exception:
        logger.exception("Could not record the end of %s", fetch)


def _skipped(provider: str, kind: str, pause: FetchFailure, now: dt.datetime) -> FetchReport:
    detail = (
        f"paused until {pause.paused_until.isoformat()} after "
        f"{pause.get_reason_display().lower()} (fetch #{pause.fetch_id})"
    )
    fetch = PriceFetch.objects.create(
        provider=provider,
        kind=kind,
        outcome=Outcome.SKIPPED,
        detail=detail,
        started_at=now,
        finished_at=now,
    )
    return FetchReport(
        provider, kind, Outcome.SKIPPED, fetch.id, paused_until=pause.paused_until, detail=detail
    )


def _busy(provider: str, kind: str) -> FetchReport:
    return FetchReport(
        provider, kind, BUSY, detail="another fetch of this provider is running; nothing done"
    )


# ---------------------------------------------------------------------------------------------
# What to ask each provider
# ---------------------------------------------------------------------------------------------


def _check_provider(provider: str) -> None:
    if provider not in MarketDataProvider.values:
        raise ValueError(
            f"unknown provider {provider!r}; expected one of {', '.join(MarketDataProvider.values)}"
        )


def _listed_assets(provider: str, symbols: list[str] | None = None) -> dict[str, list[Asset]]:
    """Assets listed by a market provider, keyed by the provider's id for them."""
    assets = Asset.objects.order_by("symbol")
    if symbols:
        assets = assets.filter(symbol__in=[s.upper() for s in symbols])
    by_key = defaultdict(list)
    for asset in assets:
        key = CLIENTS[provider].asset_key(asset)
        if key:
            by_key[key].append(asset)
    return dict(by_key)


def _pegged_assets(symbols: list[str] | None = None) -> list[Asset]:
    assets = Asset.objects.exclude(peg_currency="").order_by("symbol")
    if symbols:
        assets = assets.filter(symbol__in=[s.upper() for s in symbols])
    return list(assets)


def _price_rows(
    provider: str,
    listed: dict[str, list[Asset]],
    key: str,
    observations,
    quote_currency: str,
    failures: list[FailureNote],
) -> list[PriceRow]:
    rows = []
    for asset in listed[key]:
        asset_id = asset.pk
        for observed in observations:
            price = storable_price(observed.price)
            if price is None:
                failures.append(
                    FailureNote(
                        Reason.MALFORMED,
                        f"{key}: price {observed.price} does not fit the stored precision",
                        asset,
                    )
                )
                continue
            rows.append(PriceRow(asset_id, provider, quote_currency, price, observed.observed_at))
    return rows


def _peg_rows(
    rates: dict[str, Decimal], day: dt.date, pegged: list[Asset], failures: list[FailureNote]
) -> list[PriceRow]:
    """Prices in USD of assets pegged to a currency, through the National Bank's tenge rates:
    a KZT-pegged asset is worth 1 / (tenge per dollar). Observed at the start of the rate's day
    in Almaty, when the official rate takes effect."""
    usd = rates["USD"]
    observed_at = dt.datetime.combine(day, dt.time.min, tzinfo=timezone.get_default_timezone())
    rows = []
    for asset in pegged:
        peg = asset.peg_currency.upper()
        tenge_per_unit = Decimal(1) if peg == "KZT" else rates.get(peg)
        if tenge_per_unit is None:
            failures.append(
                FailureNote(Reason.UNKNOWN_SYMBOL, f"no official rate for {peg}", asset)
            )
            continue
        with localcontext() as ctx:
            ctx.prec = DIVISION_DIGITS
            price = storable_price(tenge_per_unit / usd)
        if price is None:
            failures.append(FailureNote(Reason.MALFORMED, f"{peg} peg out of range", asset))
            continue
        rows.append(PriceRow(asset.pk, Price.Source.NBK, "USD", price, observed_at))
    return rows


def _official_rates(client: NbkClient, day: dt.date, pegged: list[Asset], failures):
    """The USD/KZT rate of ``day`` and the peg prices it gives; raises ``FetchError``."""
    rates = client.rates(day)
    if "USD" not in rates.rates:
        raise FetchError(Reason.NO_RATES, f"no USD rate on {rates.date:%d.%m.%Y}", http_status=200)
    usd = storable_price(rates.rates["USD"])
    if usd is None:
        raise FetchError(Reason.MALFORMED, f"USD rate {rates.rates['USD']} out of range")
    fx_rate = FxRate(
        base_currency="USD", quote_currency="KZT", rate=usd, date=rates.date, source="nbk"
    )
    return fx_rate, _peg_rows(rates.rates, rates.date, pegged, failures)


# ---------------------------------------------------------------------------------------------
# Latest quotes
# ---------------------------------------------------------------------------------------------


@dataclass
class _Brought:
    """What a fetch's work brought: rows to store when it finishes, or what it stored already."""

    rows: list[PriceRow] = field(default_factory=list)
    fx_rates: list[FxRate] = field(default_factory=list)
    stored: int = 0
    priced: int = 0


def _fetch_run(
    provider: str,
    kind: str,
    *,
    requested: list[str],
    client: ProviderClient | None,
    work: Callable[[ProviderClient, FetchReport], _Brought],
) -> FetchReport:
    """The skeleton of every fetch: skip while the provider is paused, take the run's lock (or
    do nothing, ``BUSY``), let ``work`` ask the provider, then store what it brought with the
    failures and close the run in one transaction.

    A fault of Alem's own inside ``work`` is recorded as ``internal_error``, closes the run and
    is raised again. A client passed in is the caller's to close.
    """
    now = timezone.now()
    pause = selectors.provider_pause(provider, now=now)
    if pause is not None:
        return _skipped(provider, kind, pause, now)
    fetch = _begin(provider, kind, requested, now)
    if fetch is None:
        return _busy(provider, kind)
    own_client = client is None
    client = client or client_for(provider)
    report = FetchReport(provider, kind, Outcome.RUNNING, fetch.id)
    try:
        brought = work(client, report)
    except BaseException as exc:
        report.failures.append(FailureNote(Reason.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}"))
        _finish_interrupted(fetch, report.failures, client.requests)
        raise
    finally:
        if own_client:
            client.close()
    report.requests = client.requests
    report.stored, report.paused_until = _finish(
        fetch,
        failures=report.failures,
        requests=client.requests,
        priced=brought.priced,
        rows=brought.rows,
        fx_rates=brought.fx_rates,
        stored_already=brought.stored,
        detail=report.detail,
    )
    report.outcome = fetch.outcome
    return report


def prices_fetch_latest(*, provider: str, client: ProviderClient | None = None) -> FetchReport:
    """Fetch the latest prices of every asset ``provider`` lists, in one batched request, and
    store them with the failures. For the National Bank: today's USD/KZT rate and the prices
    of pegged assets.

    Does nothing (``BUSY``) while another latest fetch of the provider runs; records a
    ``skipped`` fetch without any request while the provider is paused. Provider failures are
    recorded, never raised; a fault of Alem's own is recorded as ``internal_error`` and raised.
    """
    _check_provider(provider)
    if CLIENTS[provider].official_rates:
        pegged = _pegged_assets()
        requested = ["USD", *sorted({a.peg_currency for a in pegged} - {"KZT", "USD"})]

        def work(client: NbkClient, report: FetchReport) -> _Brought:
            brought = _Brought()
            try:
                fx_rate, brought.rows = _official_rates(
                    client, timezone.localdate(), pegged, report.failures
                )
            except FetchError as error:
                report.failures.append(FailureNote.from_error(error))
                return brought
            brought.fx_rates.append(fx_rate)
            report.prices.append(("USD/KZT", fx_rate.rate, "KZT"))
            return _priced(brought, report, pegged)

    else:
        listed = _listed_assets(provider)
        requested = sorted(listed)

        def work(client: ProviderClient, report: FetchReport) -> _Brought:
            brought = _Brought()
            if not requested:
                report.detail = "no asset is listed by this provider; nothing asked"
                return brought
            try:
                answer = client.latest(requested)
            except FetchError as error:
                report.failures.append(FailureNote.from_error(error))
                return brought
            for key, observed in answer.prices.items():
                brought.rows += _price_rows(
                    provider, listed, key, [observed], answer.quote_currency, report.failures
                )
            for key, why in answer.unknown.items():
                report.failures.extend(
                    FailureNote(Reason.UNKNOWN_SYMBOL, f"{key}: {why}", asset)
                    for asset in listed[key]
                )
            return _priced(brought, report, [a for assets in listed.values() for a in assets])

    return _fetch_run(provider, Kind.LATEST, requested=requested, client=client, work=work)


def _priced(brought: _Brought, report: FetchReport, assets: list[Asset]) -> _Brought:
    symbols = {asset.pk: asset.symbol for asset in assets}
    report.prices += [
        (symbols[row.asset_id], row.price, row.quote_currency) for row in brought.rows
    ]
    brought.priced = len(brought.rows) + len(brought.fx_rates)
    return brought


def prices_fetch_all(*, providers: list[str] | None = None) -> list[FetchReport]:
    """``prices_fetch_latest`` of each provider in turn; one provider's failure, even a fault
    of Alem's own, never keeps the others from being fetched."""
    reports = []
    for provider in providers or MarketDataProvider.values:
        try:
            reports.append(prices_fetch_latest(provider=provider))
        except Exception as exc:
            logger.exception("Fetching latest prices from %s failed", provider)
            reports.append(
                FetchReport(
                    provider,
                    Kind.LATEST,
                    Outcome.FAILED,
                    failures=[FailureNote(Reason.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}")],
                )
            )
    return reports


# ---------------------------------------------------------------------------------------------
# History
# ---------------------------------------------------------------------------------------------


def prices_backfill(
    *,
    provider: str,
    days: int,
    symbols: list[str] | None = None,
    progress: Progress | None = None,
    client: ProviderClient | None = None,
) -> FetchReport:
    """Store the daily history of the last ``days`` days: Binance klines, CoinGecko market
    charts, or the National Bank's rate of each day (and the prices of pegged assets).

    Idempotent: observations already stored are skipped, and for the National Bank days
    whose rate is stored are not asked again. Each asset (or batch of days) is stored as soon
    as it arrives, so an interrupted backfill keeps what it got. A pause (429/418) stops the
    provider's backfill there. ``progress(done, total, label, stored)`` is called after each
    step with the rows stored so far; the management command draws it, the tasks pass none.
    """
    _check_provider(provider)
    if days < 1:
        raise ValueError("days must be at least 1")
    if CLIENTS[provider].official_rates:
        pegged = _pegged_assets(symbols)
        requested = ["USD"]

        def work(client: NbkClient, report: FetchReport) -> _Brought:
            stored, priced = _backfill_official_rates(
                client, days, pegged, report.failures, progress
            )
            return _Brought(stored=stored, priced=priced)

    else:
        listed = _listed_assets(provider, symbols)
        requested = sorted(listed)

        def work(client: ProviderClient, report: FetchReport) -> _Brought:
            stored, priced = _backfill_market(
                provider, client, listed, days, timezone.now(), report.failures, progress
            )
            return _Brought(stored=stored, priced=priced)

    return _fetch_run(provider, Kind.HISTORY, requested=requested, client=client, work=work)


def _backfill_market(provider, client, listed, days, now, failures, progress) -> tuple[int, int]:
    start = dt.datetime.combine(
        (now - dt.timedelta(days=days)).astimezone(dt.UTC).date(), dt.time.min, tzinfo=dt.UTC
    )
    stored = priced = 0
    for done, key in enumerate(sorted(listed), start=1):
        paused = False
        try:
            observed = client.history(key, start=start, days=days)
        except FetchError as error:
            failures.extend(FailureNote.from_error(error, asset) for asset in listed[key])
            paused = bool(error.pause_seconds)
        else:
            rows = _price_rows(provider, listed, key, observed, client.quote_currency, failures)
            priced += len(rows)
            stored += prices_store(rows)
        if progress:
            progress(done, len(listed), key, stored)
        if paused:
            break
    return stored, priced


def _backfill_official_rates(client, days, pegged, failures, progress) -> tuple[int, int]:
    """One request per day not stored yet, stored in batches (a transaction per day would cost
    more than the requests)."""
    today = timezone.localdate()
    wanted = [today - dt.timedelta(days=offset) for offset in range(days, -1, -1)]
    have = set(
        FxRate.objects.filter(
            base_currency="USD", quote_currency="KZT", date__gte=wanted[0]
        ).values_list("date", flat=True)
    )
    stored = priced = 0
    empty_days, fx_rates, rows = [], [], []

    def flush() -> int:
        with transaction.atomic():
            count = _store_fx_rates(fx_rates) + prices_store(rows)
        fx_rates.clear()
        rows.clear()
        return count

    for done, day in enumerate(wanted, start=1):
        try:
            if day in have:
                continue
            fx_rate, day_rows = _official_rates(client, day, pegged, failures)
        except FetchError as error:
            if error.reason == Reason.NO_RATES:
                empty_days.append(day)
                continue
            failures.append(FailureNote.from_error(error))
            if error.pause_seconds:
                break
            continue
        finally:
            if progress:
                progress(done, len(wanted), f"{day:%d.%m.%Y}", stored)
        priced += 1 + len(day_rows)
        have.add(fx_rate.date)
        fx_rates.append(fx_rate)
        rows.extend(day_rows)
        if len(fx_rates) >= OFFICIAL_RATES_BATCH:
            stored += flush()
    stored += flush()
    if empty_days:
        failures.append(
            FailureNote(
                Reason.NO_RATES,
                f"no rates published on {len(empty_days)} day(s): "
                + ", ".join(f"{day:%d.%m.%Y}" for day in empty_days[:50])
                + (" …" if len(empty_days) > 50 else ""),
                http_status=200,
            )
        )
    return stored, priced


# ---------------------------------------------------------------------------------------------
# Manual prices
# ---------------------------------------------------------------------------------------------


def price_record_manual(
    *, asset: Asset, price: Decimal, entered_by, observed_at: dt.datetime | None = None
) -> Price:
    """Store a USD price an administrator read elsewhere, marked ``manual`` and signed by
    ``entered_by``. It counts as one more source in the consensus, never as a corroborated
    price by itself.

    Not audited here: governance wraps this in a service that writes the audit event in the
    same transaction. Raises ``ManualPriceInvalid`` (nothing stored) for a price that is not
    positive or is more precise than stored prices, a time in the future, or a second manual
    price of the asset at the same moment.
    """
    now = timezone.now()
    observed_at = observed_at or now
    if observed_at > now + dt.timedelta(minutes=1):
        raise ManualPriceInvalid("A price cannot be observed in the future.")
    if not isinstance(price, Decimal) or not price.is_finite() or price <= 0:
        raise ManualPriceInvalid("The price must be a positive decimal.")
    stored = storable_price(price)
    if stored is None or stored != price:
        raise ManualPriceInvalid(
            f"The price must fit {PRICE_DIGITS} digits with at most {PRICE_PLACES} decimal places."
        )
    row = Price(
        asset=asset,
        source=Price.Source.MANUAL,
        quote_currency="USD",
        price=stored,
        observed_at=observed_at,
        entered_by=entered_by,
    )
    with transaction.atomic():
        if not prices_store([row]):
            raise ManualPriceInvalid(
                f"A manual price of {asset.symbol} observed at {observed_at.isoformat()} exists."
            )
        return Price.objects.get(
            asset=asset, source=row.source, quote_currency="USD", observed_at=observed_at
        )


# ---------------------------------------------------------------------------------------------
# Daily closes from a file (demo data and history the providers no longer serve)
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DailyClose:
    day: dt.date
    close: Decimal


def parse_daily_closes(path: Path) -> list[DailyClose]:
    """Read a Yahoo-style daily CSV by header name (``Date`` or ``date``, and ``Close``).

    Raises ``PriceImportError`` naming the line of the first bad row; a file is all or nothing.
    """
    try:
        handle = path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise PriceImportError(f"Cannot open {path}: {exc.strerror}.") from exc
    with handle:
        reader = csv.DictReader(handle)
        headers = {name.strip().lower(): name for name in reader.fieldnames or []}
        if "date" not in headers or "close" not in headers:
            raise PriceImportError(f"{path.name}: the header needs Date and Close columns.")
        closes = []
        for line, row in enumerate(reader, start=2):
            try:
                day = dt.date.fromisoformat(row[headers["date"]].strip()[:10])
                close = Decimal(row[headers["close"]].strip())
            except (ValueError, InvalidOperation, AttributeError) as exc:
                raise PriceImportError(f"{path.name}, line {line}: unreadable row.") from exc
            if not close.is_finite() or close <= 0:
                raise PriceImportError(f"{path.name}, line {line}: the close must be positive.")
            closes.append(DailyClose(day, close))
    return closes


def price_history_import(
    *, asset: Asset, closes: list[DailyClose], source: str = Price.Source.YAHOO
) -> int:
    """Store daily closes as prices observed at 23:59:59 UTC of each day; returns rows added.

    Idempotent: days already stored for this asset and source are left as they are.
    """
    end_of_day = dt.time(23, 59, 59, tzinfo=dt.UTC)
    return prices_store(
        [
            PriceRow(
                asset.pk,
                source,
                "USD",
                close.close.quantize(PRICE_QUANTUM),
                dt.datetime.combine(close.day, end_of_day),
            )
            for close in closes
        ]
    )
