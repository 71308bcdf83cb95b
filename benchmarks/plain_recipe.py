"""The plain Ray Data + transformers recipe (`benchmarks.common.run_plain`) as one whole process, for
benchmarks/decode.py to time from start to exit against `python -m jobs.embed`.

    python -m benchmarks.plain_recipe --input photos/ --model checkpoint/ --output out/
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from benchmarks.common import quiet_logs, run_plain, stop_ray


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, help="a folder of images")
    parser.add_argument("--model", required=True, help="an MAE checkpoint folder")
    parser.add_argument("--output", required=True, help="where the Parquet files go")
    parser.add_argument("--batch-size", type=int, default=32, help="images per model call")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    quiet_logs()
    run = run_plain(Path(args.input), args.model, Path(args.output), args.batch_size)
    stop_ray()
    print(f"{run.images} images in {run.seconds:.1f}s after Ray's start-up")


if __name__ == "__main__":
    main()
