"""Pictures for people, drawn with Pillow and saved as PNG: contact sheets (a grid of thumbnails with captions, or a
row of them per group of near-duplicates), reconstruction sheets (a row of panels per image under a header of
labels), and heatmaps of the per-patch loss over an image."""

from __future__ import annotations

import io
import logging
import math
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pipeline import schema
from pipeline.images import open_image, to_rgb
from pipeline.storage import Storage, read_bytes, write_uri
from vitmae.errors import one_line

if TYPE_CHECKING:
    from pipeline.retrieval.search import Hit

logger = logging.getLogger(__name__)

BACKGROUND = (255, 255, 255)  # sheet and caption area
PICTURE_BACKGROUND = (235, 235, 235)  # around a thumbnail that is not square
UNREADABLE = (160, 160, 160)  # the square drawn for an image that could not be read or decoded
TEXT = (20, 20, 20)
# Reconstruction sheets.
# The panels of a row, left to right.
LABELS = ("original", "masked", "reconstruction", "reconstruction + visible", "loss of masked patches")
MIN_PANEL_PX = 128  # default panel side: the model's image size, but at least this (tiny models stay visible)
MARGIN_PX = 8  # around the sheet and between panels
LABEL_PX = 14  # font size of the labels
LINE_PX = 17  # height of one label line
HEADER_LINES = 2  # label lines in the header ("reconstruction + visible" wraps in a narrow panel)
HEADER_PX = HEADER_LINES * LINE_PX  # the header row above the first row of panels
# Heatmaps: each image's lowest patch loss dark blue, its highest dark red (the "jet" colours), at this opacity.
HEAT_ALPHA = 0.5
HEAT_STOPS = np.array([[0, 0, 128], [0, 0, 255], [0, 255, 255], [255, 255, 0], [255, 0, 0], [128, 0, 0]], np.float32)


@dataclass(frozen=True)
class Tile:
    """One cell of the sheet."""

    image: bytes | None  # encoded image; None (or undecodable bytes) draws the grey "unreadable" square
    caption: tuple[str, ...]  # lines under the picture
    heatmap: np.ndarray | None = None  # float32 [L]: a per-patch loss drawn over the picture (`heatmap_overlay`)


