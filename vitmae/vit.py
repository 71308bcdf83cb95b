"""ViT (Dosovitskiy et al.): encoder with learned positions, pooler, and image classification head."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vitmae.checkpoint import PretrainedMixin
from vitmae.config import ViTConfig
from vitmae.layers import PatchEmbed, activation, build_blocks, position_table, run_blocks


@dataclass
class ViTModelOutput:
    """What `ViTModel` returns.

    Attributes:
        last_hidden_state: [N, 1 + L, D] after the final LayerNorm, class token first.
        pooler_output: [N, pooler_output_size], tanh(dense(class token)); None without a pooler.
        hidden_states: if asked, the embedding output and each block's output, [N, 1 + L, D] each.
        attentions: if asked, each block's attention weights [N, H, 1 + L, 1 + L].
    """

    last_hidden_state: torch.Tensor
    pooler_output: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class ImageClassifierOutput:
    """What `ViTForImageClassification` returns.

    Attributes:
        logits: [N, num_labels], from the class token of the last hidden state.
        hidden_states, attentions: as in `ViTModelOutput`.
    """

    logits: torch.Tensor
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


class ViTPooler(nn.Module):
    """dense + activation on the class token."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.pooler_output_size or config.hidden_size)
        self.activation = activation(config.pooler_act)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """[N, 1 + L, D] -> [N, pooler_output_size]."""
        return self.activation(self.dense(hidden_states[:, 0]))


class ViTModel(PretrainedMixin, nn.Module):
    """ViT encoder with learned position embeddings and an optional pooler.

    Args:
        config: model geometry.
        add_pooling_layer: build the pooler (False for checkpoints saved from a classifier).
    """

    config_class = ViTConfig

    def __init__(self, config: ViTConfig, add_pooling_layer: bool = True) -> None:
        super().__init__()
        self.config = config
        dim = config.hidden_size
        self.patch_embed = PatchEmbed(config.patch_size, config.num_channels, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, config.num_patches + 1, dim))
        self.drop = nn.Dropout(config.hidden_dropout_prob) if config.hidden_dropout_prob > 0 else nn.Identity()
        self.blocks = build_blocks(
            config, dim, config.num_hidden_layers, config.num_attention_heads, config.intermediate_size
        )
        self.norm = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.pooler = ViTPooler(config) if add_pooling_layer else None
        self._init_weights()

    def _init_weights(self) -> None:
        if any(p.is_meta for p in self.parameters()):  # built by from_pretrained, which loads every weight
            return
        std = self.config.initializer_range
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                nn.init.trunc_normal_(m.weight, std=std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.trunc_normal_(self.pos_embed, std=std)
        nn.init.trunc_normal_(self.cls_token, std=std)

    def forward(
        self,
        pixel_values: torch.Tensor,
        interpolate_pos_encoding: bool = False,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> ViTModelOutput:
        """pixel_values: [N, C, H, W] normalised images; H = W = `config.image_size` unless interpolating."""
        cfg = self.config
        height, width = pixel_values.shape[2:]
        x = self.patch_embed(pixel_values)
        pos = position_table(self.pos_embed, height, width, cfg.image_size, cfg.patch_size, interpolate_pos_encoding)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1) + pos
        x, hidden_states, attentions = run_blocks(self.blocks, self.drop(x), output_hidden_states, output_attentions)
        x = self.norm(x)
        pooled = self.pooler(x) if self.pooler is not None else None
        return ViTModelOutput(x, pooled, hidden_states, attentions)


class ViTForImageClassification(PretrainedMixin, nn.Module):
    """ViT encoder (no pooler) and a linear classifier on the class token."""

    config_class = ViTConfig
    encoder_prefix = "vit."

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.config = config
        self.vit = ViTModel(config, add_pooling_layer=False)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        nn.init.trunc_normal_(self.classifier.weight, std=config.initializer_range)
        nn.init.zeros_(self.classifier.bias)

    def forward(
        self,
        pixel_values: torch.Tensor,
        interpolate_pos_encoding: bool = False,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> ImageClassifierOutput:
        """pixel_values: [N, C, H, W] -> logits [N, num_labels]."""
        out = self.vit(pixel_values, interpolate_pos_encoding, output_hidden_states, output_attentions)
        return ImageClassifierOutput(self.classifier(out.last_hidden_state[:, 0]), out.hidden_states, out.attentions)
