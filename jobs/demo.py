"""`python -m jobs.demo`: the offline demo: pre-train a small MAE on digit scans, embed, index, search and triage a gallery."""

from __future__ import annotations

import argparse
import sys

from jobs.errors import run_cli
from pipeline.demo import DemoConfig, label_of, run


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", default=DemoConfig.workdir, help="where images, checkpoints, the run and the PNGs go")
    parser.add_argument("--epochs", type=int, default=DemoConfig.epochs, help="pre-training epochs (default %(default)s)")
    parser.add_argument("--seed", type=int, default=DemoConfig.seed, help="split, model init and masks")


def main_with_args(args: argparse.Namespace) -> None:
    report = run(DemoConfig(workdir=args.workdir, epochs=args.epochs, seed=args.seed))
    before, after = report.before, report.after
    print(f"\npre-training: {len(report.loss_per_epoch)} epochs in {report.train_seconds:.0f}s, loss per epoch "
          + " ".join(f"{loss:.3f}" for loss in report.loss_per_epoch))
    print("held-out digits            random init   pre-trained")
    print(f"  reconstruction loss      {before.loss:11.4f}   {after.loss:11.4f}")
    print(f"  precision@{after.k} of labels   {before.precision_at_k:11.3f}   {after.precision_at_k:11.3f}")
    print(f"\nnearest of {report.query} (label {label_of(report.query)}):")
    for hit in report.hits:
        print(f"  #{hit.rank:<2} {hit.score:.4f}  label {label_of(hit.path):5}  {hit.path}")
    print(f"\ntop anomalies (loss and kNN rank-averaged); {report.planted_in_top} of the top {len(report.anomalies) // 2} are the planted photographs:")
    for row in report.anomalies:
        print(f"  #{row['rank']:<2} loss {row['loss']:.4f}  knn {row['knn_distance']:.4f}  {row['path']}")
    print("\npictures: " + ", ".join(f"{name} {path}" for name, path in report.pngs.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jobs.demo", description=__doc__)
    add_arguments(parser)
    return run_cli(parser, main_with_args, argv)


if __name__ == "__main__":
    sys.exit(main())
