"""`python -m jobs.anomalies`: rank a run's images by reconstruction loss, kNN distance or both; write RUN/anomalies.parquet."""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys

from jobs.errors import run_cli
from pipeline import schema
from pipeline.layout import ANOMALIES_FILE
from pipeline.render import anomaly_tiles, render, save_png
from pipeline.retrieval import anomalies
from pipeline.retrieval.anomalies import BY, AnomalyConfig, rank_anomalies
from pipeline.storage import Storage

logger = logging.getLogger("jobs.anomalies")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, help="run folder written by the embedding job, local or s3://")
    parser.add_argument("--top", type=int, default=50, help="rows to print (every image is written to anomalies.parquet)")
    parser.add_argument("--by", choices=BY, default="auto",
                        help="loss, knn (mean distance to the k nearest), both rank-averaged, or auto: both when the run has a loss, else knn")
    parser.add_argument("-k", "--k", type=int, default=AnomalyConfig.k, help="neighbours averaged for the kNN distance (default %(default)s)")
    parser.add_argument("--exact-top", type=int, default=None,
                        help=f"the top of the kNN ranking made exact by brute force (default: --top, at least {AnomalyConfig.exact_top}; 0: approximate only)")
    parser.add_argument("--json", action="store_true", help="print only a JSON array of the top rows")
    parser.add_argument("--png", default=None, help="also write a contact sheet of the top anomalies to this PNG file")
    parser.add_argument("--s3-endpoint", default=None, help="S3 endpoint URL (default: $AWS_ENDPOINT_URL)")


def main_with_args(args: argparse.Namespace) -> None:
    if args.top < 1:
        raise ValueError(f"--top must be at least 1, got {args.top}")
    if args.exact_top is not None and args.exact_top < 0:
        raise ValueError(f"--exact-top must be at least 0, got {args.exact_top}")
    exact_top = max(args.top, AnomalyConfig.exact_top) if args.exact_top is None else args.exact_top
    storage = Storage.from_environment(args.s3_endpoint)
    table = rank_anomalies(AnomalyConfig(run=args.run, by=args.by, k=args.k, exact_top=exact_top), storage)
    by = table.schema.metadata[b"anomalies.by"].decode()
    top = [{key: _clean(value) for key, value in row.items()} for row in table.slice(0, args.top).to_pylist()]
    if args.json:
        print(json.dumps(top))
    else:
        chosen = f"{by} (auto: the run {'has a' if by == 'both' else 'has no'} reconstruction loss)" if args.by == "auto" else by
        print(f"top {len(top)} of {table.num_rows} images by {chosen} (all in {args.run.rstrip('/')}/{ANOMALIES_FILE})")
        exact = int(table.schema.metadata[b"anomalies.knn_exact"])
        if table.column(anomalies.KNN_DISTANCE).null_count < table.num_rows:
            print(f"kNN distances: {exact:,} of {table.num_rows:,} exact, the kNN ranking's top "
                  f"{min(exact_top, table.num_rows):,} among them (~: from the approximate index)")
        print(f"{'rank':>4}  {'loss':>9}  {'knn dist':>10}  path")
        for row in top:
            knn = _show(row[anomalies.KNN_DISTANCE], '.5f') + ("~" if row[anomalies.KNN_EXACT] is False else " ")
            print(f"{_show(row[anomalies.RANK], 'd'):>4}  {_show(row[schema.LOSS], '.5f'):>9}  {knn:>10}  {row[schema.PATH]}")
    if args.png:
        save_png(render(anomaly_tiles(top, storage)), args.png, storage)
        logger.info("contact sheet: %s", args.png)


def _clean(value: object) -> object:
    return None if isinstance(value, float) and math.isnan(value) else value


def _show(value: object, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vitmae anomalies", description=__doc__)
    add_arguments(parser)
    return run_cli(parser, main_with_args, argv)


if __name__ == "__main__":
    sys.exit(main())
