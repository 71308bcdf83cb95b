"""Neighbourhoods: the exact kNN top of `vitmae anomalies` and the groups of `vitmae duplicates` on planted data.

    python -m benchmarks.neighbourhoods --counts 200000,1000000 --dim 64
    # brute force elsewhere
    python -m benchmarks.neighbourhoods --truth-only --counts 1000000 --dim 64 --truth truth.json

For each count, writes synthetic vectors as a run's `embeddings/` Delta table (shards of `--shard-rows`), builds the
index `auto` picks (HNSW below 2M vectors at the default budget), then times, each on the same run:

- `rank_anomalies` with `exact_top=0` (approximate kNN scores only, what the index gives) and with `--exact-top`
  (the top made exact), and counts the planted outliers in the top `--outliers` of each;
- `find_duplicates` at `--threshold`, with the share of planted pairs found and of reported pairs that are planted.

The data: `--clusters` centres drawn from N(0, I); each vector a centre plus N(0, noise² I). With the defaults
(64-d, noise 0.5) two vectors of a cluster are at a cosine of about 0.8, and the chance that two of them reach 0.95
is about 1e-10 (a chi-square tail), so no natural pair should pass the threshold at these sizes. Planted: `--outliers`
vectors in random directions (N(0, I), near no centre), and near-duplicates of inliers at a cosine drawn uniformly
from [0.96, 0.995] (before float32 rounding): `count / 400` pairs and `count / 1000` triples (two copies of one).

The exact top is checked against brute force over every vector: here with FAISS for counts up to `--verify-max`,
and from `--truth` (a JSON file written by `--truth-only`, with torch on a GPU when there is one) for the others.
Not a test: it takes minutes to an hour.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import INDEX_PACKAGES, hardware

K = 10  # neighbours of the kNN score, the command's default
SEED = 0


def make_data(
    count: int, dim: int, clusters: int, noise: float, outliers: int, seed: int = SEED
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """(float32 [count, dim] vectors, outlier rows [outliers], planted groups: rows [2] or [3], the original first).
    numpy only, so that another machine can make the same data."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim), dtype=np.float32)
    vectors = centres[rng.integers(0, clusters, count)]
    vectors += noise * rng.standard_normal((count, dim), dtype=np.float32)
    pairs, triples = count // 400, count // 1000
    rows = rng.permutation(count)
    outlier_rows, rows = np.sort(rows[:outliers]), rows[outliers:]
    vectors[outlier_rows] = rng.standard_normal((outliers, dim), dtype=np.float32)
    groups = []
    for size, how_many in ((2, pairs), (3, triples)):
        for _ in range(how_many):
            group, rows = rows[:size], rows[size:]
            base = vectors[group[0]].astype(np.float64)
            for copy in group[1:]:
                vectors[copy] = at_cosine(rng, base, rng.uniform(0.96, 0.995))
            groups.append(group)
    return vectors, outlier_rows, groups


def at_cosine(rng: np.random.Generator, vector: np.ndarray, cosine: float) -> np.ndarray:
    """A vector of `vector`'s length at `cosine` to it."""
    u = vector / np.linalg.norm(vector)
    w = rng.standard_normal(len(u))
    w -= (w @ u) * u
    w /= np.linalg.norm(w)
    return (np.linalg.norm(vector) * (cosine * u + np.sqrt(1 - cosine**2) * w)).astype(np.float32)


def checksum(vectors: np.ndarray) -> str:
    """A short fingerprint of the data, to check that two machines made the same."""
    return f"{float(vectors[:: max(1, len(vectors) // 1000)].astype(np.float64).sum()):.6f}"


def brute_force_knn(vectors: np.ndarray, k: int, block: int = 4096) -> np.ndarray:
    """Mean cosine distance of every row to its k nearest others, by brute force: torch on a GPU when there is one,
    else FAISS on the CPU. float64 [N]."""
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    try:
        import torch

        if torch.cuda.is_available():
            torch.backends.cuda.matmul.allow_tf32 = False
            data = torch.from_numpy(unit).cuda()
            out = []
            for start in range(0, len(unit), block):
                similarity = data[start : start + block] @ data.T
                own = torch.arange(start, min(start + block, len(unit)), device="cuda")
                similarity[own - start, own] = -2.0
                out.append((1 - similarity.topk(k, dim=1).values.double()).mean(dim=1).cpu().numpy())
            return np.concatenate(out)
    except ImportError:
        pass
    import faiss

    squared, ids = faiss.knn(unit, unit, k + 1)
    others = ids != np.arange(len(unit))[:, None]
    others &= np.cumsum(others, axis=1) <= k
    return (np.where(others, squared / 2.0, 0.0).sum(axis=1) / k).astype(np.float64)


