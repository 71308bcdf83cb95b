"""Weight-name conversion between the Hugging Face checkpoint layout and this package's modules.

Hugging Face (hub files, transformers 4.x and 5.x):  this package:
    [vit.]embeddings.patch_embeddings.projection.*    [vit.]patch_embed.proj.*
    [vit.]embeddings.cls_token / position_embeddings  [vit.]cls_token / pos_embed
    [vit.]encoder.layer.N.layernorm_before.*          [vit.]blocks.N.norm1.*
    ....attention.attention.{query,key,value}.*       ....attn.qkv.* (concatenated q, k, v)
    ....attention.output.dense.*                      ....attn.proj.*
    ....intermediate.dense.* / ....output.dense.*     ....mlp.fc1.* / ....mlp.fc2.*
    [vit.]layernorm.*                                 [vit.]norm.*
    decoder.decoder_layers.N.*                        decoder.blocks.N.*
Everything else (pooler, classifier, decoder embed/norm/pred, mask token) keeps its name.
transformers 5 writes decoder blocks as `decoder.decoder_encoder.layer.N`; both spellings load.
"""

from __future__ import annotations

import re

import torch

from vitmae.errors import InvalidInput

# (Hugging Face pattern, this package's replacement), applied in order to each key.
_HF_TO_OURS = [
    (r"embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
    (r"embeddings\.cls_token$", "cls_token"),
    (r"embeddings\.position_embeddings$", "pos_embed"),
    (r"^decoder\.(?:decoder_layers|decoder_encoder\.layer)\.(\d+)\.", r"decoder.blocks.\1."),
    (r"encoder\.layer\.(\d+)\.", r"blocks.\1."),
    (r"\.layernorm_before\.", ".norm1."),
    (r"\.layernorm_after\.", ".norm2."),
    (r"\.attention\.output\.dense\.", ".attn.proj."),
    (r"\.attention\.attention\.(query|key|value)\.", r".attn.\1."),
    (r"\.intermediate\.dense\.", ".mlp.fc1."),
    (r"\.output\.dense\.", ".mlp.fc2."),
    (r"^(vit\.)?layernorm\.", r"\1norm."),
]

_OURS_TO_HF = [
    (r"patch_embed\.proj\.", "embeddings.patch_embeddings.projection."),
    (r"^(vit\.)?cls_token$", r"\1embeddings.cls_token"),
    (r"^(vit\.)?pos_embed$", r"\1embeddings.position_embeddings"),
    (r"^decoder\.blocks\.(\d+)\.", r"decoder.decoder_layers.\1."),
    (r"^(vit\.)?blocks\.(\d+)\.", r"\1encoder.layer.\2."),
    (r"\.norm1\.", ".layernorm_before."),
    (r"\.norm2\.", ".layernorm_after."),
    (r"\.attn\.proj\.", ".attention.output.dense."),
    (r"\.attn\.(query|key|value)\.", r".attention.attention.\1."),
    (r"\.mlp\.fc1\.", ".intermediate.dense."),
    (r"\.mlp\.fc2\.", ".output.dense."),
    (r"^(vit\.)?norm\.", r"\1layernorm."),
]

_QKV = ("query", "key", "value")


def _rename(key: str, table: list[tuple[str, str]]) -> str:
    for pattern, replacement in table:
        key = re.sub(pattern, replacement, key)
    return key


def hf_to_vitmae(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Renames a Hugging Face state dict to this package's names and fuses q, k, v into one qkv."""
    out: dict[str, torch.Tensor] = {}
    split: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in state.items():
        new = _rename(key, _HF_TO_OURS)
        match = re.search(r"\.attn\.(query|key|value)\.(weight|bias)$", new)
        if match:
            fused = new[: match.start()] + f".attn.qkv.{match.group(2)}"
            split.setdefault(fused, {})[match.group(1)] = tensor
        else:
            out[new] = tensor
    for fused, parts in split.items():
        if set(parts) != set(_QKV):
            missing = [f"{fused.replace('.attn.qkv.', f'.attn.{p}.')}" for p in _QKV if p not in parts]
            raise InvalidInput(f"checkpoint is missing attention weights: {', '.join(missing)}")
        out[fused] = torch.cat([parts[p] for p in _QKV], dim=0)
    return out


def vitmae_to_hf(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of `hf_to_vitmae`: Hugging Face names, qkv split back into query, key and value."""
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        match = re.search(r"\.attn\.qkv\.(weight|bias)$", key)
        if match:
            for part, chunk in zip(_QKV, tensor.chunk(3, dim=0)):
                out[_rename(f"{key[: match.start()]}.attn.{part}.{match.group(1)}", _OURS_TO_HF)] = chunk
        else:
            out[_rename(key, _OURS_TO_HF)] = tensor
    return out
