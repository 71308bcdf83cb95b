"""The embedding job's driver against the size of its input: peak memory and the time to the first committed batch,
at 10k, 100k and 1M listed inputs.

The inputs are one of (`--inputs`, several to compare them in one run):
- `list`: an `--input_list` Parquet file with the identity columns of an S3 Inventory report, naming files that do
  not exist;
- `prefix`: `--input FOLDER/`, a local folder of empty .jpg files, 1,000 a subfolder, walked as a prefix is;
- `glob`: `--input 'FOLDER/*/*.jpg'`, the same files matched by a glob.
Every row is work, read fails at once (no such file, or an empty one), and the rows reach the errors table through
the whole pipeline (listing, diff, work file, Ray Data, write stage, commits) without decoding or model time. The job
is the whole command, with its own local Ray; it is killed once its first batch is committed. The driver's peak
memory is its VmHWM, read from /proc while it runs (Ray's own processes are apart). `--stage listing` measures the
listing stage alone instead: the inputs listed and written to local Parquet as the driver does, in a process of its
own, its peak RSS and its time.

    python -m benchmarks.driver_memory [--sizes 10000,100000,1000000] [--inputs list,prefix,glob]
                                       [--stage job|listing] [--baseline ../other-checkout]

`--baseline` runs the same inputs with the job of another checkout of the project (an earlier commit), in the same
run, for the ratio. The inputs are made in `--workdir` and kept there for later runs (a million files take minutes
to make); the outputs go to a temporary folder inside it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.common import MODELS, ROOT, hardware, save_checkpoint, status_kb


def inventory(path: Path, rows: int, folder: Path) -> None:
    """An inventory of `rows` files under `folder` (none of which exists), with size, last_modified and etag."""
    ids = np.arange(rows)
    pq.write_table(
        pa.table(
            {
                "path": [f"{folder}/{i // 1000:05d}/{i:09d}.jpg" for i in ids],
                "size": pa.array(np.full(rows, 150_000), pa.int64()),
                "last_modified": pa.array(np.full(rows, 1.7e9)),
                "etag": [f"{i:032x}" for i in ids],
            }
        ),
        path,
    )


def tree(folder: Path, rows: int) -> None:
    """`rows` empty .jpg files under `folder`, 1,000 a subfolder, made once (under another name, then renamed)."""
    if folder.exists():
        return
    making = folder.with_name(folder.name + ".making")
    shutil.rmtree(making, ignore_errors=True)
    for i in range(rows):
        if i % 1000 == 0:
            (making / f"{i // 1000:05d}").mkdir(parents=True)
        (making / f"{i // 1000:05d}" / f"{i:09d}.jpg").touch()
    making.rename(folder)


def input_flags(kind: str, rows: int, workdir: Path) -> list[str]:
    """The job's flags for `rows` inputs of `kind` (list, prefix or glob), made in `workdir` the first time."""
    if kind == "list":
        listing = workdir / f"inventory-{rows}.parquet"
        if not listing.exists():
            inventory(listing, rows, workdir / "missing")
        return ["--input_list", str(listing)]
    folder = workdir / f"tree-{rows}"
    tree(folder, rows)
    return ["--input", f"{folder}/" if kind == "prefix" else f"{folder}/*/*.jpg"]


def peak_gb(pid: int) -> float:
    try:
        return status_kb("VmHWM", pid) / 2**20
    except (OSError, StopIteration):  # gone, or a zombie without memory
        return 0.0


def first_commit(output: Path) -> bool:
    from pipeline.storage import Storage
    from pipeline.tables import open_table

    table = open_table(str(output / "errors"), Storage())
    return table is not None and any(h.get("vitmae.commit") == "add" for h in table.history())


def measure(rows: int, inputs: Path, workdir: Path, model: str, code: Path, kind: str = "list") -> tuple[float, float]:
    """(seconds to the first committed batch, the driver's peak memory in GB) of the job in checkout `code`, over
    `rows` inputs of `kind` made in `inputs` (`input_flags`), writing in `workdir`."""
    flags, output = input_flags(kind, rows, inputs), workdir / f"out-{code.name}-{kind}-{rows}"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"PYTHONPATH": str(code)}
    start = time.perf_counter()
    job = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jobs.embed",
            *flags,
            "--output",
            str(output),
            "--model",
            model,
            "--commit_seconds",
            "5",
            "--build_index",
            "false",
        ],
        cwd=code,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    peak = 0.0
    while job.poll() is None and not first_commit(output):
        peak = max(peak, peak_gb(job.pid))
        time.sleep(0.25)
    seconds = time.perf_counter() - start
    peak = max(peak, peak_gb(job.pid))
    if job.poll() is not None and not first_commit(output):
        raise RuntimeError(
            f"the job of {code} ended with status {job.returncode} before its first commit: {' '.join(flags)}"
        )
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    return seconds, peak


# The listing stage alone, in a process of its own: the inputs to local Parquet as the driver writes them.
LISTING_ONLY = """
import sys, tempfile, time
from pipeline.embed.listing import iter_input_list, iter_listing, write_listing
from pipeline.storage import Storage

start = time.perf_counter()
with tempfile.TemporaryDirectory() as folder:
    chunks = (
        iter_input_list(sys.argv[2], Storage())
        if sys.argv[1] == "--input_list"
        else iter_listing(sys.argv[2], ("jpg",), Storage())
    )
    rows = write_listing(chunks, folder)
with open("/proc/self/status") as f:  # VmHWM starts anew at exec; ru_maxrss would count the forking parent's
    peak = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 2**20
print(rows, time.perf_counter() - start, peak)
"""


def measure_listing(rows: int, inputs: Path, code: Path, kind: str) -> tuple[float, float]:
    """(seconds, peak memory in GB) of the listing stage alone (`LISTING_ONLY`) in checkout `code`."""
    env = os.environ | {"PYTHONPATH": str(code)}
    done = subprocess.run(
        [sys.executable, "-c", LISTING_ONLY, *input_flags(kind, rows, inputs)],
        cwd=code,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    listed, seconds, peak = done.stdout.split()
    assert int(listed) == rows, f"listed {listed} of {rows}"
    return float(seconds), float(peak)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--inputs", default="list", help="list, prefix, glob: what the inputs are, comma-separated")
    parser.add_argument(
        "--stage",
        choices=("job", "listing"),
        default="job",
        help="job: the whole job to its first commit; listing: the listing stage alone",
    )
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--baseline", type=Path, help="another checkout of the project to measure beside this one")
    args = parser.parse_args()
    print(hardware())
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        inputs = Path(args.workdir or tmp)
        model = save_checkpoint(Path(tmp) / "model", MODELS["small"])
        codes = [ROOT] + ([args.baseline.resolve()] if args.baseline else [])
        what = "s to the first commit" if args.stage == "job" else "s to list"
        print(f"{'checkout':>24} {'input':>7} {'listed inputs':>14} {what:>22} {'driver peak GB':>15}")
        for rows in (int(n) for n in args.sizes.split(",")):
            for kind in args.inputs.split(","):
                for code in codes:
                    seconds, peak = (
                        measure(rows, inputs, Path(tmp), model, code, kind)
                        if args.stage == "job"
                        else measure_listing(rows, inputs, code, kind)
                    )
                    print(f"{str(code):>24} {kind:>7} {rows:>14,} {seconds:22.1f} {peak:15.2f}", flush=True)


if __name__ == "__main__":
    main()
