"""Contact sheets: grid geometry, thumbnails that keep their aspect and colour, unreadable images, long captions."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pipeline.render import (
    BACKGROUND,
    HEAT_ALPHA,
    PICTURE_BACKGROUND,
    UNREADABLE,
    Layout,
    Tile,
    heatmap_overlay,
    render,
    render_groups,
    save_png,
)
from pipeline.storage import Storage


def png(colour: tuple[int, int, int], size: tuple[int, int]) -> bytes:
    sink = io.BytesIO()
    Image.new("RGB", size, colour).save(sink, "PNG")
    return sink.getvalue()


def test_tiles_land_in_their_cells_with_their_colours(tmp_path):
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (240, 200, 0), (0, 0, 0)]
    tiles = [
        Tile(png(c, (300, 150)), (f"#{i}", "a-very-long-file-name-that-cannot-fit-under-a-tile.jpg"))
        for i, c in enumerate(colours)
    ]
    tiles.append(Tile(b"not an image", ("#5", "broken.jpg")))
    sheet = render(tiles, columns=4, tile_px=64)
    layout = Layout(columns=4, tile_px=64, lines=2)
    assert sheet.size == layout.size(6) == (4 * 76, 2 * (64 + 30 + 18))
    save_png(sheet, str(tmp_path / "out" / "sheet.png"), Storage())
    pixels = np.asarray(Image.open(tmp_path / "out" / "sheet.png").convert("RGB"))
    for i, colour in enumerate(colours):
        left, top, right, bottom = layout.picture_box(i)
        centre = pixels[(top + bottom) // 2, (left + right) // 2]
        assert tuple(centre) == colour, i
        assert tuple(pixels[top + 2, (left + right) // 2]) == PICTURE_BACKGROUND  # 2:1 picture, centred vertically
    left, top, right, bottom = layout.picture_box(5)
    assert tuple(pixels[top + 2, left + 2]) == UNREADABLE
    caption = pixels[bottom + 6 : bottom + 36, left:right]
    assert (caption < 100).any()  # the caption is drawn, cut to the tile's width
    assert (pixels[:, layout.size(6)[0] - 1] == 255).all()  # nothing spills past the last column


def test_groups_go_one_per_row_and_long_ones_are_cut():
    red, green, blue = (200, 30, 30), (30, 200, 30), (30, 30, 200)
    groups = [
        [Tile(png(red, (50, 50)), ("#1", "a.png"))] * 4,
        [Tile(png(green, (50, 50)), ("#2", "b.png"))] * 2,
        [Tile(png(blue, (50, 50)), ("#3", "c.png"))] * 3,
    ]
    sheet = np.asarray(render_groups(groups, columns=3, tile_px=40))
    layout = Layout(columns=3, tile_px=40, lines=2)
    assert sheet.shape[1::-1] == layout.size(9)  # three rows of three cells: the fourth red tile is cut
    for cell, colour in enumerate([red, red, red, green, green, None, blue, blue, blue]):
        left, top, right, bottom = layout.picture_box(cell)
        centre = tuple(sheet[(top + bottom) // 2, (left + right) // 2])
        assert centre == (colour or BACKGROUND), cell  # the short group's row ends blank
    with pytest.raises(ValueError, match="at least one group of at least one tile"):
        render_groups([[], groups[0]])


def test_an_empty_sheet_is_refused():
    with pytest.raises(ValueError, match="at least one tile"):
        render([])


def test_small_images_grow_by_whole_pixels():
    from pipeline.render import thumbnail

    checker = np.kron(np.array([[0, 255], [255, 0]], np.uint8), np.ones((8, 8), np.uint8))  # 16 x 16
    grown = thumbnail(_encode(checker), 64)
    assert grown.size == (64, 64)
    assert np.array_equal(np.asarray(grown)[..., 0], np.kron(checker, np.ones((4, 4), np.uint8)))  # sharp, not blurred
    assert thumbnail(png((9, 9, 9), (300, 150)), 64).size == (64, 32)  # large ones still shrink


def _encode(gray: np.ndarray) -> bytes:
    sink = io.BytesIO()
    Image.fromarray(gray).save(sink, "PNG")
    return sink.getvalue()


def test_a_heatmap_tints_each_patch_by_its_loss_and_leaves_the_unscored_ones_clear():
    """A 2 x 2 grid over a 40 x 40 grey picture: the lowest loss dark blue, the highest dark red, the middle one
    yellow-green, the NaN patch (no mask hid it) untouched; at the corners bilinear scaling keeps the grid's values."""
    grey = Image.new("RGB", (40, 40), (100, 100, 100))
    out = np.asarray(heatmap_overlay(grey, np.array([0.2, 1.0, np.nan, 0.6], np.float32)), float)
    blend = lambda colour: (1 - HEAT_ALPHA) * np.array([100, 100, 100]) + HEAT_ALPHA * np.array(colour)  # noqa: E731
    np.testing.assert_allclose(out[1, 1], blend([0, 0, 128]), atol=1)
    np.testing.assert_allclose(out[1, 38], blend([128, 0, 0]), atol=1)
    np.testing.assert_array_equal(out[25:, :20], 100)
    np.testing.assert_allclose(out[38, 38], blend([127.5, 255, 127.5]), atol=1)
    flat = np.asarray(heatmap_overlay(grey, np.full(4, 0.3, np.float32)), float)
    np.testing.assert_allclose(flat, np.broadcast_to(blend([0, 0, 128]), flat.shape), atol=1)  # one value: lowest
    assert heatmap_overlay(grey, np.full(4, np.nan, np.float32)) is grey
    with pytest.raises(ValueError, match="expected a square number of patch losses, got 3"):
        heatmap_overlay(grey, np.zeros(3, np.float32))
