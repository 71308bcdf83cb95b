"""`vitmae embed` (`python -m jobs.embed`): bring the Delta tables under output up to date with the images under
input: embed what is new or changed, remove what is gone, keep the index current."""

from __future__ import annotations

import sys

from jobs.command import Command, main
from pipeline.embed.run import EmbedConfig, run


def embed(config: EmbedConfig) -> None:
    """Runs, and prints what the run found and did."""
    print(summary(run(config)))


def summary(record: dict) -> str:
    """What a run found and did, in two lines."""
    counts = record["counts"]
    found = (
        f"listed {counts['listed']}: {counts['new']} new, {counts['changed']} changed, "
        f"{counts['unchanged']} unchanged, "
        f"{counts['removed']} gone, {counts['failed_before']} failed before ({counts['retried']} retried)"
    )
    versions = record["versions"]
    speed = f", {record['images_per_second']:.1f} images/s" if record.get("images_per_second") else ""
    did = (
        f"embedded {counts.get('embedded', 0)}, failed {counts.get('failed', 0)} in {record['seconds']:.1f}s{speed}; "
        f"committed embeddings version {versions['embeddings']} "
        f"and errors version {versions['errors']} of {record['output']}"
    )
    return f"{found}\n{did}"


COMMAND = Command("embed", EmbedConfig, embed, __doc__)

if __name__ == "__main__":
    sys.exit(main(COMMAND))
