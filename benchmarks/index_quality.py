"""Index quality: recall@10, build time, query latency and size of the `auto` index at a memory budget, beside flat.

    python -m benchmarks.index_quality --count 1000000 --dim 768 --memory-budget 1

Writes `--count` clustered synthetic vectors as Parquet shards laid out like a run's `embeddings/` (so the real
streaming builder reads them), builds the index `auto` picks at `--memory-budget` and a flat one, each in a fresh
process (build time and peak RSS), and measures both on `--queries` held-out vectors from the same distribution:
recall@10 against exact search, p50/p99 latency of single queries and of one batch of all queries, file size.

The data: `--clusters` centres drawn from N(0, I), each vector a centre plus isotropic N(0, noise² I), float32.
Isotropic noise is the hard case for quantisation: within a cluster the distances crowd together (real embeddings,
whose spectrum decays, are easier). Not a test: it takes minutes and gigabytes.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import os
import shutil
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
from deltalake import write_deltalake

from benchmarks.common import INDEX_PACKAGES, clustered, hardware, status_kb
from pipeline import schema
from pipeline.retrieval.exact import ExactTopK
from pipeline.retrieval.index import IndexConfig, build_index
from pipeline.retrieval.index_store import load_index
from pipeline.retrieval.vectors import for_index, iter_batches, open_embeddings
from pipeline.storage import Storage


def write_run(folder: Path, args: argparse.Namespace) -> np.ndarray:
    """Writes the embeddings table folder/embeddings; returns the held-out queries, float32 [Q, D] (raw)."""
    centres = np.random.default_rng(args.seed).standard_normal((args.clusters, args.dim), dtype=np.float32)
    queries = clustered(np.random.default_rng([args.seed, 2**32 - 1]), centres, args.queries, args.noise)
    if (
        folder / "embeddings" / "_delta_log"
    ).exists():  # the table of an earlier run in --workdir (same arguments: same data)
        return queries
    for start in range(0, args.count, args.shard_rows):
        n = min(args.shard_rows, args.count - start)
        x = clustered(np.random.default_rng([args.seed, start]), centres, n, args.noise)
        offsets = pa.array(np.arange(n + 1, dtype=np.int32) * args.dim)
        table = pa.table(
            {
                schema.ID: pa.array(np.arange(start, start + n), pa.int64()),
                schema.PATH: pa.array([f"synthetic://{i:09d}" for i in range(start, start + n)]),
                schema.EMBEDDING: pa.ListArray.from_arrays(offsets, pa.array(x.ravel())),
            }
        )
        write_deltalake(str(folder / "embeddings"), table, mode="append")
    return queries


def exact_neighbours(run: Path, queries: np.ndarray, k: int) -> np.ndarray:
    """int64 [Q, k]: exact cosine neighbours of the (normalised) queries, scanning the run in batches."""
    top = ExactTopK(for_index(queries, "cosine"), k)
    for batch in iter_batches(open_embeddings(str(run), Storage()), 16_384):
        top.add(for_index(batch.vectors, "cosine"), batch.ids)
    return top.ids


def peak_rss_gb() -> float:
    """This process's peak resident memory in GB (VmHWM: unlike ru_maxrss, it does not start from the parent's)."""
    return status_kb("VmHWM") * 1024 / 1e9


def build_in_child(run: str, index_type: str, budget_gb: float) -> tuple[dict, float, float]:
    """Runs in a fresh process: (index.json, wall seconds, peak RSS in GB of that process)."""
    rss_before = peak_rss_gb()
    start = time.perf_counter()
    info = build_index(run, IndexConfig(index_type=index_type, memory_budget_gb=budget_gb), Storage())
    seconds = time.perf_counter() - start
    info["_rss_after_imports_gb"] = rss_before
    return info, seconds, peak_rss_gb()


def measure(run: Path, truth: np.ndarray, queries: np.ndarray, singles: int, repeats: int) -> dict:
    """Recall@10 and latencies of the run's saved index on the held-out queries."""
    loaded = load_index(str(run), Storage())
    x = for_index(queries, "cosine")
    k = truth.shape[1]
    _, found = loaded.search(x, k)
    recall = float(np.mean([len(np.intersect1d(a, b)) / k for a, b in zip(found, truth)]))
    single = []
    for q in x[:singles]:
        t = time.perf_counter()
        loaded.search(q[None], k)  # as Searcher does it
        single.append(time.perf_counter() - t)
    batch = []
    for _ in range(repeats):
        t = time.perf_counter()
        loaded.search(x, k)
        batch.append(time.perf_counter() - t)
    return {
        "recall": recall,
        "single_p50_ms": 1e3 * float(np.percentile(single, 50)),
        "single_p99_ms": 1e3 * float(np.percentile(single, 99)),
        "batch_p50_s": float(np.percentile(batch, 50)),
        "batch_p99_s": float(np.percentile(batch, 99)),
        "singles": len(single),
        "repeats": repeats,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1_000_000, help="indexed vectors")
    parser.add_argument("--dim", type=int, default=768, help="dimension")
    parser.add_argument("--clusters", type=int, default=1000, help="Gaussian cluster centres")
    parser.add_argument("--noise", type=float, default=0.5, help="noise standard deviation (centres have 1)")
    parser.add_argument("--queries", type=int, default=1000, help="held-out queries (not in the index)")
    parser.add_argument("--memory-budget", type=float, default=1.0, help="GB for the auto index")
    parser.add_argument("--shard-rows", type=int, default=50_000, help="rows per Parquet shard")
    parser.add_argument("--singles", type=int, default=200, help="single queries timed for the auto index")
    parser.add_argument("--flat-singles", type=int, default=50, help="single queries timed for the flat index")
    parser.add_argument("--repeats", type=int, default=5, help="timed batches of all queries")
    parser.add_argument("--skip-flat", action="store_true", help="measure the auto index only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--workdir",
        default=None,
        help="where the shards and indexes go, kept and reused (default: a temporary folder, removed)",
    )
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="index_quality_"))
    runs = {"auto": work / "auto", "flat": work / "flat"}
    print(
        f"# {hardware(INDEX_PACKAGES)}; FAISS on {faiss.omp_get_max_threads()} threads\n"
        f"# data: {args.count:,} x {args.dim}-d, {args.clusters} clusters, noise {args.noise}; "
        f"{args.queries} held-out queries; workdir {work}",
        flush=True,
    )
    try:
        t = time.perf_counter()
        queries = write_run(runs["auto"], args)
        print(f"# wrote the shards in {time.perf_counter() - t:.0f}s", flush=True)
        t = time.perf_counter()
        truth = exact_neighbours(runs["auto"], queries, 10)
        print(f"# exact neighbours of the queries (streaming scan) in {time.perf_counter() - t:.0f}s", flush=True)
        rows = []
        kinds = [("auto", args.memory_budget)] + (
            [] if args.skip_flat else [("flat", 4 * args.count * args.dim * 1.1 / 1e9 + 1)]
        )
        for kind, budget in kinds:
            if kind == "flat" and not runs["flat"].exists():
                runs["flat"].mkdir()
                os.symlink(runs["auto"] / "embeddings", runs["flat"] / "embeddings")
            context = multiprocessing.get_context("spawn")
            with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
                info, seconds, peak = pool.submit(build_in_child, str(runs[kind]), kind, budget).result()
            print(
                f"# {kind}: {info['factory']} {info['search_params']} built in {seconds:.0f}s, peak RSS {peak:.2f} GB "
                f"(after imports {info['_rss_after_imports_gb']:.2f}); {info['reason']}",
                flush=True,
            )
            found = measure(
                runs[kind], truth, queries, args.singles if kind == "auto" else args.flat_singles, args.repeats
            )
            rows.append((kind, budget, info, seconds, peak, found))
        print()
        print(
            "| index | budget | FAISS | search | recall@10 (held out) | recall@10 (index.json) | build "
            "| build peak RSS (above imports) | index file | single p50 / p99 | batch of "
            f"{args.queries} p50 / p99 |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for kind, budget, info, seconds, peak, found in rows:
            print(
                f"| {kind} ({info['index_type']}) | {budget:.3g} GB | `{info['factory']}` | "
                f"{info['search_params'] or 'exact'} | "
                f"{found['recall']:.4f} | {info['recall']['value']:.4f} | {seconds:.0f} s | "
                f"{peak:.2f} GB ({peak - info['_rss_after_imports_gb']:.2f} GB) | "
                f"{info['file_bytes'] / 1e9:.3f} GB | {found['single_p50_ms']:.2f} / {found['single_p99_ms']:.2f} ms | "
                f"{found['batch_p50_s']:.2f} / {found['batch_p99_s']:.2f} s |"
            )
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
