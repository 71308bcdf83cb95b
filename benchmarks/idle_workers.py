"""The job with the idle workers a Ray it starts keeps (one a core, `pipeline.cluster.start_ray`) against Ray's
default (idle workers only for free CPUs, which the model actors take), on the mixed set of benchmarks/decode.py.

Whole processes, alternating, each on a Ray of its own (RAY_ADDRESS=local); `RAY_num_workers_soft_limit=-1` gives
Ray's default. For each run: seconds from start to exit, the embedding stage's images/s from the run record, and
the worker processes Ray started (one core-worker log each in the session's log folder).

    python benchmarks/idle_workers.py --photos 'photos/*.jpg' --workdir /tmp/decode --images 300 --rounds 3
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
from pathlib import Path

from decode import E2E_MODELS, e2e_checkpoint, e2e_inputs, make_set, timed_process
from pipeline.records import latest_run
from pipeline.storage import Storage
from pipeline_throughput import hardware, load_average

logger = logging.getLogger("idle_workers")

SETTINGS = {"one idle worker a core": {}, "Ray's default": {"RAY_num_workers_soft_limit": "-1"}}


def workers_started() -> int:
    """Worker processes the last Ray session on this machine started (each writes its own core-worker log)."""
    return len(list(Path("/tmp/ray/session_latest/logs").glob("python-core-worker-*.log")))


def alternate(setups: dict[str, tuple[str | None, dict[str, str]]], inputs: Path, model: str, work: Path,
              rounds: int) -> dict[str, list[tuple[float, float, int]]]:
    """The job on `inputs` once a round in each setup (label -> (folder to run it in, None: this one; environment
    added)), alternating which goes first: (seconds, stage images/s, worker processes started) by setup."""
    runs: dict[str, list[tuple[float, float, int]]] = {label: [] for label in setups}
    for r in range(rounds):
        for label in list(setups) if r % 2 == 0 else list(setups)[::-1]:
            output = work / f"out-{r}-{label.split()[0]}"
            command = [sys.executable, "-m", "jobs.embed", "--input", str(inputs), "--model", model, "--output", str(output)]
            cwd, env = setups[label]
            seconds = timed_process(command, work / f"{output.name}.log", env, cwd)
            stage = latest_run(str(output), Storage())["images_per_second"]
            runs[label].append((seconds, stage, workers_started()))
            logger.info("%s, round %d: %.1fs, stage %.2f images/s, %d workers started (load %s)", label, r + 1,
                        seconds, stage, runs[label][-1][2], load_average())
    return runs


def print_medians(runs: dict[str, list[tuple[float, float, int]]], images: int, model: str) -> None:
    rounds = min(len(values) for values in runs.values())
    print(f"\n{hardware()}; load {load_average()}; {images} images, {model} encoder, medians of {rounds}")
    for label, values in runs.items():
        seconds, stage, workers = (statistics.median(v[i] for v in values) for i in range(3))
        print(f"{label:34} {seconds:6.1f} s  stage {stage:5.2f} images/s  {workers:3.0f} worker processes  "
              f"(per round: {', '.join(f'{v[0]:.1f} s' for v in values)})")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The set, the model and the rounds, as every whole-job comparison takes them."""
    parser.add_argument("--photos", action="append", default=[], help="glob of photographs (repeatable); default: scikit-image's")
    parser.add_argument("--images", type=int, default=300, help="files of the mixed set to embed")
    parser.add_argument("--model", choices=sorted(E2E_MODELS), default="vit-s", help="encoder geometry")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    parser.add_argument("--workdir", default=None, help="where the set is made (kept for the next run)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        files = make_set(args.photos, Path(args.workdir or tmp) / "set", None)
        inputs = e2e_inputs(files, work / "inputs", args.images)
        model = e2e_checkpoint(work / "model", args.model)
        runs = alternate({label: (None, env) for label, env in SETTINGS.items()}, inputs, model, work, args.rounds)
    print_medians(runs, args.images, args.model)


if __name__ == "__main__":
    main()
