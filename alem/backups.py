"""Backups that restore: a PostgreSQL dump with a manifest of what it holds, and a drill that
restores it into a scratch database and proves it whole.

``backup_take`` opens one ``REPEATABLE READ`` transaction, exports its snapshot
(``pg_export_snapshot()``) and hands it to ``pg_dump --snapshot``, then reads the manifest's
figures (row counts, the audit chain's head, each fund's cash, positions and NAV) inside that
same transaction. The dump and the manifest therefore describe one instant of the database,
even while the application keeps writing.

``restore_drill`` restores a dump into a fresh database on the same server, runs the audit
verification there and recomputes the same figures with the same code, and lists every way the
restored copy differs from the manifest.

The audit key (``ALEM_AUDIT_KEY``) and the secrets key (``ALEM_SECRETS_KEY``) are not in the
dump: the drill verifies the chain under the keys of the settings it runs with.
"""

import datetime as dt
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from django.apps import apps
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connection, connections, transaction
from django.utils import timezone

from portfolio.calculations import decimal_string

MANIFEST_FORMAT = 1
# The project's own records, the people and their fund roles (object permissions) and their
# second factors: what a restored copy must hold row for row.
COUNTED_APPS = ("auth", "guardian", "otp_totp", "portfolio", "governance")
SCRATCH_PREFIX = "alem_restore_drill_"
# libpq reads these from the environment; the password never appears on a command line.
_LIBPQ_OPTIONS = {
    "sslmode": "PGSSLMODE",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
}


class BackupError(Exception):
    """A backup or a drill could not be carried out; the message says why and what to do."""


# ---------------------------------------------------------------------------------------------
# Figures: what the manifest records and the drill recomputes
# ---------------------------------------------------------------------------------------------


def _amount(value: Decimal | None) -> str | None:
    """A decimal in one canonical spelling, so equal amounts compare equal as text."""
    return None if value is None else decimal_string(value)


def counted_models() -> list:
    return [
        model
        for label in COUNTED_APPS
        if apps.is_installed(_app_name(label))
        for model in apps.get_app_config(label).get_models()
        if not model._meta.proxy
    ]


def _app_name(label: str) -> str:
    return {
        "auth": "django.contrib.auth",
        "otp_totp": "django_otp.plugins.otp_totp",
    }.get(label, label)


def database_figures(*, at: dt.datetime) -> dict:
    """Row counts, the audit chain's head and each fund's books, read from the default database
    (in the caller's transaction, if any). Cash and positions are the whole ledger; NAV is
    valued at ``at``, so recomputing it later from the same rows gives the same amount. Both are
    summed from the ledger's entries themselves, never read from the running positions."""
    from governance.models import AuditChain
    from portfolio.models import Fund, NavSnapshot
    from portfolio.selectors import fund_holdings_and_cash, fund_valuation

    counts = {model._meta.label: model._base_manager.count() for model in counted_models()}
    head = AuditChain.objects.filter(pk=1).first()
    audit = {
        "length": head.length if head else 0,
        "head_hash": head.head_hash if head else None,
        "seal": head.seal if head else None,
    }
    funds = {}
    for fund in Fund.objects.order_by("pk"):
        latest = NavSnapshot.objects.filter(fund=fund).order_by("-date").first()
        holdings, cash = fund_holdings_and_cash(fund, at=at)
        funds[fund.slug] = {
            "cash_usd": _amount(cash),
            "positions": {
                h.symbol: {"quantity": _amount(h.quantity), "cost_usd": _amount(h.cost_usd)}
                for h in holdings
            },
            "nav_usd": _amount(fund_valuation(fund, at=at).valuation.nav_usd),
            "latest_nav_snapshot": (
                {"date": latest.date.isoformat(), "nav_usd": _amount(latest.nav_usd)}
                if latest
                else None
            ),
        }
    return {"counts": counts, "audit": audit, "funds": funds}


def figure_differences(expected: dict, found: dict, path: str = "") -> list[str]:
    """Every leaf where ``found`` differs from ``expected``, named by its path."""
    differences = []
    for key in sorted(expected.keys() | found.keys()):
        where = f"{path}{key}"
        if key not in found:
            differences.append(f"{where}: {_show(expected[key])} in the manifest, missing restored")
        elif key not in expected:
            differences.append(f"{where}: not in the manifest, {_show(found[key])} restored")
        elif isinstance(expected[key], dict) and isinstance(found[key], dict):
            differences += figure_differences(expected[key], found[key], f"{where}/")
        elif expected[key] != found[key]:
            differences.append(
                f"{where}: {_show(expected[key])} in the manifest, {_show(found[key])} restored"
            )
    return differences


def _show(value) -> str:
    return json.dumps(value, sort_keys=True)


