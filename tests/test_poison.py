"""Batches that kill their model actor: each named by its ids, its attempts counted until it finishes; and in a job,
split down to the image, which becomes an error row (the kill injected by tests/fault_injection/sitecustomize.py)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from pictures import fill, photo
from runs import ROOT, own_ray_env, read_run

from pipeline.embed.poison import Attempts, batch_key


def test_a_batch_is_named_by_its_ids_and_its_attempts_counted_until_it_finishes():
    assert batch_key(np.array([7, 3, 5])) == (3, 7, 3) and batch_key(np.array([], dtype=np.int64)) == ()
    attempts, key = Attempts(), batch_key(np.array([3, 4]))
    assert [attempts.count(key) for _ in range(3)] == [1, 2, 3]
    assert attempts.count(batch_key(np.array([3]))) == 1  # another batch, counted apart
    attempts.clear(key)
    attempts.clear(key)  # a batch that finished twice (a retry that finished after all): no error
    assert attempts.count(key) == 1


@pytest.mark.slow  # a job of its own Ray whose model actors are killed: ~55 s
def test_an_image_that_kills_the_model_actor_becomes_an_error_row(model_dir, tmp_path):
    """Ray Data gives a batch whose actor died to a new actor, forever: the run splits it and gives up on the image."""
    images = tmp_path / "images"
    fill(images, range(5))
    photo(9).save(images / "img-poison.png")
    env = own_ray_env(VITMAE_FAULT_EXIT_ON="poison")  # a model actor exits on "poison" (tests/fault_injection)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobs.embed",
            "--input",
            str(images),
            "--output",
            str(tmp_path / "out"),
            "--model",
            str(model_dir),
            "--num_actors",
            "1",
            "--batch_size",
            "3",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    embedded, errors, record = read_run(tmp_path / "out")
    assert len(embedded) == 5 and list(errors) == [f"file://{images / 'img-poison.png'}"]
    assert errors[f"file://{images / 'img-poison.png'}"]["error"].startswith(
        "the model's process died on this image 2 times"
    )
