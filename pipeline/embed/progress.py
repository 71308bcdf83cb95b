"""The run's progress for the people who read its log: one line every few seconds and one at the end, with the
images done of the total, the rate, the time left, the rows committed and the tables' versions.

    embedded 1,024 of 10,000 images (10 %) in 1m 40s, 10.2 images/s, about 14m 40s left; 768 rows committed,
    embeddings version 5

Its thread also makes the Committer's time-based commits while no file arrives (`Committer.tick`), so that a file
written waits no longer than `commit_seconds` for its commit, however long the next file takes.
"""

from __future__ import annotations

import logging
import threading
import time
from types import TracebackType

from pipeline.embed.commit import Committer
from pipeline.layout import EMBEDDINGS_DIR, ERRORS_DIR

logger = logging.getLogger(__name__)

TICK_SECONDS = 1.0  # how often the thread looks at the committer


def duration(seconds: float) -> str:
    """3725.2 -> '1h 2m', 100 -> '1m 40s', 7.4 -> '7s'."""
    seconds = int(round(seconds))
    hours, minutes = divmod(seconds // 60, 60)
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {seconds % 60}s" if minutes else f"{seconds}s"


class Progress:
    """A context around the run's stage: lines every `every` seconds (0: only the last), time-based commits, and
    any failure of those commits raised in the run's own thread when the stage ends."""

    def __init__(self, total: int, committer: Committer, every: float) -> None:
        self.total, self.committer, self.every = total, committer, every
        self.start = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vitmae-progress", daemon=True)
        self._error: BaseException | None = None

    def __enter__(self) -> Progress:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()
        if error is None and self._error is not None:
            raise self._error
        if error is None:
            logger.info(self.line())

    def check(self) -> None:
        """Raises, in the caller's thread, what failed in the progress thread (a commit)."""
        if self._error is not None:
            raise self._error

    def line(self) -> str:
        """What the run has done, in one line."""
        done, elapsed = self.committer.written, time.monotonic() - self.start
        rate = done / elapsed if elapsed > 0 else 0.0
        share = f" ({100 * done // self.total} %)" if self.total else ""
        left = f", about {duration((self.total - done) / rate)} left" if 0 < done < self.total else ""
        committed = self.committer.committed[EMBEDDINGS_DIR] + self.committer.committed[ERRORS_DIR]
        version = self.committer.tables[EMBEDDINGS_DIR].version
        return (
            f"embedded {done:,} of {self.total:,} images{share} in {duration(elapsed)}, {rate:.1f} images/s{left}; "
            f"{committed:,} rows committed, embeddings version {version}"
        )

    def _run(self) -> None:
        last_line = time.monotonic()
        while not self._stop.wait(TICK_SECONDS):
            try:
                self.committer.tick()
            except BaseException as error:  # raised again in the run's thread (`check`, `__exit__`)
                self._error = error
                return
            if self.every and time.monotonic() - last_line >= self.every:
                last_line = time.monotonic()
                logger.info(self.line())
