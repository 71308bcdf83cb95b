"""What scheduled runs cost: a first run, an unchanged re-run, a run after 1 % of the images changed, a run killed
half way and the run that finishes it; the listing-against-table diff at 1M and 10M rows; and HNSW searches that
filter removed ids, by the share removed.

Each embedding run is the whole command (`python -m jobs.embed`, its own local Ray), timed from outside.

    python -m benchmarks.incremental --images 10000                     # the runs
    python -m benchmarks.incremental --images 0 --diff-rows 1000000,10000000 --hnsw 0
    python -m benchmarks.incremental --images 0 --diff-rows '' --hnsw 200000
"""

from __future__ import annotations

import argparse
import json
import logging
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

from benchmarks.common import MODELS, ROOT, clustered, hardware, photo_folder, save_checkpoint

logger = logging.getLogger("incremental")


# ---------------------------------------------------------------- the runs


def make_pngs(folder: Path, count: int, first: int = 0) -> None:
    """`count` distinct small PNGs (64 x 48 crops of scikit-image's photographs, with noise)."""
    from PIL import Image

    names = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png")
    photos = [np.asarray(Image.open(photo_folder() / n).convert("RGB").resize((320, 240))) for n in names]
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(first)
    for i in range(first, first + count):
        photo = photos[i % len(photos)]
        x, y = rng.integers(0, 320 - 64), rng.integers(0, 240 - 48)
        crop = photo[y : y + 48, x : x + 64].astype(np.int16) + rng.integers(-8, 9, (48, 64, 3))
        Image.fromarray(np.clip(crop, 0, 255).astype(np.uint8)).save(folder / f"img-{i:06d}.png")


def job(args: list[str], output: Path, kill_at_rows: int | None = None) -> tuple[float, dict | None, str]:
    """Runs the embedding job as a user would; returns (seconds, the run's record or None if killed, output tail).

    kill_at_rows: SIGKILL the job and its local Ray once its workers have written this many rows.
    """
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "jobs.embed", *args],
        cwd=ROOT,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL if kill_at_rows else subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    if kill_at_rows is None:
        out = process.communicate()[0]
    else:
        while process.poll() is None and written_rows(output) < kill_at_rows:
            time.sleep(0.5)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        return time.perf_counter() - start, None, ""
    seconds = time.perf_counter() - start
    if process.returncode:
        raise RuntimeError(f"the job failed: {out[-3000:]}")
    from pipeline.records import latest_run
    from pipeline.storage import Storage

    return seconds, latest_run(str(output), Storage()), out[-1500:]


def written_rows(output: Path) -> int:
    """Rows in the embeddings table's data files, committed or not."""
    total = 0
    for path in (output / "embeddings").glob("*.parquet"):
        try:
            total += pq.read_metadata(path).num_rows
        except (OSError, ValueError):  # being written
            pass
    return total


def committed_rows(output: Path) -> int:
    from pipeline.storage import Storage
    from pipeline.tables import open_table

    table = open_table(str(output / "embeddings"), Storage())
    return (
        0
        if table is None
        else sum(int(h.get("vitmae.rows", 0)) for h in table.history() if h.get("vitmae.commit") == "add")
    )


