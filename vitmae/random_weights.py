"""Models with every parameter drawn at random at a trained model's scale, for parity checks and benchmarks."""

from __future__ import annotations

import torch


def random_model(model_class: type[torch.nn.Module], config) -> torch.nn.Module:
    """`model_class(config)` with every parameter and buffer drawn at random (from torch's global generator).

    Fresh models leave biases, LayerNorms and tokens constant, so a parity check on one cannot see them swapped or
    dropped. Matrices get N(0, 1.5^2 / fan_in), large enough that attention is far from uniform at any width and a
    wrong scale shows; LayerNorm weights get 1 + N(0, 0.1^2); everything else (biases, tokens, position tables) N(0, 1).
    Built on the meta device, because the model's own initialisation would be overwritten and costs seconds at base.
    Any `torch.nn.Module` class built from one config works: vitmae's and transformers' alike.

    Args:
        model_class: the class to build, e.g. `vitmae.ViTMAEForPreTraining`.
        config: its config.

    Returns:
        The model on the CPU, in training mode, as the constructor leaves it.
    """
    with torch.device("meta"):
        model = model_class(config)
    model = model.to_empty(device="cpu")
    with torch.no_grad():
        for module in model.modules():
            for name, p in module.named_parameters(recurse=False):
                if isinstance(module, torch.nn.LayerNorm) and name == "weight":
                    p.copy_(1 + 0.1 * torch.randn_like(p))
                elif name == "weight" and p.ndim >= 2:
                    p.normal_(std=1.5 / p[0].numel() ** 0.5)
                else:
                    p.normal_()
        for buffer in model.buffers():
            buffer.normal_()
    return model
