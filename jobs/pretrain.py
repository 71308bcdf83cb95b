"""`vitmae pretrain`: pre-train a ViTMAE (preset) or adapt one (init) on the images under input, with Ray Train."""

from __future__ import annotations

import sys

from jobs.command import Command, main
from pipeline.layout import MODEL_DIR, output_uri
from pipeline.train.pretrain import PretrainConfig, run


def pretrain(config: PretrainConfig) -> None:
    """Trains, and prints the loss of the first and last epochs and where the model is."""
    summary = run(config)
    losses = summary["loss_per_epoch"]
    print(
        f"trained {summary['epochs']} epochs ({summary['steps']} steps, {summary['images_per_second']:.1f} images/s): "
        f"loss {losses[0]:.4f} in the first epoch, {losses[-1]:.4f} in the last; "
        f"skipped {sum(summary['skipped_per_epoch'])} unreadable images over all epochs; "
        f"model in {output_uri(config.output, MODEL_DIR)}"
    )


COMMAND = Command("pretrain", PretrainConfig, pretrain, __doc__)

if __name__ == "__main__":
    sys.exit(main(COMMAND))
