"""Observations racing on PostgreSQL open one break per difference (``portfolio.reconciliation``).

Real threads, each with its own connection, record the same statement at the same moment: each
observation is decided under the custody account's row lock, so the second sees the first's
open break and opens none, instead of failing on the database's one-open-break constraint.
"""

from functools import partial

import pytest

from portfolio.models import BalanceObservation, ReconciliationBreak
from portfolio.reconciliation.services import statement_record
from tests.factories import FundBuilder
from tests.portfolio.reconciliation_fixtures import custody_account
from tests.threads import run_together

pytestmark = pytest.mark.django_db(transaction=True)


def test_four_uploads_of_one_statement_at_once_open_one_break():
    builder = FundBuilder.alem_like()
    exchange = custody_account(builder.fund, name="Exchange", chain="BSC", reference="EX-7")
    record = partial(
        statement_record,
        actor=builder.users["treasury"],
        account_id=exchange.pk,
        file_name="s.csv",
        content=b"asset,balance,as_of\nBNB,7,2026-01-01\n",
    )

    results = run_together([record for _ in range(4)])

    assert [outcome for outcome, _ in results] == ["ok"] * 4, results
    assert BalanceObservation.objects.filter(account=exchange).count() == 4
    (break_,) = ReconciliationBreak.objects.filter(account=exchange)
    assert break_.difference == 7
