"""`python -m jobs.demo`: an offline end-to-end run on photographs that scikit-image ships.

It makes a small ViTMAE checkpoint (random weights until a pre-trained one is available offline),
embeds the photographs with loss scoring, and prints what the run wrote.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from pathlib import Path

import pyarrow.dataset as pads

from jobs.errors import run_cli
from pipeline.embed import EmbedConfig, run
from vitmae import ViTImageProcessor, ViTMAEConfig, ViTMAEForPreTraining

logger = logging.getLogger("jobs.demo")

PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "retina.jpg", "camera.png",
          "hubble_deep_field.jpg", "page.png", "coins.png", "moon.png", "horse.png")
SMALL_MAE = dict(hidden_size=192, num_hidden_layers=4, num_attention_heads=3, intermediate_size=768, image_size=224,
                 patch_size=16, decoder_hidden_size=128, decoder_num_hidden_layers=2, decoder_num_attention_heads=4,
                 decoder_intermediate_size=512)


def demo_images(folder: Path) -> Path:
    """Copies the bundled photographs, plus one file that is not an image, into `folder`."""
    import skimage

    source = Path(skimage.__file__).parent / "data"
    folder.mkdir(parents=True, exist_ok=True)
    for name in PHOTOS:
        shutil.copy(source / name, folder / name)
    (folder / "notes.jpg").write_text("not a picture: this one ends in the errors table\n")
    return folder


def main_with_args(args: argparse.Namespace) -> None:
    work = Path(args.workdir).resolve()
    images = demo_images(work / "images")
    model = work / "model"
    if not (model / "config.json").exists():
        ViTMAEForPreTraining(ViTMAEConfig(**SMALL_MAE)).save_pretrained(model)
        ViTImageProcessor(image_mean=(0.485, 0.456, 0.406), image_std=(0.229, 0.224, 0.225), resample=3).save_pretrained(model)
    output = work / "run"
    manifest = run(EmbedConfig(input=str(images), output=str(output), model=str(model), mask_ratio=0.75, loss_samples=4, batch_size=8, overwrite=True))
    table = pads.dataset(output / "embeddings", format="parquet").to_table(columns=["path", "loss", "width", "height"]).sort_by([("loss", "descending")])
    errors = pads.dataset(output / "errors", format="parquet").to_table()
    print("\nhighest reconstruction loss first:")
    for row in table.to_pylist():
        print(f"  {row['loss']:.4f}  {row['width']}x{row['height']}  {row['path']}")
    for row in errors.to_pylist():
        print(f"  error: {row['path']}: {row['error']}")
    counts = manifest["counts"]
    print(f"\nembedded {counts['embedded']} of {counts['listed']} ({counts['failed']} failed), {manifest['images_per_second']:.1f} images/s; outputs in {output}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jobs.demo", description=__doc__)
    parser.add_argument("--workdir", default="out/demo", help="where images, model and run go")
    return run_cli(parser, main_with_args, argv)


if __name__ == "__main__":
    sys.exit(main())
