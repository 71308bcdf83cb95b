"""How far vitmae in bf16 (eager and under torch.compile) is from transformers in float32, on real photographs.

One random ViT-B/16 MAE checkpoint (every parameter random, so no LayerNorm or bias stays at its initial
constant), scikit-image's photographs through the processor, and fixed masking noise. The reference is
transformers in float32 with TF32 off; each other way is compared with it on:

- the embedding (mean of the final-LayerNorm patch tokens, mask ratio 0): cosine and relative L2 error;
- the per-image reconstruction loss at mask ratio 0.75 (same noise): relative error;
- the mask and ids_restore: identical or not.

transformers' own bf16 run is the yardstick: vitmae in bf16 should be about as far from float32 as it is.

    python -m benchmarks.gpu_parity                  # on a GPU (the point of it); --device cpu runs it anywhere
"""

from __future__ import annotations

import argparse
import logging
import tempfile

import torch
import transformers
from PIL import Image

import vitmae
from benchmarks.common import photo_folder
from vitmae.processor import MAE_PROCESSOR

logger = logging.getLogger("gpu_parity")


def photographs() -> list[Image.Image]:
    """The colour and grayscale photographs scikit-image ships."""
    folder = photo_folder()
    names = (
        "astronaut.png",
        "chelsea.png",
        "coffee.png",
        "rocket.jpg",
        "motorcycle_left.png",
        "retina.jpg",
        "camera.png",
    )
    return [Image.open(folder / name) for name in names if (folder / name).exists()]


def randomise(model: torch.nn.Module, seed: int) -> None:
    """Every parameter random at a trained model's scale: weights N(0, 1/fan_in), LayerNorm 1 + N(0, 0.1^2),
    biases and tokens N(0, 0.02^2)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            for name, p in module.named_parameters(recurse=False):
                noise = torch.randn(p.shape, generator=generator)
                if isinstance(module, torch.nn.LayerNorm) and name == "weight":
                    p.copy_(1 + 0.1 * noise)
                elif name == "weight" and p.ndim >= 2:
                    p.copy_(noise / p[0].numel() ** 0.5)
                else:
                    p.copy_(0.02 * noise)


def compare(
    name: str,
    embedding: torch.Tensor,
    loss: torch.Tensor,
    mask_same: bool,
    ref_embedding: torch.Tensor,
    ref_loss: torch.Tensor,
) -> dict:
    cosine = torch.nn.functional.cosine_similarity(embedding.double(), ref_embedding.double())
    l2 = (embedding.double() - ref_embedding.double()).norm(dim=1) / ref_embedding.double().norm(dim=1)
    loss_err = (loss.double() - ref_loss.double()).abs() / ref_loss.double().abs()
    return {
        "way": name,
        "cos_min": cosine.min().item(),
        "l2_max": l2.max().item(),
        "loss_max": loss_err.max().item(),
        "mask": mask_same,
    }


def run(args: argparse.Namespace) -> list[dict]:
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    with tempfile.TemporaryDirectory() as folder:
        torch.manual_seed(args.seed)
        reference = transformers.ViTMAEForPreTraining(transformers.ViTMAEConfig())
        randomise(reference, args.seed)
        reference.save_pretrained(folder)
        vitmae.ViTImageProcessor(**MAE_PROCESSOR, do_convert_rgb=True).save_pretrained(folder)
        processor = vitmae.ViTImageProcessor.from_pretrained(folder)
        pixels = processor(photographs())["pixel_values"].to(device)
        noise = torch.rand(len(pixels), 196, generator=torch.Generator().manual_seed(args.seed)).to(device)

        def transformers_way(dtype: torch.dtype):
            model = transformers.ViTMAEForPreTraining.from_pretrained(folder, attn_implementation="sdpa", dtype=dtype)
            model = model.to(device).eval()
            encoder = transformers.ViTMAEModel.from_pretrained(
                folder, mask_ratio=0.0, attn_implementation="sdpa", dtype=dtype
            )
            encoder = encoder.to(device).eval()
            with torch.inference_mode():
                out = model(pixels.to(dtype), noise=noise)
                enc = encoder(pixels.to(dtype))
                # transformers shuffles even at mask ratio 0: put the tokens back in patch order before pooling.
                tokens = enc.last_hidden_state[:, 1:]
                order = enc.ids_restore[..., None].expand(-1, -1, tokens.shape[-1])
                embedding = torch.gather(tokens, 1, order).float().mean(dim=1)
                loss = per_sample_loss(model, pixels.to(dtype), out.logits, out.mask)
            return embedding, loss, out.mask, out.ids_restore

        def vitmae_way(dtype: torch.dtype, compiled: bool):
            model = vitmae.ViTMAEForPreTraining.from_pretrained(folder, dtype=dtype, device=device).eval()
            encoder = vitmae.ViTMAEModel.from_pretrained(folder, dtype=dtype, device=device).eval()
            if compiled:
                model, encoder = (
                    torch.compile(model, dynamic=True),
                    torch.compile(encoder, dynamic=True),
                )  # as the actor does
            with torch.inference_mode():
                out = model(pixels.to(dtype), noise=noise)
                embedding = encoder(pixels.to(dtype), mask_ratio=0.0).last_hidden_state[:, 1:].float().mean(dim=1)
            return embedding, out.per_sample_loss, out.mask, out.ids_restore

        ref_embedding, ref_loss, ref_mask, ref_ids = transformers_way(torch.float32)
        ways = {
            "vitmae fp32": lambda: vitmae_way(torch.float32, False),
            "transformers bf16": lambda: transformers_way(torch.bfloat16),
            "vitmae bf16": lambda: vitmae_way(torch.bfloat16, False),
        }
        if args.compile:
            ways["vitmae bf16 compiled"] = lambda: vitmae_way(torch.bfloat16, True)
        rows = []
        for name, way in ways.items():
            embedding, loss, mask, ids = way()
            same = bool(torch.equal(mask.float(), ref_mask.float()) and torch.equal(ids, ref_ids))
            rows.append(compare(name, embedding, loss, same, ref_embedding, ref_loss))
            logger.info("%s", rows[-1])
    return rows


def per_sample_loss(model, pixels: torch.Tensor, logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """transformers' loss per image (it returns only the batch mean), from its own patchify, in float32."""
    target = model.patchify(pixels).float()
    if model.config.norm_pix_loss:
        target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1.0e-6) ** 0.5
    per_patch = ((logits.float() - target) ** 2).mean(dim=-1)
    return (per_patch * mask).sum(dim=1) / mask.sum(dim=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compile", action="store_true", help="also compare vitmae under torch.compile")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rows = run(args)
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(
        f"\nViT-B/16 MAE, random weights, {len(photographs())} photographs; {name} (torch {torch.__version__}, "
        f"transformers {transformers.__version__}); reference: transformers float32"
    )
    print(
        f"{'way':22} {'embedding cos min':>18} {'embedding rel L2 max':>21} "
        f"{'loss rel err max':>17} {'mask, ids_restore':>18}"
    )
    for r in rows:
        print(
            f"{r['way']:22} {r['cos_min']:18.6f} {r['l2_max']:21.2e} {r['loss_max']:17.2e} "
            f"{'same' if r['mask'] else 'DIFFERENT':>18}"
        )


if __name__ == "__main__":
    main()