def write_run(folder: Path, vectors: np.ndarray, shard_rows: int) -> None:
    """The embeddings table of a run, as the embedding job writes it (paths synthetic://NNNNNNNNN, id = row)."""
    import pyarrow as pa
    from deltalake import write_deltalake

    from pipeline import schema

    dim = vectors.shape[1]
    for start in range(0, len(vectors), shard_rows):
        part = vectors[start : start + shard_rows]
        n = len(part)
        table = pa.table(
            {
                schema.ID: pa.array(np.arange(start, start + n), pa.int64()),
                schema.PATH: pa.array([f"synthetic://{i:09d}" for i in range(start, start + n)], pa.string()),
                schema.EMBEDDING: pa.ListArray.from_arrays(
                    pa.array(np.arange(n + 1, dtype=np.int32) * dim), pa.array(part.ravel())
                ),
                schema.LOSS: pa.nulls(n, pa.float32()),
                schema.WIDTH: pa.array(np.full(n, 640), pa.int32()),
                schema.HEIGHT: pa.array(np.full(n, 480), pa.int32()),
                schema.SIZE: pa.array(np.full(n, 50_000), pa.int64()),
                schema.MTIME: pa.nulls(n, pa.float64()),
                schema.ETAG: pa.nulls(n, pa.string()),
                schema.RUN: pa.array(["bench"] * n, pa.string()),
            },
            schema=schema.EMBEDDINGS_SCHEMA,
        )
        write_deltalake(str(folder / "embeddings"), table, mode="append")


def row_of(paths: list[str]) -> np.ndarray:
    return np.array([int(p.rsplit("/", 1)[-1]) for p in paths], np.int64)


