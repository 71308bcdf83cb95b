"""Reconstruction sheets: geometry, masked and pasted patches, the un-normalised prediction, one-line CLI errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TINY_MAE
from PIL import Image

import vitmae
from jobs.cli import main as cli
from pipeline.embed.decode import DecodeConfig, decode_image
from pipeline.embed.infer import mask_noise
from pipeline.render import HEADER_PX, LABELS, MARGIN_PX, MIN_PANEL_PX, render_rows
from pipeline.train.reconstruct import (
    MASK_GREY,
    ReconstructConfig,
    reconstruction_rows,
    render_reconstructions,
    save_reconstructions,
)
from vitmae.processor import IMAGENET_MEAN, IMAGENET_STD

# ImageNet statistics, so that undoing the normalisation is not the identity-like 0.5 / 0.5.
PROCESSOR = dict(size=32, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD)
GRID = 4  # patches per side: 32 / 8


def tiny_model(norm_pix_loss: bool = False) -> vitmae.ViTMAEForPreTraining:
    torch.manual_seed(0)
    return vitmae.ViTMAEForPreTraining(vitmae.ViTMAEConfig(**TINY_MAE, norm_pix_loss=norm_pix_loss)).eval()


@pytest.fixture
def model_folder(tmp_path):
    folder = tmp_path / "model"
    tiny_model().save_pretrained(folder)
    vitmae.ViTImageProcessor(**PROCESSOR).save_pretrained(folder)
    return folder


@pytest.fixture
def images(photo_paths) -> list[tuple[str, bytes]]:
    """astronaut.png and coffee.png as (path, bytes)."""
    return [(str(p), p.read_bytes()) for p in photo_paths if p.name in ("astronaut.png", "coffee.png")]


def masked_pixels(name: str, seed: int, mask_ratio: float) -> np.ndarray:
    """bool [32, 32, 1], True on the masked patches, from the noise alone (not from the model)."""
    noise = mask_noise(name, seed, GRID * GRID, mask_ratio, 1)[0]
    keep = int(GRID * GRID * (1 - mask_ratio))
    hidden = np.ones(GRID * GRID, bool)
    hidden[np.argsort(noise, kind="stable")[:keep]] = False
    return np.kron(hidden.reshape(GRID, GRID), np.ones((8, 8), bool))[..., None]


@pytest.mark.parametrize("count", [1, 2])
def test_the_png_has_a_header_and_one_row_of_five_panels_per_image(count, model_folder, photo_paths, tmp_path):
    paths = [str(p) for p in photo_paths[:count]]
    png = tmp_path / "out" / "sheet.png"
    save_reconstructions(ReconstructConfig(str(model_folder), tuple(paths), str(png)))
    sheet = np.asarray(Image.open(png).convert("RGB"))
    panel = max(32, MIN_PANEL_PX)  # 128: the tiny model's 32 pixels, upscaled
    assert MIN_PANEL_PX == 128 and len(LABELS) == 5
    assert sheet.shape == (MARGIN_PX + HEADER_PX + count * (panel + MARGIN_PX), MARGIN_PX + 5 * (panel + MARGIN_PX), 3)
    assert (sheet[MARGIN_PX : MARGIN_PX + HEADER_PX] < 100).any()  # the labels are drawn
    processor = vitmae.ViTImageProcessor(**PROCESSOR)
    rows = reconstruction_rows(
        vitmae.ViTMAEForPreTraining.from_pretrained(model_folder), processor, [(p, open(p, "rb").read()) for p in paths]
    )
    for row, panels in enumerate(rows):
        top = MARGIN_PX + HEADER_PX + row * (panel + MARGIN_PX)
        for column, expected in enumerate(panels):
            left = MARGIN_PX + column * (panel + MARGIN_PX)
            nearest = np.repeat(np.repeat(expected, 4, axis=0), 4, axis=1)  # NEAREST by 4 repeats every pixel
            np.testing.assert_array_equal(
                sheet[top : top + panel, left : left + panel], nearest, err_msg=f"{row} {column}"
            )


def test_masked_panel_is_grey_on_masked_patches_and_pasted_panel_keeps_the_visible_ones(images):
    model, processor = tiny_model(), vitmae.ViTImageProcessor(**PROCESSOR)
    rows = reconstruction_rows(model, processor, images, mask_ratio=0.75, seed=3)
    sheet = np.asarray(render_reconstructions(model, processor, images, mask_ratio=0.75, seed=3, panel_px=32))
    for row, ((name, _), (original, masked, reconstruction, pasted, heat)) in enumerate(zip(images, rows)):
        hidden = masked_pixels(name, 3, 0.75)
        assert hidden.sum() == 12 * 64  # 12 of 16 patches, 8 x 8 pixels each
        assert original.shape == masked.shape == reconstruction.shape == pasted.shape == (32, 32, 3)
        assert original.dtype == masked.dtype == reconstruction.dtype == pasted.dtype == np.uint8
        assert (masked[hidden[..., 0]] == MASK_GREY).all()
        np.testing.assert_array_equal(np.where(hidden, 0, masked), np.where(hidden, 0, original))
        np.testing.assert_array_equal(np.where(hidden, 0, pasted), np.where(hidden, 0, original))
        np.testing.assert_array_equal(np.where(hidden, pasted, 0), np.where(hidden, reconstruction, 0))
        assert (
            np.where(hidden, reconstruction, 0) != np.where(hidden, original, 0)
        ).any()  # a random model is no oracle
        top = MARGIN_PX + HEADER_PX + row * (32 + MARGIN_PX)
        # The heatmap leaves the visible patches as they are and tints every masked one.
        np.testing.assert_array_equal(np.where(hidden, 0, heat), np.where(hidden, 0, original))
        assert (np.abs(heat.astype(int) - original)[hidden[..., 0]].sum(axis=-1) > 0).mean() > 0.9
        for column, panel in enumerate((original, masked, reconstruction, pasted, heat)):
            left = MARGIN_PX + column * (32 + MARGIN_PX)
            np.testing.assert_array_equal(sheet[top : top + 32, left : left + 32], panel)
    other_seed = reconstruction_rows(model, processor, images[:1], mask_ratio=0.75, seed=4)[0][1]
    assert (other_seed != rows[0][1]).any()  # the seed moves the mask
    np.testing.assert_array_equal(reconstruction_rows(model, processor, images[:1], seed=3)[0][1], rows[0][1])


def test_the_reconstruction_is_the_logits_with_the_normalisation_undone(images):
    model, processor = tiny_model(norm_pix_loss=False), vitmae.ViTImageProcessor(**PROCESSOR)
    model.train()
    rows = reconstruction_rows(model, processor, images, mask_ratio=0.5, seed=0)
    assert model.training  # the caller's mode is restored
    # The original panel is what the model saw: the job's decode (PNGs box-shrunk by libvips before the resize).
    pixels = np.stack([decode_image(data, processor, DecodeConfig()).pixels for _, data in images])
    np.testing.assert_array_equal(np.stack([r[0] for r in rows]), pixels)
    exact = np.stack(
        [np.asarray(Image.open(name).convert("RGB").resize((32, 32), Image.Resampling.BILINEAR)) for name, _ in images]
    )
    assert np.abs(pixels.astype(int) - exact).mean() < 2  # and close to the full-size PIL resize
    noise = torch.from_numpy(np.stack([mask_noise(name, 0, 16, 0.5, 1)[0] for name, _ in images]))
    x = processor.normalize(torch.from_numpy(pixels))
    with torch.no_grad():
        logits = model.eval()(x, noise=noise, mask_ratio=0.5).logits
    predicted = model.unpatchify(logits).permute(0, 2, 3, 1).double().numpy()  # [N, 32, 32, 3], normalised
    by_hand = (predicted * np.array(PROCESSOR["image_std"]) + np.array(PROCESSOR["image_mean"])) * 255
    by_hand = np.clip(np.rint(by_hand), 0, 255)
    got = np.stack([r[2] for r in rows]).astype(np.float64)
    assert np.abs(got - by_hand).max() <= 1  # float32 vs float64 may round a .5 the other way
    assert (got == by_hand).mean() > 0.99
    assert 20 < got.std()  # not a flat grey: the random decoder's output spread over 0..255


class Oracle(vitmae.ViTMAEForPreTraining):
    """Predicts every patch exactly (per-patch normalised when norm_pix_loss), to test the de-normalisation."""

    def forward(self, pixel_values, noise=None, mask_ratio=None, **kwargs):
        out = super().forward(pixel_values, noise=noise, mask_ratio=mask_ratio, **kwargs)
        target = self.patchify(pixel_values)
        if self.config.norm_pix_loss:
            target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1.0e-6) ** 0.5
        out.logits = target
        return out


@pytest.mark.parametrize("norm_pix_loss", [False, True])
def test_a_perfect_prediction_reconstructs_the_original(norm_pix_loss, images):
    torch.manual_seed(0)
    model = Oracle(vitmae.ViTMAEConfig(**TINY_MAE, norm_pix_loss=norm_pix_loss))
    rows = reconstruction_rows(model, vitmae.ViTImageProcessor(**PROCESSOR), images)
    for original, _, reconstruction, pasted, _ in rows:
        assert np.abs(reconstruction.astype(int) - original).max() <= 1
        assert np.abs(pasted.astype(int) - original).max() <= 1


def test_limit_draws_the_first_images_that_decode(model_folder, photo_paths, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    paths = [str(tmp_path / "missing.png"), str(broken)] + [str(p) for p in photo_paths[:3]]
    png = tmp_path / "sheet.png"
    save_reconstructions(ReconstructConfig(str(model_folder), tuple(paths), str(png)), limit=2)
    assert Image.open(png).height == MARGIN_PX + HEADER_PX + 2 * (MIN_PANEL_PX + MARGIN_PX)
    with pytest.raises(ValueError, match="none of the 2 images could be read and decoded"):
        save_reconstructions(ReconstructConfig(str(model_folder), tuple(paths[:2]), str(png)), limit=2)


def test_user_input_is_checked():
    model, processor = tiny_model(), vitmae.ViTImageProcessor(**PROCESSOR)
    with pytest.raises(ValueError, match="expected at least one image"):
        reconstruction_rows(model, processor, [])
    with pytest.raises(
        ValueError, match="processor resizes to {'height': 64, 'width': 64} but the model expects 32x32"
    ):
        reconstruction_rows(model, vitmae.ViTImageProcessor(size=64), [("x", b"")])
    with pytest.raises(ValueError, match="at least one row"):
        render_rows([], 32)


def cli_error(argv: list[str], capsys) -> str:
    assert cli(["reconstruct", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("vitmae reconstruct: error: ")
    return err


def test_cli_writes_the_png_and_says_where(model_folder, photo_paths, tmp_path, capsys):
    png = tmp_path / "sheet.png"
    images = f"[{photo_paths[0]},{photo_paths[2]}]"
    assert (
        cli(
            [
                "reconstruct",
                "--model",
                str(model_folder),
                "--images",
                images,
                "--png",
                str(png),
                "--mask_ratio",
                "0.5",
                "--seed",
                "7",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.strip() == f"wrote the reconstructions of 2 images to {png}"
    assert Image.open(png).size == (
        MARGIN_PX + 5 * (MIN_PANEL_PX + MARGIN_PX),
        MARGIN_PX + HEADER_PX + 2 * (MIN_PANEL_PX + MARGIN_PX),
    )


def test_cli_user_mistakes_are_one_line_errors(model_folder, photo_paths, tmp_path, capsys):
    good = ["--images", f"[{photo_paths[0]}]", "--png", str(tmp_path / "sheet.png")]
    broken = tmp_path / "noise.png"
    broken.write_bytes(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8).tobytes())
    err = cli_error(["--model", str(model_folder), "--images", f"[{broken}]", "--png", str(tmp_path / "x.png")], capsys)
    assert f"{broken}: not an image file" in err
    err = cli_error(["--model", str(tmp_path / "nowhere"), *good], capsys)
    assert f"checkpoint folder not found: {tmp_path / 'nowhere'}" in err
    err = cli_error(
        ["--model", str(model_folder), "--images", f"[{tmp_path / 'gone.jpg'}]", "--png", str(tmp_path / "x.png")],
        capsys,
    )
    assert f"{tmp_path / 'gone.jpg'}: no such file" in err
    for ratio in ("0", "1"):
        assert f"mask_ratio must be in (0, 1), got {float(ratio)}" in cli_error(
            ["--model", str(model_folder), *good, "--mask_ratio", ratio], capsys
        )
    encoder_only = tmp_path / "encoder"
    vitmae.ViTMAEModel(vitmae.ViTMAEConfig(**TINY_MAE)).save_pretrained(encoder_only)
    vitmae.ViTImageProcessor(**PROCESSOR).save_pretrained(encoder_only)
    assert f"{encoder_only} has no MAE decoder weights" in cli_error(["--model", str(encoder_only), *good], capsys)
    no_processor = tmp_path / "no_processor"
    tiny_model().save_pretrained(no_processor)
    assert "has no preprocessor_config.json" in cli_error(["--model", str(no_processor), *good], capsys)
    assert not (tmp_path / "sheet.png").exists() and not (tmp_path / "x.png").exists()
