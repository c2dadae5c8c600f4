"""Running calls in real threads released together, for the PostgreSQL race tests."""

import threading
from collections.abc import Callable

from django.db import connections

JOIN_TIMEOUT_S = 120


def run_together(calls: list[Callable[[], object]]) -> list[tuple[str, object]]:
    """Run every call in its own thread, all released at once; ``("ok", result)`` or
    ``("error", exception)`` per call, in the order given.

    Each thread closes its database connections when done, so none outlives the test.
    """
    barrier = threading.Barrier(len(calls))
    results: list[tuple[str, object] | None] = [None] * len(calls)

    def work(index: int, call: Callable[[], object]) -> None:
        try:
            barrier.wait(timeout=30)
            results[index] = ("ok", call())
        except BaseException as exc:  # everything is reported, nothing is swallowed
            results[index] = ("error", exc)
        finally:
            connections.close_all()

    threads = [
        threading.Thread(target=work, args=(i, call), name=f"racer-{i}")
        for i, call in enumerate(calls)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=JOIN_TIMEOUT_S)
    hung = [thread.name for thread in threads if thread.is_alive()]
    assert not hung, f"threads still running after {JOIN_TIMEOUT_S}s (a deadlock?): {hung}"
    return results
