"""`python -m jobs.serve`: serve a run's search, anomalies and near duplicates over HTTP, with a web page."""

from __future__ import annotations

import argparse
import os
import sys

from jobs.errors import run_cli
from pipeline.service.app import serve
from pipeline.service.config import ServeConfig

TOKEN_VARIABLE = "VITMAE_SERVE_TOKEN"  # the token, kept out of the process list


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, help="the embedding job's --output folder (with its index), local or s3://")
    parser.add_argument("--host", default=ServeConfig.host, help="address to bind (default %(default)s: this machine only)")
    parser.add_argument("--port", type=int, default=ServeConfig.port, help="port (default %(default)s)")
    parser.add_argument("--token", default=None, help="require `Authorization: Bearer TOKEN` on every /api request "
                        f"and /metrics (also ${TOKEN_VARIABLE})")
    parser.add_argument("--max-upload-mb", type=float, default=ServeConfig.max_upload_mb,
                        help="largest query image accepted, in MB (default %(default)s)")
    parser.add_argument("--check-seconds", type=float, default=ServeConfig.check_seconds,
                        help="how often to check the run for a new version (default %(default)s)")
    parser.add_argument("--no-model", action="store_true", help="do not load the model: no search by image, less memory")
    parser.add_argument("--no-access-log", action="store_true", help="do not log a line per request")
    parser.add_argument("--s3-endpoint", default=None, help="S3 endpoint URL (default: $AWS_ENDPOINT_URL)")


def main_with_args(args: argparse.Namespace) -> None:
    serve(ServeConfig(
        run=args.run, host=args.host, port=args.port, token=args.token or os.environ.get(TOKEN_VARIABLE) or None,
        max_upload_mb=args.max_upload_mb, check_seconds=args.check_seconds, load_model=not args.no_model,
        access_log=not args.no_access_log, s3_endpoint=args.s3_endpoint,
    ))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vitmae serve", description=__doc__)
    add_arguments(parser)
    return run_cli(parser, main_with_args, argv)


if __name__ == "__main__":
    sys.exit(main())
