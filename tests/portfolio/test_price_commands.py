"""The price commands: fetch_prices, backfill_prices, import_prices, install_schedules."""

import datetime as dt
import re
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.core.management.base import OutputWrapper
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from portfolio.management.commands.backfill_prices import ProgressBar
from portfolio.models import FetchFailure, Price, PriceFetch
from tests.commands import run_command as run
from tests.factories import AssetFactory
from tests.portfolio import fake_market

market = fake_market.market  # the fake market fixture

pytestmark = pytest.mark.django_db


@pytest.fixture
def bnb():
    return AssetFactory(symbol="BNB", binance_symbol="BNBUSDT", coingecko_id="binancecoin")


def test_fetch_prices_says_what_each_provider_returned_or_why_it_failed(market, bnb):
    AssetFactory(symbol="KZTE", binance_symbol="", coingecko_id="", peg_currency="KZT")
    market.binance["BNBUSDT"] = "612.34000000"
    market.fail("coingecko", "429", retry_after=120)
    market.nbk_default = {"USD": ("500.00", "1")}

    output = run("fetch_prices")

    paused_until = FetchFailure.objects.get().paused_until
    assert output.splitlines() == [
        "binance: ok, 1 stored (1 request)",
        "  BNB      612.3400000000 USDT",
        "coingecko: failed, 0 stored (1 request)",
        "  failed rate_limited [HTTP 429]: HTTP 429 (Retry-After 120): "
        '{"status": {"error_code": 429, "error_message": "You\'ve exceeded the Rate Limit. '
        "Please visit https://www.coingecko.com/…",
        f"  paused until {paused_until.isoformat()}",
        "nbk: ok, 2 stored (1 request)",
        "  USD/KZT  500.0000000000 KZT",
        "  KZTE     0.0020000000 USD",
    ]
    assert Price.objects.count() == 2


def test_fetch_prices_of_one_provider_asks_only_that_one(market, bnb):
    market.coingecko["binancecoin"] = "612.1"

    output = run("fetch_prices", "--provider", "coingecko")

    assert output.splitlines()[0] == "coingecko: ok, 1 stored (1 request)"
    assert market.requests_to("binance") == []
    assert list(PriceFetch.objects.values_list("provider", flat=True)) == ["coingecko"]


def test_fetch_prices_fails_when_no_provider_answered(market, bnb):
    market.fail("binance", "503", times=3)
    market.fail("coingecko", "html")
    market.nbk_closed.add(timezone.localdate())

    with pytest.raises(CommandError, match="No provider answered"):
        run("fetch_prices")

    assert Price.objects.count() == 0
    assert sorted(FetchFailure.objects.values_list("provider", "reason")) == [
        ("binance", "server_error"),
        ("coingecko", "malformed"),
        ("nbk", "no_rates"),
    ]


def test_backfill_prices_shows_progress_and_stores_each_day_once(market, bnb):
    AssetFactory(symbol="BTC", binance_symbol="BTCUSDT", coingecko_id="")
    market.binance.update({"BNBUSDT": "612.34", "BTCUSDT": "97000.01"})

    first = run("backfill_prices", "--days", "7", "--provider", "binance")
    second = run("backfill_prices", "--days", "7", "--provider", "binance")

    # Not a terminal: a plain line per tenth of the way, with the rows stored and the rate
    lines = first.splitlines()
    assert len(lines) == 3
    assert re.fullmatch(r"binance: 1/2 \(50%\) BNBUSDT, 7 stored, [\d,]+ rows/s", lines[0])
    assert re.fullmatch(r"binance: 2/2 \(100%\) BTCUSDT, 14 stored, [\d,]+ rows/s", lines[1])
    assert lines[2] == "binance: ok, 14 stored (2 requests)"
    assert second.splitlines()[-1] == "binance: ok, 0 stored (2 requests)"
    assert Price.objects.filter(source="binance").count() == 14


class Terminal(StringIO):
    def isatty(self) -> bool:
        return True


def test_backfill_prices_on_a_terminal_redraws_one_progress_line(market, bnb):
    AssetFactory(symbol="BTC", binance_symbol="BTCUSDT", coingecko_id="")
    market.binance.update({"BNBUSDT": "612.34", "BTCUSDT": "97000.01"})
    out = Terminal()

    call_command("backfill_prices", "--days", "7", "--provider", "binance", stdout=out)

    bar, summary = out.getvalue().split("\n")[:2]
    steps = bar.split("\r")[1:]
    assert len(steps) == 2
    assert re.fullmatch(r"binance \[#{15}\.{15}\] 1/2 BNBUSDT +7 stored, [\d,]+ rows/s *", steps[0])
    assert re.fullmatch(r"binance \[#{30}\] 2/2 BTCUSDT +14 stored, [\d,]+ rows/s *", steps[1])
    assert summary == "binance: ok, 14 stored (2 requests)"