# ---------------------------------------------------------------------------------------------
# Talking to PostgreSQL's tools
# ---------------------------------------------------------------------------------------------


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BackupError(
            f"{name} is not installed or not on PATH. Install the PostgreSQL client tools of "
            "the server's major version or newer (Debian: apt-get install postgresql-client)."
        )
    return path


def libpq_environment(settings_dict: dict, *, dbname: str | None = None) -> dict[str, str]:
    """The environment for a PostgreSQL client tool to reach the configured database (or
    ``dbname`` on the same server), password included, so that none of it is on the command
    line where other users of the machine could read it."""
    env = dict(os.environ)
    values = {
        "PGHOST": settings_dict.get("HOST"),
        "PGPORT": settings_dict.get("PORT"),
        "PGUSER": settings_dict.get("USER"),
        "PGPASSWORD": settings_dict.get("PASSWORD"),
        "PGDATABASE": dbname or settings_dict.get("NAME"),
    }
    options = settings_dict.get("OPTIONS") or {}
    values |= {var: options.get(option) for option, var in _LIBPQ_OPTIONS.items()}
    for var, value in values.items():
        if value:
            env[var] = str(value)
        else:
            env.pop(var, None)
    return env


def _run(command: list[str], env: dict[str, str], what: str) -> None:
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        stderr = done.stderr.strip() or "(nothing on stderr)"
        raise BackupError(f"{what} failed (exit {done.returncode}): {stderr}")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def manifest_path_for(dump: Path) -> Path:
    """Where the manifest of ``dump`` lives: beside it, ``<name>.manifest.json``."""
    return dump.with_name(f"{dump.stem}.manifest.json")


def default_backup_path(now: dt.datetime) -> Path:
    stamp = now.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return Path(settings.BASE_DIR) / "var" / "backups" / f"alem-{stamp}.dump"


# ---------------------------------------------------------------------------------------------
# Backup
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Backup:
    dump: Path
    manifest: Path
    size: int
    snapshot_at: dt.datetime


def backup_take(*, output: Path | None = None) -> Backup:
    """Dump the default database (``pg_dump --format=custom``) to ``output`` (default
    ``var/backups/alem-<UTC timestamp>.dump``) and write its manifest beside it.

    Preconditions: PostgreSQL, outside any transaction (pg_dump sees only committed rows).
    Effects: both files are written to temporary names and renamed into place, the dump first,
    so a file under its final name is always complete. Changes nothing in the database.
    """
    pg_dump = _tool("pg_dump")
    if connection.in_atomic_block:
        raise BackupError("Take a backup outside a transaction: pg_dump sees only committed rows.")
    started = timezone.now()
    dump = Path(output) if output else default_backup_path(started)
    dump.parent.mkdir(parents=True, exist_ok=True)
    manifest = manifest_path_for(dump)
    dump_tmp = _temporary_beside(dump)
    manifest_tmp = _temporary_beside(manifest)
    try:
        with transaction.atomic():
            with connection.cursor() as cursor:
                # The first statement fixes the snapshot; every later read in this transaction,
                # and pg_dump through the exported id, sees exactly the same rows.
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                cursor.execute("SELECT pg_export_snapshot(), now(), current_database()")
                snapshot_id, snapshot_at, database = cursor.fetchone()
            _run(
                [
                    pg_dump,
                    "--format=custom",
                    f"--snapshot={snapshot_id}",
                    "--lock-wait-timeout=60s",
                    f"--file={dump_tmp}",
                ],
                libpq_environment(connection.settings_dict),
                "pg_dump",
            )
            figures = database_figures(at=snapshot_at)
        content = {
            "format": MANIFEST_FORMAT,
            "database": database,
            "snapshot_at": snapshot_at.isoformat(),
            "dump": {"name": dump.name, "sha256": sha256_of(dump_tmp)},
            **figures,
        }
        manifest_tmp.write_text(json.dumps(content, indent=2, sort_keys=True) + "\n")
        os.replace(dump_tmp, dump)
        os.replace(manifest_tmp, manifest)
    finally:
        dump_tmp.unlink(missing_ok=True)
        manifest_tmp.unlink(missing_ok=True)
    return Backup(dump=dump, manifest=manifest, size=dump.stat().st_size, snapshot_at=snapshot_at)


def _temporary_beside(path: Path) -> Path:
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    return Path(name)


# ---------------------------------------------------------------------------------------------
# Restore drill
# ---------------------------------------------------------------------------------------------


@dataclass
class DrillResult:
    database: str
    kept: bool
    audit_length: int = 0
    differences: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.differences


