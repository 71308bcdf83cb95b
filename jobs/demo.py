"""`vitmae demo` (`make demo`): the offline demo: pre-train a small MAE on digit scans, embed, index, search and
triage a gallery."""

from __future__ import annotations

import sys

from jobs.command import Command, main
from pipeline import schema
from pipeline.demo import DemoConfig, label_of, run


def demo(config: DemoConfig) -> None:
    """Runs the demo and prints what it measured and where the pictures are."""
    report = run(config)
    before, after = report.before, report.after
    print(
        f"\npre-training: {len(report.loss_per_epoch)} epochs in {report.train_seconds:.0f}s, loss per epoch "
        + " ".join(f"{loss:.3f}" for loss in report.loss_per_epoch)
    )
    print("held-out digits            random init   pre-trained")
    print(f"  reconstruction loss      {before.loss:11.4f}   {after.loss:11.4f}")
    print(f"  precision@{after.k} of labels   {before.precision_at_k:11.3f}   {after.precision_at_k:11.3f}")
    print(f"\nnearest of {report.query} (label {label_of(report.query)}):")
    for hit in report.hits:
        print(f"  #{hit.rank:<2} {hit.score:.4f}  label {label_of(hit.path):5}  {hit.path}")
    print(
        f"\ntop anomalies (by kNN distance, as auto ranks them); {report.planted_in_top} "
        f"of the top {len(report.anomalies) // 2} are the planted photographs:"
    )
    for row in report.anomalies:
        print(
            f"  #{row[schema.RANK]:<2} loss {row[schema.LOSS]:.4f}  knn {row[schema.KNN_DISTANCE]:.4f}  "
            f"{row[schema.PATH]}"
        )
    print("\npictures: " + ", ".join(f"{name} {path}" for name, path in report.pngs.items()))


COMMAND = Command("demo", DemoConfig, demo, __doc__)

if __name__ == "__main__":
    sys.exit(main(COMMAND))
