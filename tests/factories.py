"""factory_boy factories and a builder for a fund with people, policy, cash and prices."""

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal

import factory
from django.contrib.auth import get_user_model
from django.utils import timezone
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice

from governance import services
from governance.models import Proposal
from governance.policies import StageSpec
from portfolio.models import Asset, CustodyAccount, Fund, FundingSource, FundRole, Price

R = FundRole


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@alem.example")
    password = factory.django.Password("pw-for-tests-only")


class AssetFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Asset
        django_get_or_create = ("symbol",)

    symbol = factory.Sequence(lambda n: f"AS{n}")
    name = factory.LazyAttribute(lambda a: a.symbol)
    binance_symbol = factory.LazyAttribute(lambda a: f"{a.symbol}USDT")
    coingecko_id = factory.LazyAttribute(lambda a: a.symbol.lower())


class FundFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Fund

    name = factory.Sequence(lambda n: f"Fund {n}")
    slug = factory.Sequence(lambda n: f"fund-{n}")
    max_asset_share = Decimal("0.40")
    max_proposal_notional_usd = Decimal("5000000.00")
    execution_window_days = 5
    price_tolerance = Decimal("0.02")
    max_fee_share = Decimal("0.01")


class FundingSourceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = FundingSource

    fund = factory.SubFactory(FundFactory)
    name = factory.Sequence(lambda n: f"Budget allocation {n}")
    kind = FundingSource.Kind.BUDGET_ALLOCATION


class CustodyAccountFactory(factory.django.DjangoModelFactory):
    """An account usable now (its cooling-off over); tests of the four-eyes path that adds
    accounts go through ``governance.services.custody`` instead."""

    class Meta:
        model = CustodyAccount

    fund = factory.SubFactory(FundFactory)
    name = factory.Sequence(lambda n: f"Cold wallet {n}")
    kind = CustodyAccount.Kind.COLD_MULTISIG
    chain = "BNB Smart Chain"
    address = factory.Sequence(lambda n: f"0x{n:040x}")
    created_at = factory.LazyFunction(lambda: timezone.now() - dt.timedelta(days=3))
    usable_from = factory.LazyFunction(lambda: timezone.now() - dt.timedelta(days=1))


class PriceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Price

    asset = factory.SubFactory(AssetFactory)
    source = Price.Source.BINANCE
    price = Decimal("600.00")
    observed_at = factory.LazyFunction(timezone.now)


ALEM_STAGES = [
    StageSpec(1, "Risk review", R.REVIEW_RISK, 1),
    StageSpec(2, "Investment committee", R.VOTE_COMMITTEE, 2),
    StageSpec(3, "Ministry sign-off", R.APPROVE_MINISTRY, 1, Decimal("1000000.00")),
]

ROLE_USERS = [
    ("manager", R.PROPOSE),
    ("manager2", R.PROPOSE),
    ("risk", R.REVIEW_RISK),
    ("committee1", R.VOTE_COMMITTEE),
    ("committee2", R.VOTE_COMMITTEE),
    ("committee3", R.VOTE_COMMITTEE),
    ("ministry", R.APPROVE_MINISTRY),
    ("treasury", R.EXECUTE_TRADES),
    ("auditor", R.AUDIT),
    ("fundadmin", R.MANAGE_POLICY),
    ("fundadmin2", R.MANAGE_POLICY),
]