@dataclass(frozen=True)
class Layout:
    """Where each tile goes on a sheet."""

    columns: int  # tiles per row
    tile_px: int = 192  # side of the square picture area
    lines: int = 2  # caption lines under each picture
    line_px: int = 15  # height of one caption line
    margin_px: int = 6  # around every cell

    def cell(self) -> tuple[int, int]:
        """(width, height) of one cell."""
        return self.tile_px + 2 * self.margin_px, self.tile_px + self.lines * self.line_px + 3 * self.margin_px

    def size(self, tiles: int) -> tuple[int, int]:
        """(width, height) of a sheet of `tiles` tiles."""
        width, height = self.cell()
        rows = -(-tiles // self.columns)
        return min(tiles, self.columns) * width, max(1, rows) * height

    def picture_box(self, i: int) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) of tile i's square picture area."""
        width, height = self.cell()
        left = (i % self.columns) * width + self.margin_px
        top = (i // self.columns) * height + self.margin_px
        return left, top, left + self.tile_px, top + self.tile_px


def render(tiles: Sequence[Tile], columns: int = 6, tile_px: int = 192) -> Image.Image:
    """The sheet: tiles left to right, top to bottom, each a thumbnail (aspect kept, centred) over its caption."""
    if not tiles:
        raise ValueError("expected at least one tile for a contact sheet, got none")
    layout = Layout(columns=max(1, min(columns, len(tiles))), tile_px=tile_px, lines=max(len(t.caption) for t in tiles))
    return _draw(dict(enumerate(tiles)), layout, len(tiles))


def render_groups(groups: Sequence[Sequence[Tile]], columns: int = 6, tile_px: int = 192) -> Image.Image:
    """The sheet of groups, one per row: a group's tiles left to right, its first `columns` only (the caller says in
    a caption how many more there are), the rest of a short row left blank."""
    if not groups or not all(groups):
        raise ValueError(f"expected at least one group of at least one tile, got {[len(g) for g in groups]} tiles")
    columns = max(1, min(columns, max(len(g) for g in groups)))
    layout = Layout(columns=columns, tile_px=tile_px, lines=max(len(t.caption) for g in groups for t in g))
    cells = {
        row * columns + column: tile for row, group in enumerate(groups) for column, tile in enumerate(group[:columns])
    }
    return _draw(cells, layout, len(groups) * columns)


def _draw(cells: dict[int, Tile], layout: Layout, count: int) -> Image.Image:
    """A sheet of `count` cells of `layout`, with each of `cells` (cell index -> tile) drawn; the others stay blank."""
    sheet = Image.new("RGB", layout.size(count), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = label_font(layout.line_px - 3)
    tile_px = layout.tile_px
    for i, tile in cells.items():
        left, top, right, bottom = layout.picture_box(i)
        picture = thumbnail(tile.image, tile_px)
        if picture is None:
            draw.rectangle((left, top, right - 1, bottom - 1), fill=UNREADABLE)
            draw.text((left + 6, top + tile_px // 2 - 6), "unreadable", fill=TEXT, font=font)
        else:
            if tile.heatmap is not None:
                picture = heatmap_overlay(picture, tile.heatmap)
            draw.rectangle((left, top, right - 1, bottom - 1), fill=PICTURE_BACKGROUND)
            sheet.paste(picture, (left + (tile_px - picture.width) // 2, top + (tile_px - picture.height) // 2))
        for line, text in enumerate(tile.caption):
            y = bottom + layout.margin_px + line * layout.line_px
            draw.text((left, y), _fit(draw, text, font, tile_px), fill=TEXT, font=font)
    return sheet


def search_tiles(query: str | bytes, hits: Sequence[Hit], storage: Storage) -> list[Tile]:
    """The query (a path, URI or encoded bytes) first, then each neighbour with its rank and score."""
    images = read_images([h.path for h in hits], storage)
    if isinstance(query, str):
        first = Tile(read_images([query], storage)[0], ("query", short_name(query)))
    else:
        first = Tile(query, ("query", ""))
    return [first] + [Tile(data, (f"#{h.rank}  {h.score:.4f}", short_name(h.path))) for h, data in zip(hits, images)]


def anomaly_tiles(
    rows: Sequence[dict[str, Any]], storage: Storage, heatmaps: dict[str, np.ndarray] | None = None
) -> list[Tile]:
    """One tile per row of anomalies.parquet (as dicts): rank and both scores over the file name, and the image's
    per-patch loss over its picture where `heatmaps` (path -> float32 [L]) holds one."""
    heatmaps = heatmaps or {}

    def show(value: Any, spec: str) -> str:
        return "-" if schema.nan_to_none(value) is None else format(value, spec)

    images = read_images([row[schema.PATH] for row in rows], storage)
    return [
        Tile(
            data,
            (
                f"#{show(row[schema.RANK], 'd')}  knn {show(row[schema.KNN_DISTANCE], '.4f')}",
                f"loss {show(row[schema.LOSS], '.4f')}",
                short_name(row[schema.PATH]),
            ),
            heatmaps.get(row[schema.PATH]),
        )
        for row, data in zip(rows, images)
    ]


def duplicate_tiles(
    groups: Sequence[dict[str, Any]], storage: Storage, columns: int = 6, role: str = "keep"
) -> list[list[Tile]]:
    """One row of tiles per group (as `pipeline.retrieval.duplicates.groups_of` gives them): the representative, then
    its near-duplicates with their cosine similarity to it, at most `columns`; the last tile counts the rest. `role`:
    what the caption calls the representative."""
    rows = []
    for group in groups:
        shown = group["members"][:columns]
        images = read_images([m["path"] for m in shown], storage)
        tiles = []
        for i, (member, data) in enumerate(zip(shown, images)):
            if i == 0:
                first = f"#{group['group']}  {group['size']} images, {role}"
            else:
                first = f"cos {member['similarity']:.4f}" + ("  same bytes" if member["identical"] else "")
            if i == len(shown) - 1 and group["size"] > len(shown):
                first += f"  +{group['size'] - len(shown)} more"
            tiles.append(Tile(data, (first, short_name(member["path"]))))
        rows.append(tiles)
    return rows


def thumbnail(data: bytes | None, tile_px: int) -> Image.Image | None:
    """Encoded bytes -> RGB image fitting tile_px x tile_px (aspect kept), or None when they do not decode."""
    if not data:
        return None
    try:
        image = open_image(data)  # refuses decompression bombs as the job does
        image.draft("RGB", (tile_px, tile_px))  # JPEG: decode at a reduced scale
        image = to_rgb(image)
        image.thumbnail((tile_px, tile_px), Image.Resampling.BICUBIC)
        factor = tile_px // max(image.width, image.height)
        if factor >= 2:  # small images (scans, icons) grow by whole pixels so that they stay visible and sharp
            image = image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)
        return image
    except Exception as err:  # untrusted bytes make Pillow raise many types; a thumbnail is never worth failing for
        logger.info("no thumbnail: %s", one_line(err))
        return None


def heatmap_overlay(picture: Image.Image, patch_loss: np.ndarray) -> Image.Image:
    """An RGB picture with its per-patch loss drawn over it: each image's lowest patch loss dark blue, its highest dark
    red (`HEAT_STOPS`), at `HEAT_ALPHA`; patches without a loss (NaN: no mask hid them) are left clear.

    Args:
        picture: the whole image at any size and aspect (the model saw it resized to a square, so the grid of patches
            stretches over all of it).
        patch_loss: float [L], L a square: the grid's rows top to bottom, each left to right (`schema.PATCH_LOSS`).
    """
    side = math.isqrt(len(patch_loss))
    if side * side != len(patch_loss) or side == 0:
        raise ValueError(f"expected a square number of patch losses, got {len(patch_loss)}")
    grid = np.asarray(patch_loss, np.float32).reshape(side, side)
    known = np.isfinite(grid)
    if not known.any():
        return picture
    low, high = float(grid[known].min()), float(grid[known].max())
    scaled = np.where(known, (grid - low) / (high - low) if high > low else 0.0, 0.0).astype(np.float32)
    heat = np.asarray(Image.fromarray(scaled, mode="F").resize(picture.size, Image.Resampling.BILINEAR))
    shown = np.asarray(
        Image.fromarray(known.astype(np.float32), mode="F").resize(picture.size, Image.Resampling.NEAREST)
    )
    stops = np.linspace(0.0, 1.0, len(HEAT_STOPS))
    colours = np.stack([np.interp(heat, stops, HEAT_STOPS[:, c]) for c in range(3)], axis=-1)
    alpha = HEAT_ALPHA * shown[..., None]
    blended = np.asarray(picture.convert("RGB"), np.float32) * (1 - alpha) + colours * alpha
    return Image.fromarray(blended.round().clip(0, 255).astype(np.uint8))


def read_images(paths: Sequence[str], storage: Storage) -> list[bytes | None]:
    """The bytes of each path (local or any fsspec URI), None for those that cannot be read."""
    out: list[bytes | None] = []
    for path in paths:  # one at a time: paths may live on different filesystems, and sheets are small
        found = read_bytes([path], storage)[0]
        out.append(None if isinstance(found, Exception) else found)
    return out


def save_png(sheet: Image.Image, uri: str, storage: Storage) -> None:
    """Writes a sheet as PNG to a local path or URI, so that no reader sees it half-written."""
    sink = io.BytesIO()
    sheet.save(sink, format="PNG", optimize=False)
    write_uri(uri, sink.getvalue(), storage)
    logger.info("wrote a %dx%d sheet to %s", sheet.width, sheet.height, uri)


def short_name(path: str) -> str:
    """The last component of a path or URI, for captions."""
    return posixpath.basename(path.rstrip("/")) or path


def _fit(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont, width: int) -> str:
    """`text`, cut from the left with '...' until it fits `width` pixels (file names keep their ends)."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength("..." + text, font=font) > width:
        text = text[1:]
    return "..." + text


def label_font(size: int) -> ImageFont.ImageFont:
    """Pillow's default font at `size` pixels (shared by the contact sheets and the reconstruction sheets)."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the bitmap font, one size
        return ImageFont.load_default()


def render_rows(rows: Sequence[Sequence[np.ndarray]], panel_px: int) -> Image.Image:
    """The sheet: the header of `LABELS`, then one row of panels per image, each scaled (NEAREST) to panel_px."""
    if not rows:
        raise ValueError("expected at least one row of panels, got none")
    if panel_px < 1:
        raise ValueError(f"expected panel_px >= 1, got {panel_px}")
    sheet = Image.new("RGB", sheet_size(len(rows), panel_px), BACKGROUND)
    font = label_font(LABEL_PX)
    for column, label in enumerate(LABELS):
        # Each label is drawn on its own cell so that a narrow panel clips it instead of overlapping the next one.
        cell = Image.new("RGB", (panel_px, HEADER_PX), BACKGROUND)
        draw = ImageDraw.Draw(cell)
        for line, text in enumerate(_wrap(draw, label, font, panel_px)):
            draw.text((0, line * LINE_PX), text, fill=TEXT, font=font)
        sheet.paste(cell, (panel_origin(0, column, panel_px)[0], MARGIN_PX))
    for row, panels in enumerate(rows):
        for column, panel in enumerate(panels):
            picture = Image.fromarray(panel).resize((panel_px, panel_px), Image.Resampling.NEAREST)
            sheet.paste(picture, panel_origin(row, column, panel_px))
    return sheet


def sheet_size(rows: int, panel_px: int) -> tuple[int, int]:
    """(width, height) of a sheet of `rows` images."""
    return MARGIN_PX + len(LABELS) * (panel_px + MARGIN_PX), MARGIN_PX + HEADER_PX + rows * (panel_px + MARGIN_PX)


def panel_origin(row: int, column: int, panel_px: int) -> tuple[int, int]:
    """(left, top) of the panel in `column` (a `LABELS` index) of image `row`."""
    return MARGIN_PX + column * (panel_px + MARGIN_PX), MARGIN_PX + HEADER_PX + row * (panel_px + MARGIN_PX)


def _wrap(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont, width: int) -> list[str]:
    """`text` in at most HEADER_LINES lines of at most `width` pixels, broken at spaces where it can be."""
    lines: list[str] = []
    for word in text.split():
        if lines and draw.textlength(f"{lines[-1]} {word}", font=font) <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines[: HEADER_LINES - 1] + [" ".join(lines[HEADER_LINES - 1 :])] if len(lines) > HEADER_LINES else lines
