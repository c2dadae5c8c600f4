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
        event_digest,
        event_hash,
        head_seal,
    )
    from governance.checkpoints import checkpoint_sign
    from governance.export import audit_export
    from governance.models import AuditChain, AuditEvent
    from governance.views.audit import _chain_context

    call_command("migrate", verbosity=0, interactive=False)
    now = timezone.now()
    previous, previous_digest, batch = GENESIS_HASH, GENESIS_HASH, []
    started = time.perf_counter()
    for sequence in range(1, count + 1):
        payload = {"proposal": sequence, "verdict": "approve", "comment": "Within the mandate."}
        content = {
            "sequence": sequence,
            "created_at": now,
            "actor_id": None,
            "action": "decision.recorded",
            "fund_id": None,
            "proposal_id": None,
            "payload": payload,
        }
        digest = event_hash(previous_hash=previous, **content)
        public = event_digest(previous_digest=previous_digest, **content)
        batch.append(
            AuditEvent(
                sequence=sequence,
                created_at=now,
                action="decision.recorded",
                payload=payload,
                previous_hash=previous,
                hash=digest,
                previous_digest=previous_digest,
                digest=public,
            )
        )
        previous, previous_digest = digest, public
        if len(batch) == 5000:
            AuditEvent.objects.bulk_create(batch)
            batch = []
    AuditEvent.objects.bulk_create(batch)
    AuditChain.objects.create(
        pk=1,
        length=count,
        head_hash=previous,
        head_digest=previous_digest,
        seal=head_seal(count, previous),
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
    started = time.perf_counter()
    checkpoint_sign()
    sign_seconds = time.perf_counter() - started
    import tempfile

    sys.path.insert(0, str(BASE_DIR / "verifier"))
    import alem_verify

    with tempfile.TemporaryDirectory() as scratch:
        started = time.perf_counter()
        audit_export(Path(scratch) / "bundle", archive="tar.gz")
        export_seconds = time.perf_counter() - started
        bundle_mb = (Path(scratch) / "bundle.tar.gz").stat().st_size / 1e6
        started = time.perf_counter()
        alem_verify.verify_path(Path(scratch) / "bundle.tar.gz")
        standalone_seconds = time.perf_counter() - started
    print(
        json.dumps(
            {
                "build_seconds": round(build_seconds, 1),
                "verify_seconds": round(verify_seconds, 2),
                "events_per_second": round(count / verify_seconds),
                "page_status_ms": round(status_ms, 2),
                "checkpoint_sign_seconds": round(sign_seconds, 2),
                "export_tar_gz_seconds": round(export_seconds, 2),
                "export_tar_gz_mb": round(bundle_mb, 1),
                "standalone_verify_seconds": round(standalone_seconds, 2),
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
    print(
        f"  sign a checkpoint {result['checkpoint_sign_seconds']} s (verification included); "
        f"export as .tar.gz {result['export_tar_gz_seconds']} s "
        f"({result['export_tar_gz_mb']} MB); standalone verifier on it "
        f"{result['standalone_verify_seconds']} s"
    )


if __name__ == "__main__":
    main()
