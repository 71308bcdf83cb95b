"""The CPU stage on listed files: a file gone since the listing, and decoding on threads."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline import schema
from pipeline.embed.listing import list_inputs
from pipeline.embed.preprocess import PreprocessConfig, preprocess_batch
from pipeline.storage import Storage
from vitmae.processor import MAE_PROCESSOR


def test_an_object_deleted_after_listing_becomes_an_error_row(two_photos):
    listing = list_inputs(str(two_photos), ("png",), Storage())
    (two_photos / Path(listing.column(schema.PATH)[0].as_py()).name).unlink()
    batch = {name: listing.column(name).to_numpy(zero_copy_only=False) for name in listing.column_names}
    out = preprocess_batch(batch, PreprocessConfig(processor=MAE_PROCESSOR))
    assert out[schema.ERROR].tolist() == ["object not found (deleted or moved after listing)", ""]
    assert out[schema.PIXELS][1].any() and not out[schema.PIXELS][0].any()


def test_decoding_on_threads_gives_the_same_rows(images):
    listing = list_inputs(str(images), ("jpg", "png", "gif"), Storage())
    batch = {name: listing.column(name).to_numpy(zero_copy_only=False) for name in listing.column_names}
    one, two = (preprocess_batch(batch, PreprocessConfig(processor=MAE_PROCESSOR, threads=t)) for t in (1, 2))
    assert one[schema.ERROR].tolist() == two[schema.ERROR].tolist() and any(one[schema.ERROR])
    assert np.array_equal(one[schema.PIXELS], two[schema.PIXELS]) and np.array_equal(
        one[schema.WIDTH], two[schema.WIDTH]
    )