def read_manifest(path: Path) -> dict:
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise BackupError(
            f"No manifest at {path}: the drill compares the restored copy with the manifest "
            "that manage.py backup writes beside the dump (or pass --manifest)."
        ) from exc
    except json.JSONDecodeError as exc:
        raise BackupError(f"The manifest {path} is not valid JSON: {exc}.") from exc
    missing = {"dump", "snapshot_at", "counts", "audit", "funds"} - manifest.keys()
    if manifest.get("format") != MANIFEST_FORMAT or missing:
        raise BackupError(
            f"The manifest {path} is not one manage.py backup writes (format "
            f"{MANIFEST_FORMAT}; missing: {', '.join(sorted(missing)) or 'nothing'})."
        )
    return manifest


def restore_drill(
    *,
    dump: Path,
    manifest_path: Path | None = None,
    keep: bool = False,
    before_check: Callable[[], None] | None = None,
) -> DrillResult:
    """Restore ``dump`` into a new scratch database on the configured server and compare it with
    its manifest: the audit chain verifies there, and the row counts, the chain's head and each
    fund's cash, positions and NAV are the manifest's.

    The scratch database is dropped afterwards unless ``keep``. ``before_check`` runs with the
    scratch database as the default connection, just before the comparison (tests use it to
    alter the restored copy). Changes nothing in the configured database.
    """
    from governance.audit import audit_verify

    dump = Path(dump)
    if not dump.is_file():
        raise BackupError(f"No dump at {dump}.")
    manifest = read_manifest(Path(manifest_path) if manifest_path else manifest_path_for(dump))
    pg_restore = _tool("pg_restore")
    if sha256_of(dump) != manifest["dump"]["sha256"]:
        raise BackupError(
            f"The dump's SHA-256 is not the manifest's: {dump} was changed or truncated after "
            "the backup (or the manifest belongs to another dump). Nothing was restored."
        )
    result = DrillResult(database=f"{SCRATCH_PREFIX}{secrets.token_hex(6)}", kept=keep)
    _create_database(result.database)
    try:
        _run(
            [
                pg_restore,
                "--exit-on-error",
                "--no-owner",
                "--no-privileges",
                f"--dbname={result.database}",
                str(dump),
            ],
            libpq_environment(connection.settings_dict, dbname=result.database),
            "pg_restore",
        )
        with default_database(result.database):
            if before_check is not None:
                before_check()
            verification = audit_verify()
            snapshot_at = dt.datetime.fromisoformat(manifest["snapshot_at"])
            found = database_figures(at=snapshot_at)
        result.audit_length = verification.length
        if not verification.ok:
            at = verification.first_bad_sequence
            result.differences.append(
                "verify_audit fails on the restored copy"
                + (f" at event #{at}" if at is not None else "")
                + f": {verification.reason}"
            )
        expected = {key: manifest[key] for key in ("counts", "audit", "funds")}
        result.differences += figure_differences(expected, found)
    finally:
        if not keep:
            _drop_database(result.database)
    return result


@contextmanager
def default_database(name: str) -> Iterator[None]:
    """Make database ``name`` on the same server the default connection for the block, so the
    project's own selectors and audit verification read it unchanged. Caches keyed by row id
    (content types) are cleared on the way in and out."""
    from django.contrib.contenttypes.models import ContentType

    original = connections[DEFAULT_DB_ALIAS]
    scratch = original.__class__(_unpooled(original.settings_dict, NAME=name), DEFAULT_DB_ALIAS)
    connections[DEFAULT_DB_ALIAS] = scratch
    ContentType.objects.clear_cache()
    try:
        yield
    finally:
        scratch.close()
        connections[DEFAULT_DB_ALIAS] = original
        ContentType.objects.clear_cache()


def _unpooled(settings_dict: dict, **changes) -> dict:
    """The configured connection's settings for a connection of our own that closes for real
    (no persistent connection, no pool), so that the scratch database can be dropped."""
    options = {k: v for k, v in (settings_dict.get("OPTIONS") or {}).items() if k != "pool"}
    return {**settings_dict, "CONN_MAX_AGE": 0, "OPTIONS": options, **changes}


@contextmanager
def _server_cursor():
    """A cursor in autocommit on the configured server, apart from the default connection
    (CREATE and DROP DATABASE cannot run inside a transaction)."""
    default = connections[DEFAULT_DB_ALIAS]
    wrapper = default.__class__(_unpooled(default.settings_dict), DEFAULT_DB_ALIAS)
    try:
        wrapper.ensure_connection()
        wrapper.set_autocommit(True)
        with wrapper.cursor() as cursor:
            yield cursor
    finally:
        wrapper.close()


def _create_database(name: str) -> None:
    try:
        with _server_cursor() as cursor:
            cursor.execute(f"CREATE DATABASE \"{name}\" TEMPLATE template0 ENCODING 'UTF8'")
    except DatabaseError as exc:
        raise BackupError(
            f"Could not create the scratch database {name}: {exc}. The drill needs a role "
            "allowed to create databases (CREATEDB) on the configured server."
        ) from exc


def _drop_database(name: str) -> None:
    with _server_cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}"')
