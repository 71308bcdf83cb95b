"""ViTMAE (He et al., "Masked Autoencoders Are Scalable Vision Learners"): encoder, decoder, loss."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vitmae.checkpoint import PretrainedMixin
from vitmae.config import ViTMAEConfig
from vitmae.layers import PatchEmbed, build_blocks, position_table, run_blocks
from vitmae.pos_embed import sincos_pos_embed


@dataclass
class ViTMAEModelOutput:
    """What `ViTMAEModel` returns.

    Attributes:
        last_hidden_state: [N, 1 + L_keep, D] after the final LayerNorm; token 0 is the class token,
            the rest are the kept patches in shuffled order (original order when nothing is masked).
        mask: float [N, L], 1 where a patch was masked, in original patch order.
        ids_restore: long [N, L], the permutation that puts shuffled tokens back in patch order.
        hidden_states: if asked, the embedding output and each block's output, [N, 1 + L_keep, D] each.
        attentions: if asked, each block's attention weights [N, H, 1 + L_keep, 1 + L_keep].
    """

    last_hidden_state: torch.Tensor
    mask: torch.Tensor
    ids_restore: torch.Tensor
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class ViTMAEForPreTrainingOutput:
    """What `ViTMAEForPreTraining` returns.

    Attributes:
        loss: scalar, mean squared error over masked patches of the batch (== per_sample_loss.mean()).
        per_sample_loss: float32 [N], each image's mean squared error over its masked patches.
        per_patch_loss: float32 [N, L], each patch's mean squared error, masked or not (in original patch order).
        logits: [N, L, p*p*C], the reconstruction of every patch in original order.
        mask, ids_restore, hidden_states, attentions: as in `ViTMAEModelOutput`.
    """

    loss: torch.Tensor
    per_sample_loss: torch.Tensor
    per_patch_loss: torch.Tensor
    logits: torch.Tensor
    mask: torch.Tensor
    ids_restore: torch.Tensor
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


def random_masking(
    x: torch.Tensor, mask_ratio: float, noise: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keeps the (1 - mask_ratio) * L patches with the lowest noise, as transformers and the MAE code.

    Args:
        x: [N, L, D] patch tokens.
        mask_ratio: fraction of patches to drop.
        noise: [N, L]; the same noise gives the same mask. Drawn uniformly when None.

    Returns:
        kept tokens [N, L_keep, D], mask [N, L] (1 = masked), ids_restore [N, L].
    """
    n, length, dim = x.shape
    if noise is None and mask_ratio == 0:
        # Nothing is masked: keep the original order and pay no gather.
        ids_restore = torch.arange(length, device=x.device).expand(n, length)
        return x, torch.zeros(n, length, device=x.device), ids_restore
    if noise is None:
        noise = torch.rand(n, length, device=x.device)
    elif noise.shape != (n, length):
        raise ValueError(f"expected noise of shape {(n, length)}, got {tuple(noise.shape)}")
    len_keep = int(length * (1 - mask_ratio))
    ids_shuffle = torch.argsort(noise.to(x.device), dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    kept = torch.gather(x, 1, ids_shuffle[:, :len_keep, None].expand(-1, -1, dim))
    mask = torch.ones(n, length, device=x.device)
    mask[:, :len_keep] = 0
    return kept, torch.gather(mask, 1, ids_restore), ids_restore


def _init_weights(module: nn.Module, std: float) -> None:
    """MAE initialisation: xavier-uniform linears and patch projection, normal tokens.

    A model built on the meta device (as `from_pretrained` does, before loading every weight) is left as is.
    """
    if any(p.is_meta for p in module.parameters()):
        return
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Conv2d):
            # The patch projection is a linear map of a flattened patch, so initialise it as one.
            nn.init.xavier_uniform_(m.weight.view(m.weight.shape[0], -1))
            nn.init.zeros_(m.bias)
    for name, p in module.named_parameters():
        if name.endswith(("cls_token", "mask_token")):
            nn.init.normal_(p, std=std)


