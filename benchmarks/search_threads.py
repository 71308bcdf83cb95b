"""Why a few queries search on one OpenMP thread: one query against a flat index, with torch loaded (a second OpenMP
runtime in the process, as in every command that embeds), on FAISS's default threads and on one.

    python -m benchmarks.search_threads [--vectors 20000] [--dim 768] [--repeats 200]
"""

from __future__ import annotations

import argparse
import statistics
import time

import faiss
import numpy as np
import torch

from benchmarks.common import hardware


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vectors", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    torch.ones(64, 64) @ torch.ones(64, 64)  # torch's OpenMP team exists, as in the jobs
    rng = np.random.default_rng(0)
    index = faiss.IndexFlatL2(args.dim)
    index.add(rng.standard_normal((args.vectors, args.dim), dtype=np.float32))
    query = rng.standard_normal((1, args.dim), dtype=np.float32)
    default = faiss.omp_get_max_threads()
    print(
        f"{args.vectors:,} x {args.dim}-d flat index, one query, median of {args.repeats}; "
        f"{hardware(('torch', 'faiss'))}"
    )
    for threads in (default, 1):
        faiss.omp_set_num_threads(threads)
        seconds = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            index.search(query, 10)
            seconds.append(time.perf_counter() - start)
            time.sleep(0.002)  # let the OpenMP team go idle, as between a service's requests
        print(f"{threads} OpenMP thread(s): {statistics.median(seconds) * 1000:.2f} ms a query")


if __name__ == "__main__":
    main()
