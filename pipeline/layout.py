"""The names of everything the jobs write under an output folder, and the package versions their records carry.

Every file or folder a job writes is listed here once, so that `--overwrite` removes exactly what an earlier run
left and nothing else.
"""

from __future__ import annotations

import importlib.metadata

# The output of the embedding job (`vitmae embed`, then `vitmae index`, `vitmae anomalies`, `vitmae duplicates`),
# updated by every run.
EMBEDDINGS_DIR = "embeddings"  # Delta table: one row per embedded image
ERRORS_DIR = "errors"  # Delta table: one row per image that could not be embedded
RUNS_DIR = "runs"  # Delta table: one row per finished run, its record
INDEX_DIR = "index"  # the FAISS index of the embeddings
INDEX_FILE = f"{INDEX_DIR}/index.faiss"
IDS_FILE = f"{INDEX_DIR}/ids.parquet"  # FAISS id (the table's id) -> path, of every vector in the index
REMOVED_FILE = f"{INDEX_DIR}/removed.parquet"  # ids still in an HNSW graph whose rows are gone; filtered out
INFO_FILE = f"{INDEX_DIR}/index.json"  # written last: readers trust an index only when it is there
ANOMALIES_FILE = "anomalies.parquet"  # the anomaly ranking
DUPLICATES_FILE = "duplicates.parquet"  # the groups of near-duplicate images
LEAKS_FILE = "leaks.parquet"  # the images that near-duplicate another run's (duplicates --against), by its image
WORK_DIR = "_work"  # a run's list of images to embed, for every node to read; deleted when the run ends
# What an output folder may hold, derived outputs first: removed in this order, so no reader trusts a half-removed run.
RUN_FILES = (
    INFO_FILE,
    INDEX_DIR,
    ANOMALIES_FILE,
    DUPLICATES_FILE,
    LEAKS_FILE,
    RUNS_DIR,
    EMBEDDINGS_DIR,
    ERRORS_DIR,
    WORK_DIR,
)

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


def output_uri(output: str, name: str) -> str:
    """The URI of `name` (one of the names above, or a path below one) under the output folder `output`."""
    return f"{output.rstrip('/')}/{name}"


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
