"""`vitmae reconstruct`: draw an MAE model's reconstructions of a few images (original, masked, predicted) as
one PNG."""

from __future__ import annotations

import sys

from jobs.command import Command, main
from pipeline.train.reconstruct import ReconstructConfig, save_reconstructions


def reconstruct(config: ReconstructConfig) -> None:
    save_reconstructions(config)
    print(f"wrote the reconstructions of {len(config.images)} images to {config.png}")


COMMAND = Command("reconstruct", ReconstructConfig, reconstruct, __doc__)

if __name__ == "__main__":
    sys.exit(main(COMMAND))
