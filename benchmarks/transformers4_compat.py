"""Do checkpoints that `vitmae` saves load in transformers 4.x, with the same outputs?

Saves a random `ViTMAEForPreTraining` (with `norm_pix_loss` and class labels) and a `ViTForImageClassification` with
this project's `save_pretrained`, computes their outputs here, then loads both folders with the last transformers
4.x release in a throwaway virtual environment (torch pinned as in constraints.txt) and compares. Prints one line per
model and exits 1 on any mismatch.

    python -m benchmarks.transformers4_compat [--transformers 4.57.6] [--venv /tmp/vitmae-tf4]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

import vitmae
from benchmarks.common import ROOT

GEOMETRY = dict(
    hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, image_size=32, patch_size=8
)
LOAD = """
import json, sys
import numpy as np, torch, transformers
folder = sys.argv[1]
data = np.load(f"{folder}/inputs.npz")
pixels, noise = torch.from_numpy(data["pixels"]), torch.from_numpy(data["noise"])
mae = transformers.ViTMAEForPreTraining.from_pretrained(f"{folder}/mae").eval()
vit = transformers.ViTForImageClassification.from_pretrained(f"{folder}/vit").eval()
with torch.no_grad():
    out = mae(pixel_values=pixels, noise=noise)
    logits = vit(pixel_values=pixels).logits
np.savez(f"{folder}/theirs.npz", mae_logits=out.logits.numpy(), mae_loss=out.loss.numpy(), vit_logits=logits.numpy())
print(json.dumps({"transformers": transformers.__version__, "torch": torch.__version__,
                  "mae_labels": mae.config.id2label, "vit_labels": vit.config.id2label}))
"""


def environment(venv: Path, version: str) -> Path:
    """The throwaway environment's python, made on first use, with constraints.txt's torch (the CPU wheel)."""
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pins = (ROOT / "constraints.txt").read_text().splitlines()
    torch_pin = next(line.strip() for line in pins if line.strip().startswith("torch=="))
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            torch_pin,
            f"transformers=={version}",
        ],
        check=True,
    )
    return python


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--transformers", default="4.57.6", help="the transformers release to load with (default %(default)s)"
    )
    parser.add_argument(
        "--venv", default=str(Path(tempfile.gettempdir()) / "vitmae-transformers4"), help="throwaway venv"
    )
    args = parser.parse_args()
    python = environment(Path(args.venv), args.transformers)
    torch.manual_seed(0)
    labels = {0: "normal", 1: "defect"}
    mae = vitmae.ViTMAEForPreTraining(
        vitmae.ViTMAEConfig(
            **GEOMETRY,
            decoder_hidden_size=32,
            decoder_num_hidden_layers=1,
            decoder_num_attention_heads=2,
            decoder_intermediate_size=64,
            norm_pix_loss=True,
            id2label=labels,
        )
    ).eval()
    vit = vitmae.ViTForImageClassification(vitmae.ViTConfig(**GEOMETRY, id2label=labels)).eval()
    pixels, noise = torch.randn(3, 3, 32, 32), torch.rand(3, 16)
    with tempfile.TemporaryDirectory() as tmp:
        mae.save_pretrained(f"{tmp}/mae")
        vit.save_pretrained(f"{tmp}/vit")
        np.savez(f"{tmp}/inputs.npz", pixels=pixels.numpy(), noise=noise.numpy())
        done = subprocess.run([str(python), "-c", LOAD, tmp], capture_output=True, text=True)
        if done.returncode:
            print(done.stderr[-3000:])
            return 1
        info = json.loads(done.stdout.strip().splitlines()[-1])
        theirs = np.load(f"{tmp}/theirs.npz")
    with torch.no_grad():
        ours = mae(pixels, noise=noise)
        logits = vit(pixels).logits
    print(f"loaded with transformers {info['transformers']} (torch {info['torch']}); saved by vitmae here")
    checks = {
        "ViTMAEForPreTraining logits": np.abs(ours.logits.numpy() - theirs["mae_logits"]).max(),
        "ViTMAEForPreTraining loss": abs(ours.loss.item() - float(theirs["mae_loss"])),
        "ViTForImageClassification logits": np.abs(logits.numpy() - theirs["vit_logits"]).max(),
    }
    failed = False
    for name, difference in checks.items():
        ok = difference < 1e-4
        failed |= not ok
        print(f"{name:34} max abs difference {difference:.2e}  {'ok' if ok else 'MISMATCH'}")
    for name in ("mae_labels", "vit_labels"):
        same = {int(k): v for k, v in info[name].items()} == labels
        failed |= not same
        print(f"{name:34} {info[name]}  {'ok' if same else 'MISMATCH'}")
    return int(failed)


if __name__ == "__main__":
    sys.exit(main())
