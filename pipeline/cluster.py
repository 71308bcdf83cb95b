"""Starting Ray for a job that was not given one."""

from __future__ import annotations

import os
from typing import Any

import ray

# Ray keeps at most as many idle worker processes as the node has CPUs free. The model actors (or Ray Train's
# workers) hold every CPU, so the worker of each short task beside them (reading the work, writing a batch) is
# killed a second after its task and started again for the next one: on 2 cores that was a worker start, about a
# second of CPU, every few images (benchmarks/RESULTS.md). A Ray this process starts keeps one idle worker a core.
_IDLE_WORKERS = "RAY_num_workers_soft_limit"


def start_ray(**init: Any) -> None:
    """`ray.init(**init)`: joins the cluster that `address` or RAY_ADDRESS names (without either, one started on this
    machine, as Ray does), else starts one whose raylet keeps an idle worker process per core (unless
    RAY_num_workers_soft_limit says otherwise)."""
    os.environ.setdefault(_IDLE_WORKERS, str(os.cpu_count() or 1))
    ray.init(**init)
