"""The embedding job's driver against the size of its input: peak memory and the time to the first committed batch,
at 10k, 100k and 1M listed inputs.

The inputs come from an `--input-list` Parquet file with the identity columns of an S3 Inventory report, naming files
that do not exist: every row is work, read fails at once, and the rows reach the errors table through the whole
pipeline (listing, diff, work file, Ray Data, write stage, commits) without decoding or model time. The job is the
whole command, with its own local Ray; it is killed once its first batch is committed. The driver's peak memory is
its VmHWM, read from /proc while it runs (Ray's own processes are apart).

    python benchmarks/driver_memory.py [--sizes 10000,100000,1000000] [--baseline ../other-checkout]

`--baseline` runs the same inputs with the job of another checkout of the project (an earlier commit), in the same
run, for the ratio.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline_throughput import hardware, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def inventory(path: Path, rows: int, folder: Path) -> None:
    """An inventory of `rows` files under `folder` (none of which exists), with size, last_modified and etag."""
    ids = np.arange(rows)
    pq.write_table(pa.table({
        "path": [f"{folder}/{i // 1000:05d}/{i:09d}.jpg" for i in ids],
        "size": pa.array(np.full(rows, 150_000), pa.int64()),
        "last_modified": pa.array(np.full(rows, 1.7e9)),
        "etag": [f"{i:032x}" for i in ids],
    }), path)


def peak_gb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 2**20
    except (OSError, StopIteration):
        return 0.0


def first_commit(output: Path) -> bool:
    from pipeline.storage import Storage
    from pipeline.tables import open_table

    table = open_table(str(output / "errors"), Storage())
    return table is not None and any(h.get("vitmae.commit") == "add" for h in table.history())


def measure(rows: int, workdir: Path, model: str, code: Path) -> tuple[float, float]:
    """(seconds to the first committed batch, the driver's peak memory in GB) of the job in checkout `code`."""
    listing, output = workdir / f"inventory-{rows}.parquet", workdir / f"out-{code.name}-{rows}"
    if not listing.exists():
        inventory(listing, rows, workdir / "missing")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"PYTHONPATH": str(code)}
    start = time.perf_counter()
    job = subprocess.Popen([sys.executable, "-m", "jobs.embed", "--input-list", str(listing), "--output", str(output),
                            "--model", model, "--commit-seconds", "5", "--no-index"],
                           cwd=code, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = 0.0
    while job.poll() is None and not first_commit(output):
        peak = max(peak, peak_gb(job.pid))
        time.sleep(0.25)
    seconds = time.perf_counter() - start
    peak = max(peak, peak_gb(job.pid))
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    return seconds, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--baseline", type=Path, help="another checkout of the project to measure beside this one")
    args = parser.parse_args()
    print(hardware())
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        model = save_checkpoint(Path(tmp) / "model", "small")
        codes = [ROOT] + ([args.baseline.resolve()] if args.baseline else [])
        print(f"{'checkout':>24} {'listed inputs':>14} {'s to the first commit':>22} {'driver peak GB':>15}")
        for rows in (int(n) for n in args.sizes.split(",")):
            for code in codes:
                seconds, peak = measure(rows, Path(tmp), model, code)
                print(f"{str(code):>24} {rows:>14,} {seconds:22.1f} {peak:15.2f}", flush=True)


if __name__ == "__main__":
    main()