def runs(count: int, workdir: Path, model_size: str, commits: list[str]) -> None:
    images, output = workdir / "images", workdir / "out"
    make_pngs(images, count)
    model = save_checkpoint(workdir / "model", MODELS[model_size])
    args = ["--input", str(images), "--output", str(output), "--model", model]
    print(f"\n{count:,} PNGs of 64x48, model {model_size} (random weights), CPU; each run is the whole command")
    print(
        f"{'run':44} {'s':>7} {'% of first':>10} {'embedded':>9} "
        f"{'commits':>8} {'embed s':>8} {'maint. s':>8} {'index s':>7}"
    )

    def show(name: str, seconds: float, record: dict | None, first: float) -> None:
        if record is None:
            print(f"{name:44} {seconds:7.1f} {100 * seconds / first:9.1f}%   (killed)")
            return
        t = record["timings"]
        print(
            f"{name:44} {seconds:7.1f} {100 * seconds / first:9.1f}% {record['counts'].get('embedded', 0):>9} "
            f"{record.get('commits', 0):>8} {t.get('embed_seconds', 0):8.1f} {t.get('maintenance_seconds', 0):8.1f} "
            f"{t.get('index_seconds', 0):7.1f}"
        )

    first, record, _ = job(args, output)
    show("first run", first, record, first)
    seconds, record, _ = job(args, output)
    show("unchanged re-run", seconds, record, first)
    changed = max(1, count // 100)
    make_pngs(images, 1, first=2 * count)
    seconds, record, _ = job(args, output)
    show("one new image: the fixed cost", seconds, record, first)
    make_pngs(images, changed, first=count)  # new: 1 % of the images
    for path in sorted(images.iterdir())[: changed // 2]:
        path.unlink()  # and half as many gone
    seconds, record, _ = job(args, output)
    show(f"1 % new ({changed}), {changed // 2} gone", seconds, record, first)
    resumed = workdir / "out-killed"
    kill_args = ["--input", str(images), "--output", str(resumed), "--model", model, *commits]
    total = len(list(images.iterdir()))
    seconds, _, _ = job(kill_args, resumed, kill_at_rows=total // 2)
    committed = committed_rows(resumed)
    show(
        f"killed at {100 * written_rows(resumed) / total:.0f} % written ({100 * committed / total:.1f} % committed)",
        seconds,
        None,
        first,
    )
    seconds, record, _ = job(kill_args, resumed)
    share = 100 * record["counts"].get("embedded", 0) / total
    show(f"the resumed run ({share:.1f} % of the images)", seconds, record, first)


# ---------------------------------------------------------------- the diff


DIFF_CHILD = """
import json, sys, tempfile, time
from pipeline.embed.diff import compare
from pipeline.storage import Storage
from pipeline.tables import dataset, open_table


def peak_gb():  # VmHWM: unlike ru_maxrss, it does not start from the parent's
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 2**20


root = sys.argv[1]
imported = peak_gb()
start = time.perf_counter()
table = open_table(f"{root}/embeddings", Storage())
with tempfile.TemporaryDirectory() as folder:  # DuckDB's spill and the work file, as the job's driver has them
    diff = compare(f"{root}/listing.parquet", dataset(table, f"{root}/embeddings", Storage()), None, folder)
    seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "peak_rss_gb": peak_gb(), "imports_gb": imported, "counts": diff.counts}))
"""


def diff_data(root: Path, rows: int, dim: int = 16, file_rows: int = 250_000) -> None:
    """A table of `rows` embeddings in files of `file_rows`, and a listing with 1 % changed, 1 % gone and 1 % new."""
    from deltalake import write_deltalake

    from pipeline import schema

    rng = np.random.default_rng(0)
    uri = str(root / "embeddings")
    for start in range(0, rows, file_rows):
        n = min(file_rows, rows - start)
        ids = np.arange(start, start + n)
        table = pa.table(
            {
                schema.ID: ids,
                schema.PATH: [f"s3://bucket/photos/{i:09d}.jpg" for i in ids],
                schema.EMBEDDING: pa.FixedSizeListArray.from_arrays(
                    rng.standard_normal(n * dim, dtype=np.float32), dim
                ).cast(pa.list_(pa.float32())),
                schema.LOSS: pa.nulls(n, pa.float32()),
                schema.WIDTH: pa.array(np.full(n, 640), pa.int32()),
                schema.HEIGHT: pa.array(np.full(n, 480), pa.int32()),
                schema.SIZE: pa.array(np.full(n, 100_000), pa.int64()),
                schema.MTIME: pa.array(np.full(n, 1.7e9)),
                schema.ETAG: [f"e{i:09d}" for i in ids],
                schema.RUN: pa.array(["r"] * n),
            },
            schema=schema.EMBEDDINGS_SCHEMA,
        )
        write_deltalake(uri, table, mode="append")
    listed = np.arange(rows // 100, rows + rows // 100)  # the first 1 % gone, 1 % new at the end
    etags = [f"e{i:09d}" if i % 100 != 50 else f"x{i:09d}" for i in listed]  # 1 % changed
    pq.write_table(
        pa.table(
            {
                schema.PATH: [f"s3://bucket/photos/{i:09d}.jpg" for i in listed],
                schema.SIZE: pa.array(np.full(len(listed), 100_000), pa.int64()),
                schema.MTIME: pa.array(np.full(len(listed), 1.7e9)),
                schema.ETAG: etags,
            },
            schema=schema.LISTING_SCHEMA,
        ),
        root / "listing.parquet",
    )


def diffs(sizes: list[int], workdir: Path) -> None:
    print(
        "\nthe diff: a listing Parquet file against a Delta table (1 % changed, 1 % gone, 1 % new), DuckDB at its 1 GB "
        "limit, in a fresh process"
    )
    print(f"{'rows':>12} {'data s':>7} {'diff s':>7} {'peak RSS GB':>12} {'after imports':>14}  counts")
    for rows in sizes:
        root = workdir / f"diff-{rows}"
        start = time.perf_counter()
        diff_data(root, rows)
        made = time.perf_counter() - start
        done = subprocess.run(
            [sys.executable, "-c", DIFF_CHILD, str(root.resolve())],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        result = json.loads(done.stdout.strip().splitlines()[-1])
        print(
            f"{rows:>12,} {made:7.1f} {result['seconds']:7.1f} "
            f"{result['peak_rss_gb']:12.2f} {result['imports_gb']:14.2f}  "
            f"{result['counts']}"
        )


# ---------------------------------------------------------------- HNSW with removed ids


def hnsw(count: int, dim: int = 64, queries: int = 1000) -> None:
    """Recall@10 and time of searches that filter removed ids out of an HNSW graph, against exact search over the
    live vectors; and the time to build the graph anew."""
    import faiss

    rng = np.random.default_rng(0)  # the numbers of tests/conftest.py's clustered_vectors(count, dim, 200, 0.4)
    centres = rng.standard_normal((200, dim)).astype(np.float32)
    vectors = clustered(rng, centres, count, 0.4, float64_noise=True)
    faiss.normalize_L2(vectors)
    ids = np.arange(count, dtype=np.int64)
    start = time.perf_counter()
    index = faiss.index_factory(dim, "IDMap2,HNSW32")
    faiss.downcast_index(index.index).hnsw.efConstruction = 80
    index.add_with_ids(vectors, ids)
    build = time.perf_counter() - start
    rng = np.random.default_rng(1)
    print(
        f"\nHNSW32 over {count:,} {dim}-d unit vectors (200 clusters), efSearch 64, {queries} queries; the full build "
        f"took {build:.1f}s"
    )
    print(f"{'removed':>8} {'recall@10':>10} {'ms/query':>9}")
    order = rng.permutation(count)
    for share in (0.0, 0.05, 0.1, 0.2, 0.3, 0.5):
        removed = np.sort(order[: int(share * count)])
        live = np.setdiff1d(ids, removed)
        query = vectors[rng.choice(live, queries, replace=False)]
        truth = faiss.knn(query, vectors[live], 10)[1]
        truth = live[truth]
        selector = faiss.IDSelectorNot(faiss.IDSelectorBatch(removed)) if len(removed) else None
        params = (
            faiss.SearchParametersHNSW(sel=selector, efSearch=64)
            if selector
            else faiss.SearchParametersHNSW(efSearch=64)
        )
        faiss.omp_set_num_threads(1)
        start = time.perf_counter()
        _, found = index.search(query, 10, params=params)
        ms = (time.perf_counter() - start) / queries * 1000
        recall = np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)])
        print(f"{share:8.0%} {recall:10.4f} {ms:9.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=10_000, help="images of the runs (0: skip them)")
    parser.add_argument("--model-size", default="small", choices=("small", "base"))
    parser.add_argument(
        "--kill-commits",
        default="--commit_seconds 5",
        help="commit flags of the run killed half way (default %(default)s)",
    )
    parser.add_argument(
        "--diff-rows", default="1000000,10000000", help="comma-separated table sizes for the diff ('' skips)"
    )
    parser.add_argument("--hnsw", type=int, default=200_000, help="vectors of the HNSW filter measurement (0: skip)")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print(hardware())
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        if args.images:
            runs(args.images, Path(tmp), args.model_size, args.kill_commits.split())
        if args.diff_rows:
            diffs([int(n) for n in args.diff_rows.split(",")], Path(tmp))
        if args.hnsw:
            hnsw(args.hnsw)


if __name__ == "__main__":
    main()
