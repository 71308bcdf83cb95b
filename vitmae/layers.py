"""Transformer building blocks shared by ViT and ViTMAE: patch embedding, attention, MLP, block."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vitmae.config import EncoderConfig
from vitmae.errors import InvalidInput

_ACTIVATIONS = {
    "gelu": lambda: nn.GELU(),
    "gelu_new": lambda: nn.GELU(approximate="tanh"),
    "gelu_pytorch_tanh": lambda: nn.GELU(approximate="tanh"),
    "relu": lambda: nn.ReLU(),
    "silu": lambda: nn.SiLU(),
    "swish": lambda: nn.SiLU(),
    "tanh": lambda: nn.Tanh(),
}


def activation(name: str) -> nn.Module:
    """The activation module for a Hugging Face `hidden_act`/`pooler_act` name."""
    if name not in _ACTIVATIONS:
        raise InvalidInput(f"unsupported activation {name!r}; expected one of {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]()


class PatchEmbed(nn.Module):
    """Cuts an image into non-overlapping patches and projects each to a token.

    Args:
        patch_size: side of a square patch in pixels.
        num_channels: input channels C.
        dim: token width D.
    """

    def __init__(self, patch_size: int, num_channels: int, dim: int) -> None:
        super().__init__()
        self.num_channels = num_channels
        self.patch_size = patch_size
        self.proj = nn.Conv2d(num_channels, dim, kernel_size=patch_size, stride=patch_size)  # checkpoints' layout

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """pixel_values: [N, C, H, W] -> tokens [N, L, D] in row-major patch order.

        On a GPU the convolution runs as `as_gemm`, because cuDNN's kernel for it was measured several times slower
        than the GEMM (benchmarks/RESULTS.md). Elsewhere it stays the convolution that transformers
        runs, whose tokens on the CPU are then transformers' to the bit.
        """
        if pixel_values.ndim != 4 or pixel_values.shape[1] != self.num_channels:
            raise ValueError(
                f"expected pixel_values of shape (batch, {self.num_channels}, height, width), "
                f"got {tuple(pixel_values.shape)}"
            )
        if min(pixel_values.shape[2:]) < self.patch_size:
            raise ValueError(
                f"expected images of at least {self.patch_size}x{self.patch_size} pixels, "
                f"got {pixel_values.shape[2]}x{pixel_values.shape[3]}"
            )
        if pixel_values.is_cuda:
            return self.as_gemm(pixel_values)
        return self.proj(pixel_values).flatten(2).transpose(1, 2)

    def as_gemm(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The same convolution, whose kernel is its stride, as one GEMM over the cut-out patches: [N, C, H, W]
        -> [N, L, D]. As the convolution does, pixels past the last whole patch are dropped."""
        n, c, height, width = pixel_values.shape
        p = self.patch_size
        rows, cols = height // p, width // p
        patches = pixel_values[:, :, : rows * p, : cols * p].reshape(n, c, rows, p, cols, p).permute(0, 2, 4, 1, 3, 5)
        return F.linear(patches.reshape(n, rows * cols, c * p * p), self.proj.weight.flatten(1), self.proj.bias)


class Attention(nn.Module):
    """Multi-head self-attention with one fused qkv projection.

    The fused path calls `scaled_dot_product_attention`; the eager path (taken when the caller needs
    the attention weights) computes softmax in float32 as transformers does.

    Args:
        dim: token width D.
        num_heads: heads H; head width is D / H.
        qkv_bias: bias on the fused qkv projection.
        attn_drop: dropout on attention weights while training.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.attn_drop = attn_drop
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x: [N, L, D] -> ([N, L, D], attention weights [N, H, L, L] or None)."""
        n, length, dim = x.shape
        q, k, v = self.qkv(x).view(n, length, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        drop = self.attn_drop if self.training else 0.0
        weights = None
        if need_weights:
            weights = torch.softmax((q @ k.transpose(-2, -1)) * self.scale, dim=-1, dtype=torch.float32).to(q.dtype)
            out = F.dropout(weights, p=drop, training=self.training) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)
        return self.proj(out.transpose(1, 2).reshape(n, length, dim)), weights


