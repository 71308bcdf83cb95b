"""The names of everything the jobs write under an output folder, and the package versions their records carry.

Every file or folder a job writes is listed here once, so that `--overwrite` removes exactly what an earlier run
left and nothing else.
"""

from __future__ import annotations

import importlib.metadata

# An embedding run (`vitmae embed`, then `vitmae index`, `vitmae anomalies`).
MANIFEST = "manifest.json"  # the run's record, written last: a run without it is incomplete
EMBEDDINGS_DIR = "embeddings"  # one row per embedded image
ERRORS_DIR = "errors"  # one row per image that could not be embedded
INDEX_DIR = "index"  # the FAISS index of the embeddings
INDEX_FILE = f"{INDEX_DIR}/index.faiss"
IDS_FILE = f"{INDEX_DIR}/ids.parquet"  # FAISS id -> path
INFO_FILE = f"{INDEX_DIR}/index.json"  # written last: readers trust an index only when it is there
ANOMALIES_FILE = "anomalies.parquet"  # the anomaly ranking
# What an embedding run folder may hold, the manifest first: removed in this order, no reader trusts a half-removed run.
RUN_FILES = (MANIFEST, INFO_FILE, INDEX_DIR, ANOMALIES_FILE, EMBEDDINGS_DIR, ERRORS_DIR)

# A pre-training run (`vitmae pretrain`).
CHECKPOINTS_DIR = "checkpoints"  # checkpoints/epoch-NNNN/: a Hugging Face folder, optimizer.pt, trainer_state.json
STATE_FILE = "trainer_state.json"  # written last in a checkpoint: a folder without it is no checkpoint
OPTIMIZER_FILE = "optimizer.pt"
METRICS_FILE = "metrics.parquet"  # loss and learning rate of every step
MODEL_DIR = "model"  # the final model
SUMMARY_FILE = "metrics.json"  # the run's record, written last
RECONSTRUCTIONS_FILE = "reconstructions.png"
TRAINING_FILES = (SUMMARY_FILE, MODEL_DIR, RECONSTRUCTIONS_FILE, METRICS_FILE, CHECKPOINTS_DIR)

# Distributions whose versions change a run's numbers, for the records.
_VERSIONED = ("ray", "torch", "pyarrow", "pillow", "numpy", "fsspec", "s3fs", "faiss-cpu", "vitmae-pipeline")


def checkpoint_name(epoch: int) -> str:
    """The folder of an epoch's checkpoint, relative to the pre-training output."""
    return f"{CHECKPOINTS_DIR}/epoch-{epoch:04d}"


def package_versions() -> dict[str, str | None]:
    """Installed versions of what a run's numbers depend on (None where not installed)."""
    versions: dict[str, str | None] = {}
    for name in _VERSIONED:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions
