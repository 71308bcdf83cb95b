"""The job with the idle workers a Ray it starts keeps (one a core, `pipeline.cluster.start_ray`) against Ray's
default (idle workers only for free CPUs, which the model actors take), on the mixed set of benchmarks/decode.py.

Whole processes, alternating, each on a Ray of its own (RAY_ADDRESS=local); `RAY_num_workers_soft_limit=-1` gives
Ray's default. For each run: seconds from start to exit, the embedding stage's images/s from the run record, and
the worker processes Ray started (one core-worker log each in the session's log folder).

    python -m benchmarks.idle_workers --photos 'photos/*.jpg' --workdir /tmp/decode --images 300 --rounds 3
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

from benchmarks.common import add_arguments, alternate, comparison_inputs, print_medians

SETTINGS = {"one idle worker a core": {}, "Ray's default": {"RAY_num_workers_soft_limit": "-1"}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        inputs, model = comparison_inputs(args, work)
        runs = alternate({label: (None, env) for label, env in SETTINGS.items()}, inputs, model, work, args.rounds)
    print_medians(runs, args.images, args.model)


if __name__ == "__main__":
    main()