def test_the_progress_bar_rate_is_of_rows_stored_since_it_started():
    out, now = StringIO(), [100.0]
    bar = ProgressBar(OutputWrapper(out), "coingecko", clock=lambda: now[0])

    now[0] = 102.0
    bar(1, 40, "bitcoin", 3652)
    bar(2, 40, "solana", 7304)  # the same tenth of the way: no line

    assert out.getvalue() == "coingecko: 1/40 (0%) bitcoin, 3,652 stored, 1,826 rows/s\n"


def test_backfill_prices_of_one_asset(market, bnb):
    AssetFactory(symbol="BTC", binance_symbol="BTCUSDT", coingecko_id="bitcoin")
    market.coingecko.update({"binancecoin": "612.1", "bitcoin": "97010"})

    run("backfill_prices", "--days", "3", "--provider", "coingecko", "--asset", "btc")

    assert set(Price.objects.values_list("asset__symbol", flat=True)) == {"BTC"}
    assert [r.path for r in market.requests_to("coingecko")] == [
        "/api/v3/coins/bitcoin/market_chart"
    ]


def test_backfill_prices_fails_when_a_provider_stored_nothing(market, bnb):
    market.fail("binance", "418", retry_after=60)

    with pytest.raises(CommandError, match="binance stored nothing"):
        run("backfill_prices", "--days", "3", "--provider", "binance")

    assert Price.objects.count() == 0


def test_backfill_prices_refuses_less_than_a_day(bnb):
    with pytest.raises(CommandError, match="at least 1"):
        run("backfill_prices", "--days", "0")

    assert PriceFetch.objects.count() == 0


def write_csv(path, rows):
    path.write_text("Date,Close,High,Low,Open,Volume\n" + "".join(f"{r}\n" for r in rows))
    return path


def test_import_prices_reads_a_yahoo_csv_and_is_idempotent(bnb, tmp_path):
    csv = write_csv(
        tmp_path / "BNB-USD.csv",
        [
            "2024-06-01,601.5,610,590,600,1",
            "2024-06-02,612.34567,615,600,601.5,1",
            "2024-06-03,620,625,610,612.3,1",
        ],
    )

    first = run("import_prices", str(csv), "--asset", "bnb")
    second = run("import_prices", str(csv), "--asset", "BNB")

    assert first == "BNB: 3 daily prices added, 0 already stored (3 in the file).\n"
    assert second == "BNB: 0 daily prices added, 3 already stored (3 in the file).\n"
    assert list(
        Price.objects.filter(source="yahoo").order_by("observed_at").values_list("price", flat=True)
    ) == [Decimal("601.5"), Decimal("612.34567"), Decimal("620")]
    assert Price.objects.get(price=Decimal("620")).observed_at == dt.datetime(
        2024, 6, 3, 23, 59, 59, tzinfo=dt.UTC
    )


def test_import_prices_refuses_a_bad_file_whole(bnb, tmp_path):
    csv = write_csv(tmp_path / "bad.csv", ["2024-06-01,601.5,1,1,1,1", "2024-06-02,oops,1,1,1,1"])

    with pytest.raises(CommandError, match=r"bad\.csv, line 3: unreadable row"):
        run("import_prices", str(csv), "--asset", "BNB")

    assert Price.objects.count() == 0


def test_import_prices_refuses_an_unknown_asset(tmp_path):
    csv = write_csv(tmp_path / "x.csv", ["2024-06-01,1,1,1,1,1"])

    with pytest.raises(CommandError, match="No asset 'DOGE'"):
        run("import_prices", str(csv), "--asset", "DOGE")

    assert Price.objects.count() == 0


def test_install_schedules_reports_what_it_did_portfolios_schedules_first():
    assert run("install_schedules").splitlines() == [
        "Fetch prices from Binance: created",
        "Fetch prices from CoinGecko: created",
        "Fetch the official USD/KZT rate: created",
        "Take NAV snapshots: created",
        "Refresh the public disclosures: created",
        "Reconcile custody accounts on chain: created",
        "Expire approvals past their execution window: created",
        "Apply confirmed back-office changes after their cooling-off: created",
        "Send the tasks waiting in the outbox: created",
        "E-mail the daily digest of what waits: created",
        "Verify the audit chain: created",
        "Sign a checkpoint of the audit chain: created",
        "Anchor audit checkpoints on chain: created",
    ]
    assert run("install_schedules").splitlines()[0] == "Fetch prices from Binance: kept"
    assert PeriodicTask.objects.filter(task="portfolio.tasks.prices_fetch").count() == 3
