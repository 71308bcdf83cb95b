"""Leaks between runs: what `vitmae duplicates --run TEST --against TRAIN` costs at TRAIN's size.

    python -m benchmarks.leaks --train 1000000 --test 200000 --dim 768

Writes two runs' `embeddings/` tables of synthetic vectors from the same clusters (as a test set drawn from the
training set's distribution), builds TRAIN's index as `auto` does at the default budget (HNSW below 2M vectors while
vectors and graph fit 4 GB: 1M x 768-d takes 3.35 GB), then times `find_leaks` (the range search of TRAIN's index by
every TEST vector, the float64 check of every candidate pair, the grouping and the write) and counts the planted leaks
it lists.

The data (benchmarks.neighbourhoods' recipe): `--clusters` centres from N(0, I), each vector a centre plus
N(0, noise² I); with noise 0.5 two vectors of a cluster are at a cosine of about 0.8, so no natural pair reaches 0.95.
Planted: `--leaks` TEST rows replaced by copies of random TRAIN rows at a cosine drawn from [0.96, 0.995].
Not a test: it takes minutes to hours (the HNSW build dominates).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import INDEX_PACKAGES, clustered, hardware, load_average
from benchmarks.neighbourhoods import at_cosine, write_run


def make_runs(work: Path, args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    """Writes work/train and work/test; returns (TEST rows planted, the TRAIN row each copies), int64 [leaks] each."""
    rng = np.random.default_rng(args.seed)
    centres = rng.standard_normal((args.clusters, args.dim), dtype=np.float32)
    train = clustered(rng, centres, args.train, args.noise)
    test = clustered(rng, centres, args.test, args.noise)
    planted, sources = rng.choice(args.test, args.leaks, replace=False), rng.choice(args.train, args.leaks)
    for row, source in zip(planted, sources):
        test[row] = at_cosine(rng, train[source].astype(np.float64), rng.uniform(0.96, 0.995))
    write_run(work / "train", train, args.shard_rows)
    write_run(work / "test", test, args.shard_rows)
    return planted, sources


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=1_000_000, help="TRAIN vectors (indexed)")
    parser.add_argument("--test", type=int, default=200_000, help="TEST vectors (searched)")
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--clusters", type=int, default=200)
    parser.add_argument("--noise", type=float, default=0.5)
    parser.add_argument("--leaks", type=int, default=1000, help="TEST rows planted as copies of TRAIN rows")
    parser.add_argument("--threshold", type=float, default=0.95)
    parser.add_argument("--shard-rows", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None, help="kept (default: a temporary folder, removed)")
    args = parser.parse_args()

    import faiss

    from pipeline import schema
    from pipeline.retrieval.duplicates import DuplicateConfig
    from pipeline.retrieval.index import IndexConfig, build_index
    from pipeline.retrieval.leaks import find_leaks

    work = Path(args.workdir or tempfile.mkdtemp(prefix="leaks_"))
    print(
        f"# {hardware(INDEX_PACKAGES)}; FAISS on {faiss.omp_get_max_threads()} threads; load {load_average()}\n"
        f"# TRAIN {args.train:,} x {args.dim}-d, TEST {args.test:,}, {args.clusters} clusters, noise {args.noise}, "
        f"{args.leaks} planted leaks, threshold {args.threshold}",
        flush=True,
    )
    try:
        start = time.perf_counter()
        planted, sources = make_runs(work, args)
        print(f"# wrote both tables in {time.perf_counter() - start:.0f}s", flush=True)
        start = time.perf_counter()
        info = build_index(str(work / "train"), IndexConfig())
        built = time.perf_counter() - start
        print(f"# TRAIN's index: {info['factory']} {info['search_params']} in {built:.0f}s", flush=True)
        start = time.perf_counter()
        table = find_leaks(DuplicateConfig(str(work / "test"), threshold=args.threshold, against=str(work / "train")))
        searched = time.perf_counter() - start
        rows = table.to_pydict()
        ours = np.array(rows[schema.SOURCE_RUN]) == str(work / "test")
        leaked = dict(zip(np.array(rows[schema.ID])[ours], np.array(rows[schema.REPRESENTATIVE])[ours]))
        found = sum(
            row in leaked and leaked[row] == f"synthetic://{source:09d}" for row, source in zip(planted, sources)
        )
        meta = table.schema.metadata
        print(f"# load after: {load_average()}\n")
        print(
            "| TRAIN (index) | TEST | dim | TRAIN's index build | find_leaks | per TEST vector | candidate pairs "
            "| TEST images listed | planted leaks listed with their source |"
        )
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        print(
            f"| {args.train:,} ({info['factory']}, {info['search_params']}) | {args.test:,} | {args.dim} | "
            f"{built:.0f} s | **{searched:.1f} s** | {1e6 * searched / args.test:.0f} µs | "
            f"{int(meta[schema.DUPLICATES_CANDIDATE_PAIRS]):,} | {int(ours.sum()):,} | {found:,} of {args.leaks:,} |"
        )
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
