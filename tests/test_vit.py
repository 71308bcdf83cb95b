"""Parity of vitmae's ViT (pooler, classifier, interpolation) with transformers."""

from __future__ import annotations

import pytest
import torch
import transformers
from conftest import BASE, TINY, vit_kwargs

import vitmae
from vitmae.random_weights import random_model

GEOMETRIES = {"tiny": vit_kwargs(TINY), "base": vit_kwargs(BASE)}


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_vit_model_pooler_matches_transformers(geometry, tmp_path):
    reference = random_model(transformers.ViTModel, transformers.ViTConfig(**GEOMETRIES[geometry])).eval()
    reference.save_pretrained(tmp_path)
    model = vitmae.ViTModel.from_pretrained(tmp_path)
    pixels = torch.randn(2, 3, reference.config.image_size, reference.config.image_size)
    with torch.no_grad():
        expected, got = reference(pixels, output_hidden_states=True), model(pixels, output_hidden_states=True)
    torch.testing.assert_close(got.last_hidden_state, expected.last_hidden_state, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(got.pooler_output, expected.pooler_output, atol=2e-5, rtol=1e-4)
    for ours, theirs in zip(got.hidden_states, expected.hidden_states, strict=True):
        torch.testing.assert_close(ours, theirs, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_classifier_logits_match_transformers_at_the_trained_and_a_larger_size(geometry, tmp_path):
    config = transformers.ViTConfig(**GEOMETRIES[geometry], num_labels=5)
    reference = random_model(transformers.ViTForImageClassification, config).eval()
    reference.save_pretrained(tmp_path)
    model = vitmae.ViTForImageClassification.from_pretrained(tmp_path)
    assert model.config.num_labels == 5
    for size in (config.image_size, config.image_size + 2 * config.patch_size):
        pixels = torch.randn(2, 3, size, size)
        with torch.no_grad():
            expected = reference(pixels, interpolate_pos_encoding=size != config.image_size).logits
            got = model(pixels, interpolate_pos_encoding=size != config.image_size).logits
        torch.testing.assert_close(
            got, expected, atol=2e-5, rtol=1e-4, msg=lambda m, size=size: f"at {size} pixels: {m}"
        )


def test_encoder_loads_from_a_classifier_checkpoint_only_without_pooler(tmp_path):
    transformers.ViTForImageClassification(transformers.ViTConfig(**vit_kwargs(TINY), num_labels=3)).save_pretrained(
        tmp_path
    )
    with pytest.raises(ValueError, match="missing .*pooler.dense.weight.*pass add_pooling_layer=False"):
        vitmae.ViTModel.from_pretrained(tmp_path)
    model = vitmae.ViTModel.from_pretrained(tmp_path, add_pooling_layer=False)
    assert model.pooler is None
