"""A night with nothing new: the job on an up-to-date output, as checked out here against another commit.

What a scheduled run pays when nothing changed: imports, the settings' parsing, the listing, the diff against the
tables, and the record; no Ray and no torch. Each version first embeds the same files into an output of its own;
then both run again on it, as whole processes, alternating. For each: seconds from start to exit and the driver's
peak memory (from wait4; a child's peak counts its parent's memory at the fork, so this process imports no torch
and builds the checkpoint in a process of its own).

    python -m benchmarks.nothing_new 467039a --files 20 --rounds 5
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import (
    ROOT,
    git,
    hardware,
    job_command,
    load_average,
    photo_folder,
    this_checkout,
    timed_process,
    worktree,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("commit", help="the commit to compare with")
    parser.add_argument("--files", type=int, default=20, help="images in the up-to-date output")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds of the two versions")
    args = parser.parse_args()
    here, other = this_checkout(), git("rev-parse", "--short", args.commit)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        with worktree(other, work / "other") as folder:
            images = work / "images"
            images.mkdir()
            photos = sorted(photo_folder().glob("*.png"))
            for i in range(args.files):
                shutil.copy(photos[i % len(photos)], images / f"{i:03d}.png")
            model = str(work / "model")
            build = (
                "from benchmarks.common import E2E_MODELS, save_checkpoint; "
                f"save_checkpoint({model!r}, E2E_MODELS['vit-s'], True)"
            )
            subprocess.run([sys.executable, "-c", build], cwd=ROOT, check=True)
            versions = {f"this checkout ({here})": str(ROOT), f"commit {other}": str(folder)}
            commands = {label: job_command(images, model, work / f"out-{i}") for i, label in enumerate(versions)}

            def timed(label: str, name: str) -> tuple[float, float]:
                cwd = versions[label]
                return timed_process(commands[label], work / f"{name}.log", {"PYTHONPATH": cwd}, cwd)

            for label in versions:
                timed(label, f"first-{label.split()[0]}")  # the first run embeds everything
            runs: dict[str, list[tuple[float, float]]] = {label: [] for label in versions}
            for r in range(args.rounds):
                for label in list(versions) if r % 2 == 0 else list(versions)[::-1]:
                    runs[label].append(timed(label, f"{r}-{label.split()[0]}"))
    print(f"\n{hardware()}; load {load_average()}; {args.files} files up to date, medians of {args.rounds} rounds")
    for label, values in runs.items():
        seconds, memory = statistics.median(v[0] for v in values), statistics.median(v[1] for v in values)
        print(
            f"{label:34} {seconds:5.2f} s  {memory:5.0f} MB peak  "
            f"(per round: {', '.join(f'{v[0]:.2f}' for v in values)})"
        )


if __name__ == "__main__":
    main()
