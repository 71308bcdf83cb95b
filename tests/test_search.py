"""Search on a small real run (the embedding job over real photographs, index built by the job): by image, by path,
batched, the contact sheet, and every user mistake as one line."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import GALLERY_OUTLIERS, write_embeddings
from PIL import Image

import vitmae
from jobs.cli import main as cli
from pipeline.embed.query import QueryEmbedder
from pipeline.records import append_run, latest_run
from pipeline.render import Layout, thumbnail
from pipeline.retrieval.search import Searcher
from pipeline.storage import Storage
from vitmae.processor import MAE_PROCESSOR


def test_the_embedding_job_built_a_flat_index(gallery_run, gallery):
    info = json.loads((gallery_run / "index" / "index.json").read_text())
    images = len(list(gallery.iterdir()))
    assert info["index_type"] == "flat" and info["count"] == images and info["dimension"] == 64
    assert info["recall"]["value"] == 1.0 and "exact search" in info["reason"]


def test_search_by_image_finds_itself_first(gallery_run, gallery, capsys):
    query = gallery / "coffee-03.png"
    assert cli(["search", "--run", str(gallery_run), "--image", str(query), "--k", "5", "--json", "true"]) == 0
    hits = json.loads(capsys.readouterr().out)  # stdout is the JSON array and nothing else
    assert [h["rank"] for h in hits] == [1, 2, 3, 4, 5] and set(hits[0]) == {"rank", "path", "score"}
    assert hits[0]["path"] == f"file://{query}" and hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert all(h["path"].rsplit("/", 1)[-1].startswith("coffee-") for h in hits)  # crops of the same photograph
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)


def test_search_by_image_matches_the_stored_embedding(gallery_run, gallery):
    searcher, embed = Searcher(str(gallery_run)), QueryEmbedder(str(gallery_run))
    for name in ("coffee-07.png", GALLERY_OUTLIERS[0]):
        fresh = embed((gallery / name).read_bytes())
        stored = searcher.vector_of_path(str(gallery / name))
        assert np.dot(fresh, stored) / np.linalg.norm(fresh) / np.linalg.norm(stored) > 0.9999


def test_search_by_path_and_batched_vectors(gallery_run, gallery, capsys):
    searcher = Searcher(str(gallery_run))
    by_path = searcher.search_path(str(gallery / "coffee-11.png"), k=4)  # a local path finds the file:// URI
    assert by_path[0].path == f"file://{gallery / 'coffee-11.png'}" and by_path[0].rank == 1
    vectors = np.stack([searcher.vector_of_path(str(gallery / n)) for n in ("coffee-11.png", "moon.png")])
    batched = searcher.search_vectors(vectors, k=4)
    assert batched[0] == by_path and batched[1][0].path.endswith("/moon.png")
    assert cli(["search", "--run", str(gallery_run), "--path", f"file://{gallery / 'moon.png'}", "--k", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("3 nearest of file://") and out[1].split() == ["rank", "cosine", "path"]
    assert out[2].split()[0] == "1" and out[2].split()[2].endswith("/moon.png")


def test_contact_sheet_of_a_search(gallery_run, gallery, tmp_path, capsys):
    query = gallery / "coffee-05.png"
    png = tmp_path / "sheets" / "search.png"
    assert (
        cli(
            [
                "search",
                "--run",
                str(gallery_run),
                "--image",
                str(query),
                "--k",
                "4",
                "--json",
                "true",
                "--png",
                str(png),
            ]
        )
        == 0
    )
    hits = json.loads(capsys.readouterr().out)
    sheet = Image.open(png)
    sheet.load()
    layout = Layout(columns=5)  # the query and 4 neighbours in one row, two caption lines each
    assert sheet.format == "PNG" and sheet.size == layout.size(5)
    pixels = np.asarray(sheet.convert("RGB")).astype(int)
    sources = [query.read_bytes()] + [(gallery / h["path"].rsplit("/", 1)[-1]).read_bytes() for h in hits]
    for i, data in enumerate(sources):
        left, top, right, bottom = layout.picture_box(i)
        expected = np.asarray(thumbnail(data, layout.tile_px)).astype(int)
        x, y = left + (layout.tile_px - expected.shape[1]) // 2, top + (layout.tile_px - expected.shape[0]) // 2
        assert np.abs(pixels[y : y + expected.shape[0], x : x + expected.shape[1]] - expected).max() == 0, f"tile {i}"
        caption = pixels[bottom + 2 : bottom + 2 * layout.line_px, left:right]
        assert (caption < 128).any(), f"tile {i} has no caption"


def test_user_mistakes_are_one_line_errors(gallery_run, gallery, model_dir, tmp_path, capsys):
    def error(argv):
        assert cli(["search", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err, err
        return err

    run = str(gallery_run)
    bare = tmp_path / "bare"
    write_embeddings(str(bare), np.ones((3, 64), np.float32))
    assert cli(["search", "--run", str(bare), "--path", "x"]) == 75  # the run building it may not be done
    assert "has no index (index/index.json is missing); build it with: vitmae index --run" in capsys.readouterr().err
    assert "has no embeddings table" in error(["--run", str(tmp_path / "nowhere"), "--path", "x"])
    assert "path /nowhere/cat.jpg is not in the index" in error(["--run", run, "--path", "/nowhere/cat.jpg"])
    (tmp_path / "text.jpg").write_text("this is not a picture\n")
    assert "text.jpg: not an image file" in error(["--run", run, "--image", str(tmp_path / "text.jpg")])
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    assert "broken.jpg: cannot read image header" in error(["--run", run, "--image", str(tmp_path / "broken.jpg")])
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes((gallery / "coffee-00.png").read_bytes()[:2000])
    assert "truncated.png: cannot decode PNG image" in error(["--run", run, "--image", str(truncated)])
    assert "query image" in error(["--run", run, "--image", str(tmp_path / "missing.jpg")])
    assert "k must be at least 1" in error(["--run", run, "--path", "x", "--k", "0"])
    # The run's manifest now names a model of another width than the index's vectors.
    other = tmp_path / "run32"
    shutil.copytree(gallery_run, other)
    model32 = tmp_path / "model32"
    config = vitmae.ViTMAEConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=224, patch_size=16
    )
    torch.manual_seed(0)
    vitmae.ViTMAEModel(config).save_pretrained(model32)
    vitmae.ViTImageProcessor.from_dict(MAE_PROCESSOR).save_pretrained(model32)
    record = latest_run(str(other), Storage())
    append_run(str(other), Storage(), {**record, "model": str(model32), "finished": "9999-12-31T00:00:00.000Z"})
    message = error(["--run", str(other), "--image", str(gallery / "coffee-00.png")])
    assert f"the run's model {model32} makes 32-d embeddings but the index of {other} holds 64-d vectors" in message
