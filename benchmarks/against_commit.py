"""The job as checked out here against the job at another commit, on the mixed set of benchmarks/decode.py.

Whole processes, alternating, each on a Ray of its own (RAY_ADDRESS=local), the other commit's code run from a
temporary `git worktree` with this checkout's Python environment. For each run: seconds from start to exit, the
embedding stage's images/s from the run record, and the worker processes Ray started.

    python benchmarks/against_commit.py fb9df30 --photos 'photos/*.jpg' --workdir /tmp/decode --images 300 --rounds 3
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import tempfile
from pathlib import Path

from decode import e2e_checkpoint, e2e_inputs, make_set
from idle_workers import add_arguments, alternate, print_medians

ROOT = Path(__file__).resolve().parent.parent


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("commit", help="the commit to compare with")
    add_arguments(parser)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    here = git("rev-parse", "--short", "HEAD") + ("+changes" if git("status", "--porcelain", "--untracked-files=no") else "")
    other = git("rev-parse", "--short", args.commit)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        git("worktree", "add", "--detach", str(work / "other"), other)
        try:
            setups = {f"this checkout ({here})": (str(ROOT), {}), f"commit {other}": (str(work / "other"), {})}
            files = make_set(args.photos, Path(args.workdir or tmp) / "set", None)
            inputs = e2e_inputs(files, work / "inputs", args.images)
            runs = alternate(setups, inputs, e2e_checkpoint(work / "model", args.model), work, args.rounds)
        finally:
            git("worktree", "remove", "--force", str(work / "other"))
    print_medians(runs, args.images, args.model)


if __name__ == "__main__":
    main()
