"""`python -m jobs.pretrain`: pre-train a ViTMAE (--preset) or adapt one (--init) on the images under --input, with Ray Train."""

from __future__ import annotations

import argparse
import sys

from jobs.embed import extensions
from jobs.errors import run_cli
from pipeline.embed.decode import DecodeConfig
from pipeline.embed.listing import DEFAULT_EXTENSIONS
from pipeline.layout import MODEL_DIR
from pipeline.train.pretrain import PRESETS, PretrainConfig, run


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, help="folder, prefix or glob of training images, local or s3://")
    parser.add_argument("--output", required=True, help="run folder for checkpoints, metrics and the final model, local or s3://")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--init", default=None, help="checkpoint to adapt (folder, URI or hub id, with its decoder)")
    start.add_argument("--preset", choices=sorted(PRESETS), default=None, help="a fresh model: tiny (ViT-Ti), small (ViT-S) or base (ViT-B)")
    parser.add_argument("--image-size", type=int, default=PretrainConfig.image_size, help="input side of a --preset model (default %(default)s)")
    parser.add_argument("--patch-size", type=int, default=PretrainConfig.patch_size, help="patch side of a --preset model (default %(default)s)")
    parser.add_argument("--epochs", type=int, default=PretrainConfig.epochs, help="epochs in all, resumed ones included (default %(default)s)")
    parser.add_argument("--batch-size", type=int, default=PretrainConfig.batch_size, help="images per worker per step (default %(default)s)")
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate (default: --blr x batch x workers / 256)")
    parser.add_argument("--blr", type=float, default=PretrainConfig.blr, help="base learning rate (default %(default)s, MAE's)")
    parser.add_argument("--min-lr", type=float, default=PretrainConfig.min_lr, help="learning rate at the end of the cosine decay")
    parser.add_argument("--warmup-epochs", type=float, default=None, help="linear warm-up (default: 5%% of the epochs)")
    parser.add_argument("--weight-decay", type=float, default=PretrainConfig.weight_decay, help="AdamW weight decay (default %(default)s)")
    parser.add_argument("--mask-ratio", type=float, default=PretrainConfig.mask_ratio, help="share of patches masked (default %(default)s)")
    parser.add_argument("--norm-pix-loss", action="store_true", help="reconstruct per-patch normalised pixels (the MAE paper's better setting)")
    parser.add_argument("--crop-scale", type=float, default=PretrainConfig.crop_scale, help="smallest area share of a random crop (default %(default)s)")
    parser.add_argument("--no-flip", action="store_true", help="no random horizontal flips")
    parser.add_argument("--num-workers", type=int, default=PretrainConfig.num_workers, help="Ray Train workers, data-parallel (default %(default)s)")
    parser.add_argument("--use-gpu", action="store_true", help="one GPU per worker")
    parser.add_argument("--cpus-per-worker", type=float, default=PretrainConfig.cpus_per_worker, help="CPUs each worker reserves; the rest decode images")
    parser.add_argument("--seed", type=int, default=0, help="model init, listing order and masks")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --output")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier run in --output")
    parser.add_argument("--reconstructions", type=int, default=PretrainConfig.reconstructions, help="training images drawn in reconstructions.png (0: none)")
    parser.add_argument("--s3-endpoint", default=None, help="S3 endpoint URL (default: $AWS_ENDPOINT_URL)")
    parser.add_argument("--extensions", default=",".join(DEFAULT_EXTENSIONS), help="comma-separated file extensions to train on")
    parser.add_argument("--max-pixels", type=int, default=DecodeConfig.max_pixels, help="skip larger images (decompression bombs)")


def config_from_args(args: argparse.Namespace) -> PretrainConfig:
    return PretrainConfig(
        input=args.input, output=args.output, init=args.init, preset=args.preset, image_size=args.image_size,
        patch_size=args.patch_size, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, blr=args.blr,
        min_lr=args.min_lr, warmup_epochs=args.warmup_epochs, weight_decay=args.weight_decay, mask_ratio=args.mask_ratio,
        norm_pix_loss=args.norm_pix_loss, crop_scale=args.crop_scale, flip=not args.no_flip, num_workers=args.num_workers,
        use_gpu=args.use_gpu, cpus_per_worker=args.cpus_per_worker, seed=args.seed, s3_endpoint=args.s3_endpoint,
        extensions=extensions(args.extensions), decode=DecodeConfig(max_pixels=args.max_pixels),
        resume=args.resume, overwrite=args.overwrite, reconstructions=args.reconstructions,
    )


def main_with_args(args: argparse.Namespace) -> None:
    summary = run(config_from_args(args))
    losses = summary["loss_per_epoch"]
    print(
        f"trained {summary['epochs']} epochs ({summary['steps']} steps, {summary['images_per_second']:.1f} images/s): "
        f"loss {losses[0]:.4f} in the first epoch, {losses[-1]:.4f} in the last; skipped {sum(summary['skipped_per_epoch'])} "
        f"unreadable images over all epochs; model in {args.output.rstrip('/')}/{MODEL_DIR}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vitmae pretrain", description=__doc__)
    add_arguments(parser)
    return run_cli(parser, main_with_args, argv)


if __name__ == "__main__":
    sys.exit(main())
