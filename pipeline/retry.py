"""Storage outages waited out: an operation that fails because the store cannot be reached is tried again, with a
growing pause, for at most `Storage.retry_seconds`; each process logs an outage once when it starts and once when
it ends, not once per object.

Only transient failures are retried (`pipeline.storage_errors.transient`): no connection, a timeout, a throttled or
unavailable server. A missing object, a refused permission or bad bytes fail at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from pipeline.storage import Storage, read_bytes
from pipeline.storage_errors import StorageOutage, transient
from vitmae.errors import one_line

logger = logging.getLogger(__name__)

T = TypeVar("T")

FIRST_PAUSE_S = 0.5
MAX_PAUSE_S = 8.0


class _StoreStatus:
    """This process's view of the store: up, or down since when (shared by its threads)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.since: float | None = None

    def failed(self, what: str, err: BaseException, storage: Storage) -> None:
        with self.lock:
            if self.since is None:
                self.since = time.monotonic()
                logger.warning(
                    "storage unreachable (%s, %s); waiting up to %.0f s for it",
                    what,
                    one_line(err, 200),
                    storage.retry_seconds,
                )

    def succeeded(self) -> None:
        if self.since is None:
            return
        with self.lock:
            if self.since is not None:
                logger.warning("storage reachable again after %.1f s", time.monotonic() - self.since)
                self.since = None


STORE_STATUS = _StoreStatus()


def retrying(operation: Callable[[], T], storage: Storage, what: str) -> T:
    """`operation()`, tried again on transient failures for at most `storage.retry_seconds`.

    Raises:
        StorageOutage: the store stayed unreachable that long (the last failure is its cause).
        Exception: any failure that is not transient, at once.
    """
    deadline, pause = None, FIRST_PAUSE_S
    while True:
        try:
            result = operation()
        except Exception as err:
            if not transient(err) or storage.retry_seconds <= 0:
                raise
            STORE_STATUS.failed(what, err, storage)
            now = time.monotonic()
            deadline = deadline or now + storage.retry_seconds
            if now >= deadline:
                raise StorageOutage(
                    f"{what}: the storage stayed unreachable for {storage.retry_seconds:.0f} s ({one_line(err, 200)})"
                ) from err
            time.sleep(min(pause, deadline - now))
            pause = min(2 * pause, MAX_PAUSE_S)
            continue
        STORE_STATUS.succeeded()
        return result


def read_retrying(paths: Sequence[str], storage: Storage) -> list[bytes | Exception]:
    """`storage.read_bytes`, the objects that failed transiently read again until the outage passes or
    `storage.retry_seconds` run out; those still unreadable then keep their (transient) exception."""
    results = read_bytes(paths, storage)
    pending = [i for i, found in enumerate(results) if isinstance(found, Exception) and transient(found)]

    def again() -> None:
        nonlocal pending
        for i, found in zip(pending, read_bytes([paths[i] for i in pending], storage)):
            results[i] = found
        pending = [i for i in pending if isinstance(results[i], Exception) and transient(results[i])]
        if pending:
            raise results[pending[0]]

    if pending:
        try:
            retrying(again, storage, f"reading {len(pending)} objects")
        except StorageOutage:
            logger.warning(
                "%d objects stayed unreadable; they become error rows that the next run tries again", len(pending)
            )
    return results
