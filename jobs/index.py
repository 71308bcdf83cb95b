"""`python -m jobs.index`: bring the FAISS index of a run (--run) up to its embeddings table, under RUN/index/."""

from __future__ import annotations

import argparse
import sys

from jobs.errors import run_cli
from pipeline.retrieval.index import INDEX_TYPES, IndexConfig, build_index
from pipeline.retrieval.index_update import update_index
from pipeline.retrieval.vectors import METRICS
from pipeline.storage import Storage


def add_index_arguments(parser: argparse.ArgumentParser) -> None:
    """The index flags, shared with the embedding job."""
    parser.add_argument("--index-type", choices=INDEX_TYPES, default="auto", help="auto picks by count and --memory-budget: flat, hnsw, ivfsq8 or ivfpq")
    parser.add_argument("--metric", choices=METRICS, default="cosine", help="cosine (unit-length copies in the index; Parquet keeps the raw vectors) or l2")
    parser.add_argument("--memory-budget", type=float, default=IndexConfig.memory_budget_gb, help="GB the index may take (default %(default)s)")
    parser.add_argument("--recall-target", type=float, default=IndexConfig.recall_target, help="nprobe/efSearch grow until recall@10 on held-out queries reaches this")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, help="run folder written by the embedding job, local or s3://")
    add_index_arguments(parser)
    parser.add_argument("--rebuild", action="store_true", help="build it anew even where it could be updated")
    parser.add_argument("--s3-endpoint", default=None, help="S3 endpoint URL (default: $AWS_ENDPOINT_URL)")


def index_config(args: argparse.Namespace) -> IndexConfig:
    """The index flags (shared with the embedding job) as a config."""
    return IndexConfig(index_type=args.index_type, metric=args.metric, memory_budget_gb=args.memory_budget,
                       recall_target=args.recall_target)


def main_with_args(args: argparse.Namespace) -> None:
    storage = Storage.from_environment(args.s3_endpoint)
    info = (build_index if args.rebuild else update_index)(args.run, index_config(args), storage)
    recall = info["recall"]
    update = info["updates"][-1] if info.get("updates") else None
    if update and update["table_version"] == info["table_version"]:
        print(f"updated the {info['index_type']} index: {update['added']} added, {update['removed']} removed")
    print(
        f"{info['index_type']} index ({info['factory']}, {info['metric']}) of {info['count']} x {info['dimension']}-d "
        f"vectors at table version {info['table_version']} (built in {info['build_seconds']:.1f}s); recall@{recall['k']} "
        f"{recall['value']:.3f} with {info['search_params'] or 'exact search'}; in {args.run.rstrip('/')}/index/"
    )
    print(f"why: {info['reason']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vitmae index", description=__doc__)
    add_arguments(parser)
    return run_cli(parser, main_with_args, argv)


if __name__ == "__main__":
    sys.exit(main())