def measure(count: int, args: argparse.Namespace, truth: dict) -> dict:
    from pipeline.retrieval.anomalies import AnomalyConfig, rank_anomalies
    from pipeline.retrieval.duplicates import DuplicateConfig, find_duplicates
    from pipeline.retrieval.index import IndexConfig, build_index

    result: dict = {"count": count}
    vectors, outliers, groups = make_data(count, args.dim, args.clusters, args.noise, args.outliers)
    result["checksum"] = checksum(vectors)
    work = Path(tempfile.mkdtemp(prefix="neighbourhoods_", dir=args.workdir))
    try:
        t = time.perf_counter()
        write_run(work, vectors, args.shard_rows)
        result["write_s"] = time.perf_counter() - t
        t = time.perf_counter()
        info = build_index(str(work), IndexConfig())
        result["index"] = {
            "seconds": time.perf_counter() - t,
            "type": info["index_type"],
            "search": info["search_params"],
            "recall": info["recall"]["value"],
        }
        print(
            f"# {count:,}: wrote the table in {result['write_s']:.0f}s; {info['index_type']} {info['search_params']} "
            f"recall@10 {info['recall']['value']:.4f}, built in {result['index']['seconds']:.0f}s",
            flush=True,
        )
        planted = set(outliers.tolist())
        for name, exact_top in (("approximate", 0), ("exact", args.exact_top)):
            t = time.perf_counter()
            table = rank_anomalies(AnomalyConfig(str(work), by="knn", exact_top=exact_top))
            seconds = time.perf_counter() - t
            top = row_of(table.slice(0, args.exact_top).column("path").to_pylist())
            meta = table.schema.metadata
            result[name] = {
                "seconds": seconds,
                "outliers_in_top": len(planted & set(top[: args.outliers].tolist())),
                "scoring_s": float(meta[b"anomalies.scoring_seconds"]),
                "ranking_s": float(meta[b"anomalies.ranking_seconds"]),
                "first_outlier_rank": int(
                    np.flatnonzero(np.isin(row_of(table.column("path").to_pylist()), outliers))[0]
                )
                + 1,
                "exact_rows": int(table.schema.metadata[b"anomalies.knn_exact"]),
                "top": top.tolist(),
                "top_scores": table.slice(0, args.exact_top).column("knn_distance").to_pylist(),
            }
            print(
                f"# {count:,}: {name} kNN ranking in {seconds:.1f}s "
                f"(scores from the index {result[name]['scoring_s']:.1f}s, "
                f"then rescoring and ranking {result[name]['ranking_s']:.2f}s), "
                f"{result[name]['outliers_in_top']} of {args.outliers} "
                f"outliers in its top {args.outliers}, {result[name]['exact_rows']:,} exact rows",
                flush=True,
            )
        expected = truth.get(str(count))
        if expected is None and count <= args.verify_max:
            t = time.perf_counter()
            scores = brute_force_knn(vectors, K)
            order = np.argsort(-scores, kind="stable")[: args.exact_top]
            expected = {
                "top": order.tolist(),
                "scores": scores[order].tolist(),
                "checksum": result["checksum"],
                "seconds": time.perf_counter() - t,
                "where": "FAISS brute force on this machine",
            }
        if expected is not None:
            same_data = expected["checksum"] == result["checksum"]
            result["brute_force"] = {
                "where": expected["where"],
                "seconds": expected["seconds"],
                "same_data": same_data,
                "exact_equal": same_data and expected["top"] == result["exact"]["top"],
                "approximate_equal": same_data and expected["top"] == result["approximate"]["top"],
                "max_score_difference": float(
                    np.abs(np.array(expected["scores"]) - result["exact"]["top_scores"]).max()
                ),
            }
            print(
                f"# {count:,}: brute force ({expected['where']}): exact top {args.exact_top} equal in order: "
                f"{result['brute_force']['exact_equal']}",
                flush=True,
            )
        t = time.perf_counter()
        table = find_duplicates(DuplicateConfig(str(work), threshold=args.threshold))
        result["duplicates"] = {
            "seconds": time.perf_counter() - t,
            **duplicate_quality(table, groups, vectors, args.threshold),
        }
        print(f"# {count:,}: duplicates in {result['duplicates']['seconds']:.1f}s: {result['duplicates']}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return result


def duplicate_quality(table, groups: list[np.ndarray], vectors: np.ndarray, threshold: float) -> dict:
    """Planted (original, copy) pairs found in one group; pairs of images in a reported group that were planted
    together; and, from the data, whether every reported group is held together by pairs at or above the threshold
    (no pair below it used) and how many unplanted pairs in a group are at or above it anyway (natural
    near-duplicates)."""
    planted_group = {}
    for g, rows in enumerate(groups):
        for row in rows:
            planted_group[int(row)] = g
    reported: dict[int, list[int]] = {}
    for group, path in zip(table.column("group").to_pylist(), table.column("path").to_pylist()):
        reported.setdefault(group, []).append(int(path.rsplit("/", 1)[-1]))
    group_of = {row: g for g, rows in reported.items() for row in rows}
    planted_pairs = [(int(rows[0]), int(copy)) for rows in groups for copy in rows[1:]]
    found = sum(1 for a, b in planted_pairs if a in group_of and group_of.get(a) == group_of.get(b))
    pairs = true = natural = connected = 0
    for rows in reported.values():
        unit = vectors[rows].astype(np.float64)
        unit /= np.linalg.norm(unit, axis=1, keepdims=True)
        linked = unit @ unit.T >= threshold
        reach = np.eye(len(rows), dtype=bool)
        for _ in range(len(rows)):
            reach |= (reach.astype(np.int64) @ linked.astype(np.int64)) > 0
        connected += bool(reach[0].all())
        for i, a in enumerate(rows):
            for j in range(i + 1, len(rows)):
                pairs += 1
                together = planted_group.get(a, -1) == planted_group.get(rows[j], -2)
                true += together
                natural += (not together) and bool(linked[i, j])
    exact_groups = sum(
        1
        for rows in reported.values()
        if rows[0] in planted_group and set(rows) == set(groups[planted_group[rows[0]]].tolist())
    )
    return {
        "planted_pairs": len(planted_pairs),
        "found": found,
        "recall": found / max(1, len(planted_pairs)),
        "reported_groups": len(reported),
        "planted_groups": len(groups),
        "groups_equal_to_planted": exact_groups,
        "reported_pairs": pairs,
        "true_pairs": true,
        "precision": true / max(1, pairs),
        "unplanted_pairs_at_threshold": natural,
        "groups_held_at_threshold": connected,
        "candidate_pairs": int(table.schema.metadata[b"duplicates.candidate_pairs"]),
        "checked_pairs": int(table.schema.metadata[b"duplicates.pairs"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", default="200000,1000000", help="vectors per run, comma-separated")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--clusters", type=int, default=200)
    parser.add_argument(
        "--noise", type=float, default=0.5, help="noise standard deviation (centres have 1 per dimension)"
    )
    parser.add_argument("--outliers", type=int, default=20, help="planted outliers, and the top they should fill")
    parser.add_argument("--exact-top", type=int, default=100, help="the top of the kNN ranking made exact and checked")
    parser.add_argument("--threshold", type=float, default=0.95, help="cosine threshold of the duplicates")
    parser.add_argument("--shard-rows", type=int, default=50_000)
    parser.add_argument(
        "--verify-max", type=int, default=200_000, help="brute force here up to this count (else --truth)"
    )
    parser.add_argument("--truth", default=None, help="JSON of brute-force tops by count (from --truth-only)")
    parser.add_argument(
        "--truth-only", action="store_true", help="only compute the brute-force tops and write them to --truth"
    )
    parser.add_argument("--workdir", default=None, help="where the runs go (default: the system's temporary folder)")
    parser.add_argument("--json", default=None, help="also write every figure to this JSON file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="# %(name)s: %(message)s")
    logging.getLogger("pipeline.retrieval.anomalies").setLevel(logging.INFO)  # what the exact top cost
    counts = [int(c) for c in args.counts.split(",")]
    print(
        f"# {hardware(INDEX_PACKAGES)}\n"
        f"# data: {args.dim}-d, {args.clusters} clusters, noise {args.noise}, {args.outliers} outliers, "
        f"pairs count/400, triples count/1000; threshold {args.threshold}, exact top {args.exact_top}",
        flush=True,
    )
    if args.truth_only:
        truth = {}
        for count in counts:
            vectors = make_data(count, args.dim, args.clusters, args.noise, args.outliers)[0]
            t = time.perf_counter()
            scores = brute_force_knn(vectors, K)
            order = np.argsort(-scores, kind="stable")[: args.exact_top]
            truth[str(count)] = {
                "top": order.tolist(),
                "scores": scores[order].tolist(),
                "checksum": checksum(vectors),
                "seconds": time.perf_counter() - t,
                "where": hardware(INDEX_PACKAGES),
            }
            print(
                f"# {count:,}: brute force in {truth[str(count)]['seconds']:.1f}s, checksum {checksum(vectors)}",
                flush=True,
            )
        Path(args.truth).write_text(json.dumps(truth))
        return
    truth = json.loads(Path(args.truth).read_text()) if args.truth else {}
    results = [measure(count, args, truth) for count in counts]
    if args.json:
        Path(args.json).write_text(json.dumps(results))
    print()
    print(
        "| vectors | index (recall@10) | kNN ranking, approximate | same, top "
        f"{args.exact_top}"
        " exact (of which rescoring and ranking) | "
        "exact scores | outliers in the top "
        f"{args.outliers}"
        ": approximate / exact | exact top = brute force | duplicates | "
        "planted pairs found | reported pairs true | of the others, at the threshold | "
        "groups held together at the threshold |"
    )
    print("| ---: | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        bf = r.get("brute_force")
        equal = (
            "not checked"
            if bf is None
            else ("yes" if bf["exact_equal"] else ("no" if bf["same_data"] else "other data"))
        )
        d = r["duplicates"]
        print(
            f"| {r['count']:,} | {r['index']['type']} {r['index']['search']} ({r['index']['recall']:.3f}) | "
            f"{r['approximate']['seconds']:.1f} s | {r['exact']['seconds']:.1f} s ({r['exact']['ranking_s']:.2f} s) | "
            f"{r['exact']['exact_rows']:,} | "
            f"{r['approximate']['outliers_in_top']} / {r['exact']['outliers_in_top']} | {equal} | "
            f"{d['seconds']:.1f} s | "
            f"{d['found']:,} of {d['planted_pairs']:,} ({100 * d['recall']:.1f} %) | "
            f"{d['true_pairs']:,} of {d['reported_pairs']:,} "
            f"({100 * d['precision']:.2f} %) | {d['unplanted_pairs_at_threshold']} | "
            f"{d['groups_held_at_threshold']:,} of {d['reported_groups']:,} |"
        )


if __name__ == "__main__":
    main()
