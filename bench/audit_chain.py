"""How long does verifying the whole audit chain take, and what does the auditors' page pay for
its status line? Measured, not asserted: this prints figures and is not a test.

Builds a chain of ``--events`` well-formed events (hashed as ``audit_record`` hashes them,
inserted in bulk), then times ``audit_verify`` (the hourly task's and "Verify now"'s work) and
the page's status lookup (``governance.views.audit._chain_context``), on a scratch database
``alem_audit_bench`` (dropped and created again) on the server of DATABASE_URL.

    make bench                                                          # all three benchmarks
    .venv/bin/python embedded_db.py -- .venv/bin/python bench/audit_chain.py --events 1000000
"""

import argparse
import json
import sys
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

from bench.databases import add_database_arguments, run_on_scratch_database  # noqa: E402


def child(count: int) -> None:
    import django

    django.setup()
    from django.core.management import call_command
    from django.utils import timezone

    from governance.audit import (
        GENESIS_HASH,
        audit_verification_run,
        audit_verify,
        event_hash,
        head_seal,
    )
    from governance.models import AuditChain, AuditEvent
    from governance.views.audit import _chain_context

    call_command("migrate", verbosity=0, interactive=False)
    now = timezone.now()
    previous, batch = GENESIS_HASH, []
    started = time.perf_counter()
    for sequence in range(1, count + 1):
        payload = {"proposal": sequence, "verdict": "approve", "comment": "Within the mandate."}
        digest = event_hash(
            previous_hash=previous,
            sequence=sequence,
            created_at=now,
            actor_id=None,
            action="decision.recorded",
            fund_id=None,
            proposal_id=None,
            payload=payload,
        )
        batch.append(
            AuditEvent(
                sequence=sequence,
                created_at=now,
                action="decision.recorded",
                payload=payload,
                previous_hash=previous,
                hash=digest,
            )
        )
        previous = digest
        if len(batch) == 5000:
            AuditEvent.objects.bulk_create(batch)
            batch = []
    AuditEvent.objects.bulk_create(batch)
    AuditChain.objects.create(
        pk=1, length=count, head_hash=previous, seal=head_seal(count, previous)
    )
    build_seconds = time.perf_counter() - started

    started = time.perf_counter()
    found = audit_verify()
    verify_seconds = time.perf_counter() - started
    assert found.ok and found.length == count, found
    audit_verification_run()
    started = time.perf_counter()
    for _ in range(100):
        _chain_context()
    status_ms = (time.perf_counter() - started) * 1000 / 100
    print(
        json.dumps(
            {
                "build_seconds": round(build_seconds, 1),
                "verify_seconds": round(verify_seconds, 2),
                "events_per_second": round(count / verify_seconds),
                "page_status_ms": round(status_ms, 2),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    add_database_arguments(parser)
    args = parser.parse_args()
    if args.child:
        child(args.events)
        return

    result = run_on_scratch_database(
        __file__, ["--events", str(args.events)], scratch_name="alem_audit_bench"
    )
    print(f"Audit chain of {args.events:,} events")
    print(
        f"  verify {result['verify_seconds']} s ({result['events_per_second']:,} events/s); "
        f"page status line {result['page_status_ms']} ms; building the chain took "
        f"{result['build_seconds']} s"
    )


if __name__ == "__main__":
    main()
