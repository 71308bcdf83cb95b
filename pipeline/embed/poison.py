"""Batches that kill model actors: each attempt is counted by a small actor of the run's, across the actors' deaths
and restarts, so that a batch that killed `MAX_ATTEMPTS` of them is embedded image by image, and an image that kills
that many becomes an error row instead of stopping the run (Ray Data would give it to new actors forever).

The model stage imports no Ray: it only calls the methods of the handle it is given.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

MAX_ATTEMPTS = 2  # deaths of a batch (or an image) before it is split (or given up)


class Attempts:
    """How many times each batch or image was started and not finished (a Ray actor)."""

    def __init__(self) -> None:
        self.counts: dict[tuple, int] = {}

    def count(self, key: tuple) -> int:
        """Counts an attempt at `key`; returns the attempts so far, this one included."""
        self.counts[key] = self.counts.get(key, 0) + 1
        return self.counts[key]

    def clear(self, key: tuple) -> None:
        """Forgets the attempts at `key`: it finished."""
        self.counts.pop(key, None)


def attempts_actor() -> Any:
    """A new `Attempts` actor for one run, on the driver's node (it holds no CPU): on any other node, losing that
    node would fail every model task that asks it."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    return ray.remote(num_cpus=0, scheduling_strategy=here)(Attempts).remote()


def batch_key(ids: np.ndarray) -> tuple:
    """What names a batch across retries: its ids (the work's rows are numbered once per run)."""
    return (int(ids.min()), int(ids.max()), len(ids)) if len(ids) else ()


def count_attempt(attempts: Any, key: tuple) -> int:
    """Counts an attempt at `key` on the `Attempts` actor; returns the attempts so far, this one included."""
    return sys.modules["ray"].get(attempts.count.remote(key))


def clear_attempts(attempts: Any, key: tuple) -> None:
    """Forgets the attempts at `key` on the `Attempts` actor, once it finished."""
    sys.modules["ray"].get(attempts.clear.remote(key))
