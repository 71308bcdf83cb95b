"""Fixed 2D sin-cos position embeddings, laid out as the pretrained MAE weights expect."""

from __future__ import annotations

import torch

from vitmae.errors import InvalidInput


def sincos_pos_embed(grid_size: int, dim: int, cls_token: bool = True) -> torch.Tensor:
    """Sin-cos embeddings of a square patch grid, in the MAE layout.

    Each position (row h, column w) gets `[sin(w*f), cos(w*f), sin(h*f), cos(h*f)]` with D/4
    frequencies f = 10000^(-i/(D/4)). The column comes first because the original MAE code built its
    grid with `meshgrid(grid_w, grid_h)`; the released weights (and transformers) depend on it.

    Args:
        grid_size: patches per side G.
        dim: embedding width D, a multiple of 4.
        cls_token: prepend a zero row for the class token.

    Returns:
        float32 [G*G (+1), D] on the default device, rows in row-major patch order.
    """
    if dim % 4:
        raise InvalidInput(f"position embedding width must be a multiple of 4, got {dim}")
    # Computed on the CPU in float64, then put on the default device: arange on "meta" (where from_pretrained
    # builds) would import torch._dynamo, seconds for a table that the checkpoint replaces anyway.
    cpu64 = {"dtype": torch.float64, "device": "cpu"}
    omega = 1.0 / 10000.0 ** (torch.arange(dim // 4, **cpu64) / (dim // 4))
    rows, cols = torch.meshgrid(torch.arange(grid_size, **cpu64), torch.arange(grid_size, **cpu64), indexing="ij")
    emb_w = cols.flatten().outer(omega)  # [G*G, D/4]
    emb_h = rows.flatten().outer(omega)
    table = torch.cat([emb_w.sin(), emb_w.cos(), emb_h.sin(), emb_h.cos()], dim=1)
    if cls_token:
        table = torch.cat([torch.zeros(1, dim, **cpu64), table], dim=0)
    return table.float().to(torch.get_default_device())
