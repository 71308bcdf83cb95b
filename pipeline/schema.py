"""Column names and Arrow schemas shared by every stage and by readers of the outputs."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

# Listing and row identity.
ID = "id"  # int64 id of the row in the embeddings table: unique, never reused; the FAISS id
PATH = "path"  # the input URI as listed, with scheme (s3://bucket/key, file:///abs/path)
SIZE = "size_bytes"  # object size at listing time
MTIME = "mtime"  # last-modified time at listing, seconds since the epoch (null when unknown)
ETAG = "etag"  # object-store ETag at listing ("" between stages, null in outputs, on local disks)
RUN = "run_id"  # the run that wrote the row

# Decoding.
PIXELS = "pixels"  # uint8 [H, W, 3] resized image (between stages only, never written)
WIDTH = "width"  # original image width in pixels
HEIGHT = "height"  # original image height in pixels
ERROR = "error"  # readable reason an input could not be embedded; "" between stages when it was
RETRYABLE = "retryable"  # bool: the error was the store being unreachable, so the next run tries again

# Model outputs.
EMBEDDING = "embedding"  # float32 [D] pooled encoder output, not normalised
LOSS = "loss"  # float32 masked-reconstruction loss averaged over the masks; null at mask ratio 0
NODE = "node"  # the Ray node whose model actor embedded the row (between stages only, never written)

# What identifies an object's content: its ETag where the store gives one, else its size and modification time.
IDENTITY = (SIZE, MTIME, ETAG)

LISTING_SCHEMA = pa.schema([(PATH, pa.string()), (SIZE, pa.int64()), (MTIME, pa.float64()), (ETAG, pa.string())])
# The listing rows a run embeds, with the id each gets if it is embedded.
WORK_SCHEMA = pa.schema([(ID, pa.int64()), *LISTING_SCHEMA])
_META = [(SIZE, pa.int64()), (MTIME, pa.float64()), (ETAG, pa.string()), (RUN, pa.string())]
EMBEDDINGS_SCHEMA = pa.schema(
    [(ID, pa.int64()), (PATH, pa.string()), (EMBEDDING, pa.list_(pa.float32())), (LOSS, pa.float32()),
     (WIDTH, pa.int32()), (HEIGHT, pa.int32()), *_META]
)
ERRORS_SCHEMA = pa.schema([(PATH, pa.string()), (ERROR, pa.string()), (RETRYABLE, pa.bool_()), *_META])


# Between stages, missing strings are "" rather than null: Ray types an all-null batch column as
# float, and batches of differing types cannot be concatenated.


def failed_rows(errors: np.ndarray) -> np.ndarray:
    """bool [N]: the rows whose `error` holds a reason."""
    return np.array([bool(e) for e in errors], dtype=bool)
