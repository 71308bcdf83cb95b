"""Parity of vitmae's ViTMAE with transformers, masking, loss and gradients."""

from __future__ import annotations

import pytest
import torch
import transformers
from conftest import BASE, TINY
from transformers.models.vit_mae.modeling_vit_mae import build_2d_sinusoidal_position_embedding

import vitmae
from vitmae.random_weights import random_model

GEOMETRIES = {"tiny": TINY, "base": BASE}


def pair(geometry: dict, tmp_path, **overrides):
    """A transformers ViTMAEForPreTraining with every parameter random, and vitmae's copy loaded from its files."""
    config = transformers.ViTMAEConfig(**geometry, **overrides, attn_implementation="eager")
    reference = random_model(transformers.ViTMAEForPreTraining, config).eval()
    reference.save_pretrained(tmp_path)
    return reference, vitmae.ViTMAEForPreTraining.from_pretrained(tmp_path)


def batch(config, n: int = 2, size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    size = size or config.image_size
    pixels = torch.randn(n, config.num_channels, size, size)
    return pixels, torch.rand(n, (size // config.patch_size) ** 2)


def transformers_per_sample_loss(reference, pixels: torch.Tensor, output, interpolate_pos_encoding: bool = False):
    """Each image's loss [N] from transformers' logits, mask and patchify, the target normalised as its forward does."""
    target = reference.patchify(pixels, interpolate_pos_encoding=interpolate_pos_encoding)
    if reference.config.norm_pix_loss:
        mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1.0e-6) ** 0.5
    per_patch = ((output.logits - target) ** 2).mean(dim=-1)  # [N, L]
    per_sample = (per_patch * output.mask).sum(dim=1) / output.mask.sum(dim=1)
    # Weighted by each image's masked count, it is transformers' own batch loss.
    torch.testing.assert_close((per_sample * output.mask.sum(dim=1)).sum() / output.mask.sum(), output.loss)
    return per_sample


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("norm_pix_loss", [False, True])
def test_pretraining_matches_transformers(geometry, norm_pix_loss, tmp_path):
    reference, model = pair(GEOMETRIES[geometry], tmp_path, norm_pix_loss=norm_pix_loss)
    pixels, noise = batch(reference.config)
    with torch.no_grad():
        expected = reference(pixels, noise=noise)
        got = model(pixels, noise=noise)
    torch.testing.assert_close(got.mask, expected.mask)
    torch.testing.assert_close(got.ids_restore, expected.ids_restore)
    torch.testing.assert_close(got.logits, expected.logits, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(got.loss, expected.loss, atol=1e-5, rtol=1e-5)
    assert got.per_sample_loss.shape == (2,)
    per_sample = transformers_per_sample_loss(reference, pixels, expected)
    torch.testing.assert_close(got.per_sample_loss, per_sample, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_encoder_hidden_states_and_attentions_match(geometry, tmp_path):
    reference, _ = pair(GEOMETRIES[geometry], tmp_path)
    model = vitmae.ViTMAEModel.from_pretrained(tmp_path)  # drops exactly the decoder keys
    pixels, noise = batch(reference.config)
    with torch.no_grad():
        expected = reference.vit(pixels, noise=noise, output_hidden_states=True, output_attentions=True)
        got = model(pixels, noise=noise, output_hidden_states=True, output_attentions=True)
    torch.testing.assert_close(got.last_hidden_state, expected.last_hidden_state, atol=2e-5, rtol=1e-4)
    assert len(got.hidden_states) == len(expected.hidden_states) == reference.config.num_hidden_layers + 1
    assert len(got.attentions) == len(expected.attentions) == reference.config.num_hidden_layers
    ours_and_theirs = zip(got.hidden_states + got.attentions, expected.hidden_states + expected.attentions, strict=True)
    for ours, theirs in ours_and_theirs:
        torch.testing.assert_close(ours, theirs, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_mask_ratio_zero_keeps_order_and_matches_reordered_transformers(geometry, tmp_path):
    reference, _ = pair(GEOMETRIES[geometry], tmp_path, mask_ratio=0.0)
    model = vitmae.ViTMAEModel.from_pretrained(tmp_path)
    pixels, _ = batch(reference.config)
    with torch.no_grad():
        expected = reference.vit(pixels)  # transformers still shuffles with random noise
        got = model(pixels)
    n, length = got.mask.shape
    assert torch.equal(got.ids_restore, torch.arange(length).expand(n, length))
    assert not got.mask.any()
    index = expected.ids_restore[..., None].expand(-1, -1, expected.last_hidden_state.shape[-1])
    unshuffled = torch.gather(expected.last_hidden_state[:, 1:], 1, index)
    torch.testing.assert_close(got.last_hidden_state[:, 1:], unshuffled, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(got.last_hidden_state[:, 0], expected.last_hidden_state[:, 0], atol=2e-5, rtol=1e-4)


def test_mask_ratio_argument_overrides_config(tmp_path):
    _, model = pair(TINY, tmp_path)
    pixels, _ = batch(model.config)
    assert model.vit(pixels).last_hidden_state.shape[1] == 1 + 4  # 16 patches, 75 % masked
    assert model.vit(pixels, mask_ratio=0.0).last_hidden_state.shape[1] == 1 + 16


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_interpolate_pos_encoding_at_a_larger_size(geometry, tmp_path):
    reference, model = pair(GEOMETRIES[geometry], tmp_path)
    pixels, noise = batch(reference.config, size=reference.config.image_size + 2 * reference.config.patch_size)
    with torch.no_grad():
        expected = reference(pixels, noise=noise, interpolate_pos_encoding=True)
        got = model(pixels, noise=noise, interpolate_pos_encoding=True)
    torch.testing.assert_close(got.logits, expected.logits, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(got.loss, expected.loss, atol=1e-5, rtol=1e-5)
    per_sample = transformers_per_sample_loss(reference, pixels, expected, interpolate_pos_encoding=True)
    torch.testing.assert_close(got.per_sample_loss, per_sample, atol=1e-5, rtol=1e-5)


def test_fresh_model_builds_the_transformers_position_tables():
    config = vitmae.ViTMAEConfig(**TINY)
    model = vitmae.ViTMAEForPreTraining(config)
    reference = transformers.ViTMAEForPreTraining(transformers.ViTMAEConfig(**TINY))
    embeddings = reference.vit.embeddings
    embeddings.patch_embeddings.projection._is_hf_initialized = False
    embeddings.initialize_weights()  # transformers' own sin-cos initialisation
    reference.decoder.initialize_weights(config.num_patches)
    torch.testing.assert_close(model.vit.pos_embed, embeddings.position_embeddings.detach())
    torch.testing.assert_close(model.decoder.decoder_pos_embed, reference.decoder.decoder_pos_embed.detach())
    # The MAE layout: the first half of each row encodes the patch column, the second half its row.
    grid = config.image_size // config.patch_size
    table = build_2d_sinusoidal_position_embedding(grid, grid, config.hidden_size, cls_token=True)
    half = config.hidden_size // 2
    torch.testing.assert_close(model.vit.pos_embed[0, 2, :half], table[2, half:].float())  # column 1, row 0


@pytest.mark.parametrize("size", [(32, 32), (45, 38)])
def test_patch_embedding_as_gemm_is_the_strided_convolution(size):
    """The GEMM over cut-out patches (GPUs' path) computes the convolution, dropping pixels past the last patch."""
    embed = vitmae.ViTMAEModel(vitmae.ViTMAEConfig(**TINY)).patch_embed
    torch.nn.init.normal_(embed.proj.bias)
    pixels = torch.randn(2, 3, *size)
    expected = torch.nn.functional.conv2d(pixels, embed.proj.weight, embed.proj.bias, stride=embed.patch_size)
    torch.testing.assert_close(embed.as_gemm(pixels), expected.flatten(2).transpose(1, 2), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(embed(pixels), expected.flatten(2).transpose(1, 2), atol=0, rtol=0)


def test_patchify_unpatchify_round_trip():
    model = vitmae.ViTMAEForPreTraining(vitmae.ViTMAEConfig(**TINY))
    pixels = torch.randn(3, 3, 32, 32)
    patches = model.patchify(pixels)
    assert patches.shape == (3, 16, 8 * 8 * 3)
    assert torch.equal(model.unpatchify(patches), pixels)
    reference = transformers.ViTMAEForPreTraining(transformers.ViTMAEConfig(**TINY))
    assert torch.equal(reference.patchify(pixels), patches)


def test_every_parameter_gets_a_gradient():
    model = vitmae.ViTMAEForPreTraining(vitmae.ViTMAEConfig(**TINY)).train()
    model(torch.randn(2, 3, 32, 32)).loss.backward()
    without = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not without


def test_sdpa_agrees_with_eager():
    model = vitmae.ViTMAEModel(vitmae.ViTMAEConfig(**TINY)).eval()
    pixels, noise = batch(model.config)
    with torch.no_grad():
        fused = model(pixels, noise=noise).last_hidden_state
        eager = model(pixels, noise=noise, output_attentions=True).last_hidden_state
    torch.testing.assert_close(fused, eager, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_stays_close_to_float32(dtype):
    model = vitmae.ViTMAEForPreTraining(vitmae.ViTMAEConfig(**TINY)).eval()
    pixels, noise = batch(model.config)
    with torch.no_grad():
        full = model(pixels, noise=noise)
        half = model.to(dtype)(pixels.to(dtype), noise=noise)
    assert half.logits.dtype == dtype
    cosine = torch.nn.functional.cosine_similarity(half.logits.float().flatten(1), full.logits.flatten(1))
    assert cosine.min() > 0.99
    torch.testing.assert_close(half.per_sample_loss, full.per_sample_loss, rtol=0.05, atol=0.0)


def test_bad_pixel_values_are_clear_errors():
    model = vitmae.ViTMAEForPreTraining(vitmae.ViTMAEConfig(**TINY))
    with pytest.raises(
        ValueError, match=r"expected pixel_values of shape \(batch, 3, height, width\), got \(2, 1, 32, 32\)"
    ):
        model(torch.randn(2, 1, 32, 32))
    with pytest.raises(ValueError, match="expected images of 32x32 pixels, got 48x48"):
        model(torch.randn(2, 3, 48, 48))
    with pytest.raises(ValueError, match=r"expected noise of shape \(2, 16\), got \(2, 15\)"):
        model(torch.randn(2, 3, 32, 32), noise=torch.rand(2, 15))


def test_every_tensor_follows_the_default_device():
    """Under `with torch.device(...)` (from_pretrained uses "meta") the fixed sin-cos tables go there too."""
    with torch.device("meta"):
        model = vitmae.ViTMAEForPreTraining(vitmae.ViTMAEConfig(**TINY))
    assert not [name for name, t in model.state_dict().items() if not t.is_meta]


def test_images_smaller_than_a_patch_are_a_clear_error():
    model = vitmae.ViTMAEModel(vitmae.ViTMAEConfig(**TINY))
    with pytest.raises(ValueError, match="at least 8x8 pixels, got 5x40"):
        model(torch.randn(1, 3, 5, 40), interpolate_pos_encoding=True)
    with pytest.raises(ValueError, match="at least 8x8 pixels, got 40x7"):
        model.patch_embed(torch.randn(1, 3, 40, 7))