@dataclass
class FundBuilder:
    """A fund with one user per role (usernames prefixed per fund), a published policy, cash
    and a whitelisted asset with fresh prices from two sources.

    ``users["risk"]`` etc.; ``proposal()`` drafts one."""

    fund: Fund
    asset: Asset
    funding_source: FundingSource
    users: dict = field(default_factory=dict)

    @classmethod
    def alem_like(
        cls,
        *,
        prefix: str = "",
        cash_usd: Decimal = Decimal("25000000.00"),
        stages: list[StageSpec] = ALEM_STAGES,
        asset_symbol: str = "BNB",
        price_usd: Decimal = Decimal("600.00"),
    ) -> "FundBuilder":
        fund = FundFactory(name=f"{prefix}Alem Crypto Fund", slug=f"{prefix}alem".replace("_", "-"))
        asset = AssetFactory(symbol=asset_symbol)
        fund.whitelisted_assets.add(asset)
        # Two fresh sources a cent apart: an unflagged consensus at price_usd + 0.005.
        PriceFactory(asset=asset, price=price_usd, source=Price.Source.BINANCE)
        PriceFactory(asset=asset, price=price_usd + Decimal("0.01"), source=Price.Source.COINGECKO)
        source = FundingSourceFactory(fund=fund, name="Republican budget allocation")
        users = {}
        for name, role in ROLE_USERS:
            user = UserFactory(username=f"{prefix}{name}")
            services.role_grant(user=user, fund=fund, role=role)
            users[name] = user
        policy = services.policy_draft(actor=users["fundadmin"], fund=fund, stages=stages)
        services.policy_publish(actor=users["fundadmin2"], policy_id=policy.pk)
        if cash_usd:
            services.opening_balance_record(fund=fund, funding_source=source, amount_usd=cash_usd)
        return cls(fund=fund, asset=asset, funding_source=source, users=users)

    def reloaded(self) -> "FundBuilder":
        """The same fund, asset, source and users read afresh from the database: a test that
        changes one of them in memory leaves the next test's copies untouched."""
        users = get_user_model().objects.in_bulk([user.pk for user in self.users.values()])
        return FundBuilder(
            fund=Fund.objects.get(pk=self.fund.pk),
            asset=Asset.objects.get(pk=self.asset.pk),
            funding_source=FundingSource.objects.get(pk=self.funding_source.pk),
            users={name: users[user.pk] for name, user in self.users.items()},
        )

    def with_custody_accounts(self) -> "FundBuilder":
        """The same fund with its asset on BNB Smart Chain, a cold multisig (``cold``) holding
        100 of it bought at USD 500 (an opening balance), an empty exchange account
        (``exchange``) and a seized-assets funding source (``seized``)."""
        Asset.objects.filter(pk=self.asset.pk).update(chain="BNB Smart Chain")
        self.asset.refresh_from_db()
        self.cold = CustodyAccountFactory(fund=self.fund, name="Cold multisig")
        self.exchange = CustodyAccountFactory(
            fund=self.fund, name="Exchange", kind=CustodyAccount.Kind.EXCHANGE
        )
        self.seized = FundingSource.objects.create(
            fund=self.fund, name="Court-ordered confiscation", kind="seized_assets"
        )
        services.opening_balance_record(
            fund=self.fund,
            funding_source=self.funding_source,
            asset=self.asset,
            account=self.cold,
            quantity=Decimal("100"),
            amount_usd=Decimal("50000"),
        )
        return self

    def proposal(self, *, author: str = "manager", submit: bool = False, **terms) -> Proposal:
        values = {
            "asset": self.asset,
            "notional_usd": Decimal("500000.00"),
            "limit_price_usd": Decimal("650.00"),
            "rationale": "Build the strategic BNB position.",
            "funding_source": self.funding_source,
            **terms,
        }
        proposal = services.proposal_create(author=self.users[author], fund=self.fund, **values)
        if submit:
            proposal = services.proposal_submit(proposal_id=proposal.pk, actor=self.users[author])
        return proposal

    def decide(self, proposal: Proposal, username: str, verdict: str = "approve", **kwargs):
        user = self.users[username]
        kwargs.setdefault("otp_token", otp_code(user))
        return services.decision_record(
            proposal_id=proposal.pk, user=user, verdict=verdict, **kwargs
        )

    def approve_fully(self, proposal: Proposal) -> Proposal:
        """Walk a submitted proposal through every applicable stage of this builder's policy."""
        for username in ("risk", "committee1", "committee2", "ministry"):
            proposal.refresh_from_db()
            if proposal.state != "in_review":
                break
            self.decide(proposal, username)
        proposal.refresh_from_db()
        return proposal


def otp_device(user) -> TOTPDevice:
    """The user's confirmed authenticator, enrolled on first use."""
    device, _ = TOTPDevice.objects.get_or_create(
        user=user, name="Authenticator", defaults={"confirmed": True}
    )
    return device


def otp_code(user) -> str:
    """A code the user's device accepts now, enrolling a device if the user has none.

    A real code is good once per 30-second step and tests act faster than that, so the device
    first forgets the last step it accepted (and any throttling), as if the next step had come.
    """
    device = otp_device(user)
    TOTPDevice.objects.filter(pk=device.pk).update(
        last_t=-1, throttling_failure_count=0, throttling_failure_timestamp=None
    )
    token = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift).token()
    return f"{token:0{device.digits}d}"


def days_ago(days: int) -> dt.datetime:
    return timezone.now() - dt.timedelta(days=days)