class Mlp(nn.Module):
    """Two linear layers with an activation between: D -> hidden -> D."""

    def __init__(self, dim: int, hidden: int, act: str) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = activation(act)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x)).

    Args:
        dim: token width D.
        num_heads: attention heads.
        mlp_hidden: MLP hidden width.
        act: MLP activation name.
        qkv_bias: bias on the qkv projection.
        eps: LayerNorm epsilon.
        drop: dropout after attention and MLP while training.
        attn_drop: dropout on attention weights while training.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_hidden: int,
        act: str = "gelu",
        qkv_bias: bool = True,
        eps: float = 1e-12,
        drop: float = 0.0,
        attn_drop: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, mlp_hidden, act)
        self.drop = nn.Dropout(drop) if drop > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x: [N, L, D] -> ([N, L, D], attention weights [N, H, L, L] or None)."""
        attended, weights = self.attn(self.norm1(x), need_weights)
        x = x + self.drop(attended)
        x = x + self.drop(self.mlp(self.norm2(x)))
        return x, weights


def build_blocks(config: EncoderConfig, dim: int, depth: int, heads: int, mlp_hidden: int) -> nn.ModuleList:
    """`depth` blocks of width `dim` with the config's activation, qkv bias, LayerNorm epsilon and dropouts:
    the ViT and MAE encoders (the config's own sizes) and the MAE decoder (its decoder sizes)."""
    return nn.ModuleList(
        Block(
            dim,
            heads,
            mlp_hidden,
            act=config.hidden_act,
            qkv_bias=config.qkv_bias,
            eps=config.layer_norm_eps,
            drop=config.hidden_dropout_prob,
            attn_drop=config.attention_probs_dropout_prob,
        )
        for _ in range(depth)
    )


def run_blocks(
    blocks: nn.ModuleList, x: torch.Tensor, output_hidden_states: bool, output_attentions: bool
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None, tuple[torch.Tensor, ...] | None]:
    """Runs x: [N, L, D] through `blocks`.

    Returns:
        The last block's output [N, L, D]; if asked, the hidden states (the input, then each block's
        output: num_blocks + 1 tensors [N, L, D]) and each block's attention weights [N, H, L, L].
    """
    hidden_states = [x] if output_hidden_states else None
    attentions = [] if output_attentions else None
    for block in blocks:
        x, weights = block(x, need_weights=output_attentions)
        if hidden_states is not None:
            hidden_states.append(x)
        if attentions is not None:
            attentions.append(weights)
    return (
        x,
        tuple(hidden_states) if hidden_states is not None else None,
        tuple(attentions) if attentions is not None else None,
    )


def interpolate_pos_embed(pos_embed: torch.Tensor, new_grid: tuple[int, int]) -> torch.Tensor:
    """Resizes learned or fixed 2D position embeddings to another patch grid, bicubic as transformers.

    Args:
        pos_embed: [1, 1 + G*G, D], the class token's row first, then a square G x G grid.
        new_grid: (rows, cols) of the new patch grid.

    Returns:
        [1, 1 + rows*cols, D].
    """
    cls_pos, patch_pos = pos_embed[:, :1], pos_embed[:, 1:]
    dim = pos_embed.shape[-1]
    side = int(math.sqrt(patch_pos.shape[1]))
    grid = patch_pos.reshape(1, side, side, dim).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=new_grid, mode="bicubic", align_corners=False)
    return torch.cat((cls_pos, grid.permute(0, 2, 3, 1).reshape(1, -1, dim)), dim=1)


def position_table(
    pos_embed: torch.Tensor, height: int, width: int, image_size: int, patch_size: int, interpolate: bool
) -> torch.Tensor:
    """The position embeddings [1, 1 + L, D] for an image of height x width pixels.

    Other sizes than `image_size` need `interpolate` (transformers' `interpolate_pos_encoding`).
    """
    if (height, width) == (image_size, image_size):
        return pos_embed
    if not interpolate:
        raise ValueError(
            f"expected images of {image_size}x{image_size} pixels, got {height}x{width}; "
            "pass interpolate_pos_encoding=True for other sizes"
        )
    return interpolate_pos_embed(pos_embed, (height // patch_size, width // patch_size))
