"""`python -m jobs.history`: the runs that updated an output folder: when, with what, what they found and committed."""

from __future__ import annotations

import argparse
import json
import sys

from jobs.errors import run_cli
from pipeline.records import finished_runs, unfinished_runs
from pipeline.storage import Storage


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, help="the embedding job's --output folder, local or s3://")
    parser.add_argument("--limit", type=int, default=20, help="newest runs to show (default %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the whole records as a JSON array")
    parser.add_argument("--s3-endpoint", default=None, help="S3 endpoint URL (default: $AWS_ENDPOINT_URL)")


def main_with_args(args: argparse.Namespace) -> None:
    storage = Storage.from_environment(args.s3_endpoint)
    runs = finished_runs(args.run, storage)[: args.limit]
    unfinished = unfinished_runs(args.run, storage)
    if not runs and not unfinished:
        raise FileNotFoundError(f"{args.run} holds no run of the embedding job")
    if args.json:
        print(json.dumps({"finished": runs, "unfinished": unfinished}))
        return
    print(f"{'finished':24} {'run':24} {'listed':>8} {'new':>7} {'changed':>7} {'gone':>6} {'embedded':>8} {'failed':>6} "
          f"{'version':>7} {'seconds':>8}")
    for run in runs:
        c = run["counts"]
        print(f"{run['finished']:24} {run['run_id']:24} {c['listed']:>8} {c['new']:>7} {c['changed']:>7} {c['removed']:>6} "
              f"{c.get('embedded', 0):>8} {c.get('failed', 0):>6} {run['versions']['embeddings']:>7} {run['seconds']:>8.1f}")
    for run in unfinished:
        print(f"unfinished run {run['run_id']}: {run['commits']} commits, {run['rows']} rows committed, last at version "
              f"{run['last_version']} (killed, or still running; the next run goes on from what it committed)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vitmae history", description=__doc__)
    add_arguments(parser)
    return run_cli(parser, main_with_args, argv)


if __name__ == "__main__":
    sys.exit(main())
