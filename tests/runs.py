"""An embedding run's outputs read back, and the flags and processes that start one."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from pipeline.records import latest_run
from pipeline.storage import Storage
from pipeline.tables import dataset, open_table

ROOT = Path(__file__).parents[1]
FAULT_INJECTION = Path(__file__).parent / "fault_injection"


def read_run(output: Path | str, storage: Storage | None = None) -> tuple[dict, dict, dict]:
    """(rows of embeddings by path, rows of errors by path, the latest run's record), each path once; `storage`: local
    files by default."""
    storage = storage or Storage()
    tables = {}
    for name in ("embeddings", "errors"):
        found = open_table(f"{output}/{name}", storage)
        rows = dataset(found, f"{output}/{name}", storage).to_table().to_pylist() if found else []
        tables[name] = {r["path"]: r for r in rows}
        assert len(tables[name]) == len(rows), f"a path twice in {name}"
    return tables["embeddings"], tables["errors"], latest_run(str(output), storage)


def run_args(images: Path, output: Path, model: Path, *extra: str) -> list[str]:
    return ["--input", str(images), "--output", str(output), "--model", str(model), "--num_actors", "1", *extra]


def own_ray_env(**faults: str) -> dict[str, str]:
    """This process's environment for a job that must start a Ray of its own, as from cron on a machine without one:
    without an address, ray.init would join any Ray running on this machine (the tests' own, or another's).

    faults: VITMAE_FAULT_* variables for tests/fault_injection/sitecustomize.py, which the job and its Ray workers
    then load.
    """
    env = {**os.environ, "RAY_ADDRESS": "local", **faults}
    if faults:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(FAULT_INJECTION), os.environ.get("PYTHONPATH")]))
    return env


def start_job(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "jobs.embed", *args],
        cwd=ROOT,
        env=env or own_ray_env(),
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def submit_job(client, entrypoint: str, env: dict[str, str], seconds: float = 300) -> str:
    """client.submit_job, tried again while the head has no job agent yet: it waits only 10 s for one, and on a loaded
    2-core machine the agents take longer to start."""
    deadline = time.time() + seconds
    while True:
        try:
            return client.submit_job(entrypoint=entrypoint, runtime_env={"env_vars": env})
        except RuntimeError as err:
            if "No available agent" not in str(err) or time.time() > deadline:
                raise
            time.sleep(2)
