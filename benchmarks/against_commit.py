"""The job as checked out here against the job at another commit, on the mixed set of benchmarks/decode.py.

Whole processes, alternating, each on a Ray of its own (RAY_ADDRESS=local), the other commit's code run from a
temporary `git worktree` with this checkout's Python environment. For each run: seconds from start to exit, the
embedding stage's images/s from the run record, and the worker processes Ray started.

    python -m benchmarks.against_commit fb9df30 --photos 'photos/*.jpg' --workdir /tmp/decode --images 300 --rounds 3
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

from benchmarks.common import (
    ROOT,
    add_arguments,
    alternate,
    comparison_inputs,
    git,
    print_medians,
    this_checkout,
    worktree,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("commit", help="the commit to compare with")
    add_arguments(parser)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    here, other = this_checkout(), git("rev-parse", "--short", args.commit)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        with worktree(other, work / "other") as folder:
            setups = {f"this checkout ({here})": (str(ROOT), {}), f"commit {other}": (str(folder), {})}
            inputs, model = comparison_inputs(args, work)
            runs = alternate(setups, inputs, model, work, args.rounds)
    print_medians(runs, args.images, args.model)


if __name__ == "__main__":
    main()
