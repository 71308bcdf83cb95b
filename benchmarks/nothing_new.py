"""A night with nothing new: the job on an up-to-date output, as checked out here against another commit.

What a scheduled run pays when nothing changed: imports, the settings' parsing, the listing, the diff against the
tables, and the record; no Ray and no torch. Each version first embeds the same files into an output of its own;
then both run again on it, as whole processes, alternating. For each: seconds from start to exit and the driver's
peak memory (from wait4; a child's peak counts its parent's memory at the fork, so this process imports no torch
and builds the checkpoint in a process of its own).

    python benchmarks/nothing_new.py 467039a --files 20 --rounds 5
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def git(*args: str) -> str:  # not against_commit's: importing it loads torch (see the module's docstring)
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip()



def timed(command: list[str], cwd: str) -> tuple[float, float]:
    """(seconds from start to exit, peak resident memory in MB) of one process; it must succeed."""
    env = {**os.environ, "RAY_ADDRESS": "local", "PYTHONPATH": cwd}
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(command)} failed in {cwd}: {process.stderr.read().decode()[-2000:]}")
    return seconds, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("commit", help="the commit to compare with")
    parser.add_argument("--files", type=int, default=20, help="images in the up-to-date output")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds of the two versions")
    args = parser.parse_args()
    here = git("rev-parse", "--short", "HEAD") + ("+changes" if git("status", "--porcelain", "--untracked-files=no") else "")
    other = git("rev-parse", "--short", args.commit)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        git("worktree", "add", "--detach", str(work / "other"), other)
        try:
            import skimage

            images = work / "images"
            images.mkdir()
            photos = sorted((Path(skimage.__file__).parent / "data").glob("*.png"))
            for i in range(args.files):
                shutil.copy(photos[i % len(photos)], images / f"{i:03d}.png")
            model = str(work / "model")
            subprocess.run([sys.executable, "-c", f"from decode import e2e_checkpoint; e2e_checkpoint({model!r}, 'vit-s')"],
                           cwd=Path(__file__).parent, check=True)
            versions = {f"this checkout ({here})": str(ROOT), f"commit {other}": str(work / "other")}
            commands = {label: [sys.executable, "-m", "jobs.embed", "--input", str(images), "--model", model,
                                "--output", str(work / f"out-{i}")] for i, label in enumerate(versions)}
            for label, cwd in versions.items():
                timed(commands[label], cwd)  # the first run embeds everything
            runs: dict[str, list[tuple[float, float]]] = {label: [] for label in versions}
            for r in range(args.rounds):
                for label in list(versions) if r % 2 == 0 else list(versions)[::-1]:
                    runs[label].append(timed(commands[label], versions[label]))
        finally:
            git("worktree", "remove", "--force", str(work / "other"))
    from pipeline_throughput import hardware, load_average  # imports torch: only now

    print(f"\n{hardware()}; load {load_average()}; {args.files} files up to date, medians of {args.rounds} rounds")
    for label, values in runs.items():
        seconds, memory = statistics.median(v[0] for v in values), statistics.median(v[1] for v in values)
        print(f"{label:34} {seconds:5.2f} s  {memory:5.0f} MB peak  (per round: {', '.join(f'{v[0]:.2f}' for v in values)})")


if __name__ == "__main__":
    main()
