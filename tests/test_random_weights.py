"""vitmae.random_weights: every parameter random, at the scales its docstring gives, reproducible from the seed."""

from __future__ import annotations

import torch
import transformers
from conftest import TINY

import vitmae
from vitmae.random_weights import random_model

WIDE = dict(TINY, hidden_size=256, intermediate_size=512, num_attention_heads=4)


def test_no_parameter_or_buffer_keeps_a_constant_value():
    model = random_model(vitmae.ViTMAEForPreTraining, vitmae.ViTMAEConfig(**TINY))
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if tensor.numel() > 1:
            assert tensor.float().std() > 0, name


def test_matrices_layernorms_and_biases_are_drawn_at_their_scales():
    torch.manual_seed(0)
    model = random_model(vitmae.ViTMAEModel, vitmae.ViTMAEConfig(**WIDE))
    fc1 = model.blocks[0].mlp.fc1  # 256 -> 512
    torch.testing.assert_close(fc1.weight.std().item(), 1.5 / 256**0.5, rtol=0.05, atol=0)
    torch.testing.assert_close(fc1.bias.std().item(), 1.0, rtol=0.2, atol=0)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
    weights = torch.cat([m.weight.detach() for m in norms])
    torch.testing.assert_close(weights.mean().item(), 1.0, rtol=0, atol=0.02)
    torch.testing.assert_close(weights.std().item(), 0.1, rtol=0.1, atol=0)


def test_the_same_seed_draws_the_same_weights_for_transformers_classes_too():
    config = transformers.ViTMAEConfig(**TINY)
    torch.manual_seed(3)
    first = random_model(transformers.ViTMAEForPreTraining, config).state_dict()
    torch.manual_seed(3)
    second = random_model(transformers.ViTMAEForPreTraining, config).state_dict()
    torch.manual_seed(4)
    third = random_model(transformers.ViTMAEForPreTraining, config).state_dict()
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), name
    assert not torch.equal(first["vit.embeddings.cls_token"], third["vit.embeddings.cls_token"])
