"""Importing daily price history from CSV files: reading the closes by header name, and storing
them through the one writer of prices."""

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest

from portfolio.exceptions import PriceImportError
from portfolio.models import Price
from portfolio.prices.services import DailyClose, parse_daily_closes, price_history_import
from tests.factories import AssetFactory

D = Decimal
PRICE_DIR = Path(__file__).resolve().parents[3] / "portfolio" / "data" / "prices"

# ---------------------------------------------------------------------------------------------
# Parsing daily closes
# ---------------------------------------------------------------------------------------------


def write(tmp_path: Path, text: str, name: str = "TEST-USD.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_parses_the_capitalised_header_style(tmp_path):
    path = write(
        tmp_path,
        "Date,Close,High,Low,Open,Volume\n"
        "2021-06-24,308.39703369140625,316.19,281.98,296.26,2323626593\n"
        "2021-06-25,281.62091064453125,313.97,275.83,308.58,2317971593\n",
    )

    assert parse_daily_closes(path) == [
        DailyClose(dt.date(2021, 6, 24), D("308.39703369140625")),
        DailyClose(dt.date(2021, 6, 25), D("281.62091064453125")),
    ]


def test_parses_the_lower_case_header_style_and_takes_close_not_adj_close(tmp_path):
    path = write(
        tmp_path,
        "date,Adj Close,Close,High,Low,Open,Volume\n"
        "2021-08-18,1.0,44801.1875,45952.06,44364.02,44686.75,32194123075\n",
    )

    assert parse_daily_closes(path) == [DailyClose(dt.date(2021, 8, 18), D("44801.1875"))]


def test_columns_are_found_by_name_in_any_order_and_dates_may_carry_a_time(tmp_path):
    path = write(tmp_path, " Close , Volume , DATE \n 72.5 ,1, 2021-08-18 00:00:00+00:00 \n")

    assert parse_daily_closes(path) == [DailyClose(dt.date(2021, 8, 18), D("72.5"))]


@pytest.mark.parametrize(
    ("name", "first_day", "first_close"),
    [
        ("BNB-USD.csv", dt.date(2021, 6, 24), D("308.39703369140625")),
        ("BTC-USD.csv", dt.date(2021, 8, 18), D("44801.1875")),
        ("ETH-USD.csv", dt.date(2021, 8, 18), D("3020.08984375")),
        ("SOL-USD.csv", dt.date(2021, 8, 18), D("72.5433120727539")),
    ],
)
def test_reads_the_header_of_every_shipped_price_file(tmp_path, name, first_day, first_close):
    # Only the first rows: the whole files are loaded once, by the seed_demo test.
    head = (PRICE_DIR / name).read_text(encoding="utf-8").splitlines()[:4]
    path = write(tmp_path, "\n".join(head) + "\n", name)

    closes = parse_daily_closes(path)

    assert len(closes) == 3
    assert closes[0] == DailyClose(first_day, first_close)
    assert closes[1].day == first_day + dt.timedelta(days=1)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("2021-13-01,300.0", "line 3: unreadable row"),
        ("yesterday,300.0", "line 3: unreadable row"),
        ("2021-06-25,abc", "line 3: unreadable row"),
        ("2021-06-25,", "line 3: unreadable row"),
        ("2021-06-25", "line 3: unreadable row"),
        ("2021-06-25,0", "line 3: the close must be positive"),
        ("2021-06-25,-3.5", "line 3: the close must be positive"),
        ("2021-06-25,NaN", "line 3: the close must be positive"),
        ("2021-06-25,Infinity", "line 3: the close must be positive"),
    ],
)
def test_a_bad_row_is_refused_with_its_line_and_nothing_is_stored(tmp_path, db, row, message):
    asset = AssetFactory(symbol="BNB")
    path = write(tmp_path, f"Date,Close\n2021-06-24,308.5\n{row}\n2021-06-26,310\n")

    with pytest.raises(PriceImportError) as failed:
        price_history_import(asset=asset, closes=parse_daily_closes(path))

    assert str(failed.value) == f"TEST-USD.csv, {message}."
    assert failed.value.code == "price_import_invalid"
    assert Price.objects.count() == 0


@pytest.mark.parametrize("header", ["Day,Close", "Date,Price", ""])
def test_a_file_without_date_and_close_columns_is_refused(tmp_path, header):
    path = write(tmp_path, f"{header}\n2021-06-24,308.5\n")

    with pytest.raises(PriceImportError, match="the header needs Date and Close columns"):
        parse_daily_closes(path)


def test_a_missing_file_is_refused_clearly(tmp_path):
    with pytest.raises(PriceImportError, match="Cannot open"):
        parse_daily_closes(tmp_path / "nowhere.csv")


# ---------------------------------------------------------------------------------------------
# Importing daily closes
# ---------------------------------------------------------------------------------------------

CLOSES = [
    DailyClose(dt.date(2021, 6, 24), D("308.39703369140625")),
    DailyClose(dt.date(2021, 6, 25), D("281.62091064453125")),
]


def test_import_stores_each_close_at_the_end_of_its_day_in_utc(db):
    asset = AssetFactory(symbol="BNB")

    added = price_history_import(asset=asset, closes=CLOSES)

    assert added == 2
    first = Price.objects.filter(asset=asset).order_by("observed_at").first()
    assert (first.source, first.quote_currency) == ("yahoo", "USD")
    assert first.observed_at == dt.datetime(2021, 6, 24, 23, 59, 59, tzinfo=dt.UTC)
    assert first.price == D("308.3970336914")  # quantised to the price precision


def test_import_is_idempotent(db):
    asset = AssetFactory(symbol="BNB")
    price_history_import(asset=asset, closes=CLOSES)

    again = price_history_import(asset=asset, closes=CLOSES)

    assert again == 0
    assert Price.objects.filter(asset=asset).count() == 2


def test_import_adds_only_the_new_days_and_keeps_stored_ones(db):
    asset = AssetFactory(symbol="BNB")
    price_history_import(asset=asset, closes=CLOSES[:1])
    changed = [DailyClose(CLOSES[0].day, D("1.00")), CLOSES[1]]

    added = price_history_import(asset=asset, closes=changed)

    assert added == 1
    assert list(
        Price.objects.filter(asset=asset).order_by("observed_at").values_list("price", flat=True)
    ) == [D("308.3970336914"), D("281.6209106445")]


def test_import_keeps_assets_and_sources_apart(db):
    bnb = AssetFactory(symbol="BNB")
    btc = AssetFactory(symbol="BTC")
    price_history_import(asset=bnb, closes=CLOSES)

    assert price_history_import(asset=btc, closes=CLOSES) == 2
    assert price_history_import(asset=bnb, closes=CLOSES, source=Price.Source.MANUAL) == 2
    assert Price.objects.count() == 6