class ViTMAEModel(PretrainedMixin, nn.Module):
    """The MAE encoder: patch embedding, fixed sin-cos positions, masking, blocks, final LayerNorm.

    Args:
        config: model geometry and default mask ratio.
    """

    config_class = ViTMAEConfig

    def __init__(self, config: ViTMAEConfig) -> None:
        super().__init__()
        self.config = config
        self.patch_embed = PatchEmbed(config.patch_size, config.num_channels, config.hidden_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        grid = config.image_size // config.patch_size
        self.register_buffer("pos_embed", sincos_pos_embed(grid, config.hidden_size)[None])
        self.blocks = build_blocks(
            config, config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.intermediate_size
        )
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        _init_weights(self, config.initializer_range)

    def forward(
        self,
        pixel_values: torch.Tensor,
        noise: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        mask_ratio: float | None = None,
    ) -> ViTMAEModelOutput:
        """Encodes the visible patches.

        Args:
            pixel_values: [N, C, H, W] normalised images.
            noise: [N, L] masking noise, as in transformers; random when None.
            interpolate_pos_encoding: accept sizes other than `config.image_size`.
            output_hidden_states: also return every block's output.
            output_attentions: also return attention weights (takes the eager attention path).
            mask_ratio: overrides `config.mask_ratio` for this call; 0 gives unshuffled embeddings.
        """
        ratio = self.config.mask_ratio if mask_ratio is None else mask_ratio
        x = self.patch_embed(pixel_values)
        cfg = self.config
        height, width = pixel_values.shape[2:]
        pos = position_table(self.pos_embed, height, width, cfg.image_size, cfg.patch_size, interpolate_pos_encoding)
        x, mask, ids_restore = random_masking(x + pos[:, 1:], ratio, noise)
        cls = (self.cls_token + pos[:, :1]).expand(x.shape[0], -1, -1)
        x, hidden_states, attentions = run_blocks(
            self.blocks, torch.cat((cls, x), dim=1), output_hidden_states, output_attentions
        )
        return ViTMAEModelOutput(self.norm(x), mask, ids_restore, hidden_states, attentions)


class ViTMAEDecoder(nn.Module):
    """The MAE decoder: fills masked positions with a mask token and predicts every patch's pixels."""

    def __init__(self, config: ViTMAEConfig) -> None:
        super().__init__()
        dim = config.decoder_hidden_size
        self.decoder_embed = nn.Linear(config.hidden_size, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        grid = config.image_size // config.patch_size
        self.register_buffer("decoder_pos_embed", sincos_pos_embed(grid, dim)[None])
        self.blocks = build_blocks(
            config,
            dim,
            config.decoder_num_hidden_layers,
            config.decoder_num_attention_heads,
            config.decoder_intermediate_size,
        )
        self.decoder_norm = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.decoder_pred = nn.Linear(dim, config.patch_size**2 * config.num_channels)

    def forward(
        self, latent: torch.Tensor, ids_restore: torch.Tensor, interpolate_pos_encoding: bool = False
    ) -> torch.Tensor:
        """latent: [N, 1 + L_keep, D_enc], ids_restore: [N, L] -> pixel predictions [N, L, p*p*C]."""
        x = self.decoder_embed(latent)
        n, length, dim = x.shape[0], ids_restore.shape[1], x.shape[2]
        tokens = torch.cat([x[:, 1:], self.mask_token.expand(n, length + 1 - x.shape[1], -1)], dim=1)
        tokens = torch.gather(tokens, 1, ids_restore[..., None].expand(-1, -1, dim))
        x = torch.cat([x[:, :1], tokens], dim=1)
        pos = self.decoder_pos_embed
        if interpolate_pos_encoding:
            # transformers stretches the decoder table along the sequence (1 x L), not as a 2D grid.
            table = pos[:, 1:].reshape(1, 1, -1, dim).permute(0, 3, 1, 2)
            table = nn.functional.interpolate(table, size=(1, length), mode="bicubic", align_corners=False)
            pos = torch.cat((pos[:, :1], table.permute(0, 2, 3, 1).reshape(1, -1, dim)), dim=1)
        x, _, _ = run_blocks(self.blocks, x + pos, False, False)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:]


class ViTMAEForPreTraining(PretrainedMixin, nn.Module):
    """Encoder, decoder and the masked-patch reconstruction loss of MAE pre-training.

    Args:
        config: model geometry, default mask ratio and `norm_pix_loss`.
    """

    config_class = ViTMAEConfig
    encoder_prefix = "vit."

    def __init__(self, config: ViTMAEConfig) -> None:
        super().__init__()
        self.config = config
        self.vit = ViTMAEModel(config)
        self.decoder = ViTMAEDecoder(config)
        _init_weights(self.decoder, config.initializer_range)

    def patchify(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        """[N, C, H, W] -> [N, (H/p)*(W/p), p*p*C], pixels of a patch in (row, col, channel) order."""
        p, c = self.config.patch_size, self.config.num_channels
        n, channels, height, width = pixel_values.shape
        if not interpolate_pos_encoding and (height != width or height % p):
            raise ValueError(f"expected square images with a side divisible by {p}, got {height}x{width}")
        if channels != c:
            raise ValueError(f"expected {c} channels, got {channels}")
        x = pixel_values.reshape(n, c, height // p, p, width // p, p).permute(0, 2, 4, 3, 5, 1)
        return x.reshape(n, (height // p) * (width // p), p * p * c)

    def unpatchify(self, patches: torch.Tensor, original_image_size: tuple[int, int] | None = None) -> torch.Tensor:
        """Inverse of `patchify`: [N, L, p*p*C] -> [N, C, H, W] (H, W default to `config.image_size`)."""
        p, c = self.config.patch_size, self.config.num_channels
        height, width = original_image_size or (self.config.image_size, self.config.image_size)
        rows, cols = height // p, width // p
        if rows * cols != patches.shape[1]:
            raise ValueError(f"expected {rows}*{cols} patches for a {height}x{width} image, got {patches.shape[1]}")
        x = patches.reshape(patches.shape[0], rows, cols, p, p, c).permute(0, 5, 1, 3, 2, 4)
        return x.reshape(patches.shape[0], c, rows * p, cols * p)

    def per_patch_loss(
        self, pixel_values: torch.Tensor, logits: torch.Tensor, interpolate_pos_encoding: bool = False
    ) -> torch.Tensor:
        """Each patch's mean squared error against its pixels (normalised per patch with `norm_pix_loss`), in
        float32: [N, L]."""
        target = self.patchify(pixel_values, interpolate_pos_encoding).float()
        if self.config.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1.0e-6) ** 0.5
        return ((logits.float() - target) ** 2).mean(dim=-1)

    @staticmethod
    def per_sample_loss(per_patch: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[N, L] per-patch losses and mask (1 = masked) -> [N], each image's mean over its masked patches."""
        return (per_patch * mask).sum(dim=1) / mask.sum(dim=1)

    def forward(
        self,
        pixel_values: torch.Tensor,
        noise: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        mask_ratio: float | None = None,
    ) -> ViTMAEForPreTrainingOutput:
        """Masks, encodes, decodes and scores; arguments as `ViTMAEModel.forward`."""
        enc = self.vit(
            pixel_values, noise, interpolate_pos_encoding, output_hidden_states, output_attentions, mask_ratio
        )
        logits = self.decoder(enc.last_hidden_state, enc.ids_restore, interpolate_pos_encoding)
        per_patch = self.per_patch_loss(pixel_values, logits, interpolate_pos_encoding)
        per_sample = self.per_sample_loss(per_patch, enc.mask)
        return ViTMAEForPreTrainingOutput(
            per_sample.mean(),
            per_sample,
            per_patch,
            logits,
            enc.mask,
            enc.ids_restore,
            enc.hidden_states,
            enc.attentions,
        )
