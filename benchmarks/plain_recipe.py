"""The plain Ray Data + transformers recipe (`run_plain` of benchmarks/pipeline_throughput.py) as one whole process,
for benchmarks/decode.py to time from start to exit against `python -m jobs.embed`.

    python benchmarks/plain_recipe.py --input photos/ --model checkpoint/ --output out/
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import transformers

from pipeline_throughput import run_plain, stop_ray


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, help="a folder of images")
    parser.add_argument("--model", required=True, help="an MAE checkpoint folder")
    parser.add_argument("--output", required=True, help="where the Parquet files go")
    parser.add_argument("--batch-size", type=int, default=32, help="images per model call")
    args = parser.parse_args()
    os.environ.update(RAY_DATA_LOG_LEVEL="WARNING", TRANSFORMERS_VERBOSITY="error", HF_HUB_DISABLE_PROGRESS_BARS="1")
    logging.basicConfig(level=logging.WARNING)
    transformers.logging.set_verbosity_error()
    run = run_plain(Path(args.input), args.model, Path(args.output), args.batch_size)
    stop_ray()
    print(f"{run.images} images in {run.seconds:.1f}s after Ray's start-up")


if __name__ == "__main__":
    main()
