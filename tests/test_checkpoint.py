"""Checkpoint files both ways, key layouts, loud failures, and fsspec locations."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import huggingface_hub
import pytest
import safetensors.torch
import torch
import transformers
from conftest import BASE, CLOSED_HUB, TINY, use_hub, vit_kwargs

import vitmae
from vitmae.convert import hf_to_vitmae, vitmae_to_hf
from vitmae.errors import NotFound
from vitmae.random_weights import random_model

GEOMETRIES = {"tiny": TINY, "base": BASE}


def assert_loaded_every_key(info: dict) -> None:
    """`info` from transformers' from_pretrained(..., output_loading_info=True)."""
    assert not info["missing_keys"]
    assert not info["unexpected_keys"]
    assert not info["mismatched_keys"]


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_vitmae_files_load_in_transformers_with_equal_outputs(geometry, tmp_path):
    config = vitmae.ViTMAEConfig(**GEOMETRIES[geometry], norm_pix_loss=True)
    model = random_model(vitmae.ViTMAEForPreTraining, config).eval()
    model.save_pretrained(tmp_path)
    reference, info = transformers.ViTMAEForPreTraining.from_pretrained(tmp_path, output_loading_info=True)
    assert_loaded_every_key(info)
    assert reference.config.norm_pix_loss
    pixels, noise = torch.randn(2, 3, config.image_size, config.image_size), torch.rand(2, config.num_patches)
    with torch.no_grad():
        expected, got = reference.eval()(pixels, noise=noise), model(pixels, noise=noise)
    torch.testing.assert_close(got.logits, expected.logits, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(got.loss, expected.loss, atol=1e-5, rtol=1e-5)


def test_configs_with_class_labels_load_and_keep_them(tmp_path):
    """Fine-tuned checkpoints on the hub carry num_labels, id2label and label2id, whatever their model type."""
    labels = {0: "normal", 1: "scratch", 2: "dent"}
    transformers.ViTMAEConfig(**TINY, id2label=labels, label2id={v: k for k, v in labels.items()}).save_pretrained(
        tmp_path
    )
    data = json.loads((tmp_path / "config.json").read_text())
    assert data["id2label"] and data["label2id"]
    config = vitmae.ViTMAEConfig.from_dict(data)
    assert (
        config.id2label == labels
        and config.num_labels == 3
        and config.to_dict()["label2id"] == {"normal": 0, "scratch": 1, "dent": 2}
    )
    assert vitmae.ViTMAEConfig.from_dict({"model_type": "vit_mae", "num_labels": 2}).id2label == {
        0: "LABEL_0",
        1: "LABEL_1",
    }
    vitmae.ViTMAEForPreTraining(config).save_pretrained(tmp_path)
    assert vitmae.ViTMAEModel.from_pretrained(tmp_path).config.id2label == labels
    assert transformers.ViTMAEConfig.from_pretrained(tmp_path).id2label == labels


def test_saved_layout_is_the_hub_layout(tmp_path):
    vitmae.ViTMAEForPreTraining(vitmae.ViTMAEConfig(**TINY)).save_pretrained(tmp_path)
    keys = set(safetensors.torch.load_file(tmp_path / "model.safetensors"))
    assert "vit.encoder.layer.1.attention.attention.query.weight" in keys
    assert "decoder.decoder_layers.0.attention.output.dense.bias" in keys
    assert "vit.embeddings.position_embeddings" in keys and "decoder.decoder_pos_embed" in keys
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "vit_mae" and config["architectures"] == ["ViTMAEForPreTraining"]


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_vit_files_load_in_transformers(geometry, tmp_path):
    config = vitmae.ViTConfig(**vit_kwargs(GEOMETRIES[geometry]), id2label={0: "cat", 1: "dog"})
    model = random_model(vitmae.ViTForImageClassification, config).eval()
    model.save_pretrained(tmp_path)
    reference, info = transformers.ViTForImageClassification.from_pretrained(tmp_path, output_loading_info=True)
    assert_loaded_every_key(info)
    assert reference.config.id2label == {0: "cat", 1: "dog"}
    pixels = torch.randn(2, 3, config.image_size, config.image_size)
    with torch.no_grad():
        torch.testing.assert_close(model(pixels).logits, reference.eval()(pixels).logits, atol=2e-5, rtol=1e-4)


def test_conversion_round_trip_is_exact():
    state = random_model(vitmae.ViTMAEForPreTraining, vitmae.ViTMAEConfig(**TINY)).state_dict()
    back = hf_to_vitmae(vitmae_to_hf(state))
    assert back.keys() == state.keys()
    assert all(torch.equal(back[k], state[k]) for k in state)


def test_transformers5_decoder_spelling_and_pytorch_bin_load(tmp_path):
    reference = random_model(transformers.ViTMAEForPreTraining, transformers.ViTMAEConfig(**TINY))
    reference.save_pretrained(tmp_path)  # transformers 5 writes decoder blocks as decoder.decoder_encoder.layer.N
    state = safetensors.torch.load_file(tmp_path / "model.safetensors")
    torch.save(state, tmp_path / "pytorch_model.bin")
    (tmp_path / "model.safetensors").unlink()
    model = vitmae.ViTMAEForPreTraining.from_pretrained(tmp_path, dtype="bfloat16")
    assert model.decoder.decoder_pred.weight.dtype == torch.bfloat16
    expected = {name: tensor.to(torch.bfloat16) for name, tensor in hf_to_vitmae(state).items()}
    loaded = model.state_dict()
    assert loaded.keys() == expected.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(loaded[name], tensor, rtol=0, atol=0, msg=lambda m, name=name: f"{name}: {m}")


def test_pytorch_bin_is_never_unpickled_beyond_tensors(tmp_path):
    vitmae.ViTMAEModel(vitmae.ViTMAEConfig(**TINY)).save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    torch.save({"payload": print}, tmp_path / "pytorch_model.bin")  # not a tensor: weights_only refuses it
    with pytest.raises(Exception, match="Weights only load failed"):
        vitmae.ViTMAEModel.from_pretrained(tmp_path)


def test_missing_unexpected_and_mismatched_keys_are_listed(tmp_path):
    vitmae.ViTMAEForPreTraining(vitmae.ViTMAEConfig(**TINY)).save_pretrained(tmp_path)
    state = safetensors.torch.load_file(tmp_path / "model.safetensors")
    state.pop("vit.layernorm.weight")
    state["vit.extra.weight"] = torch.zeros(1)
    state["decoder.decoder_pred.bias"] = torch.zeros(5)
    safetensors.torch.save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(ValueError) as err:
        vitmae.ViTMAEForPreTraining.from_pretrained(tmp_path)
    message = str(err.value)
    assert "missing ['vit.layernorm.weight']" in message
    assert "unexpected ['vit.extra.weight']" in message
    assert "decoder.decoder_pred.bias: checkpoint (5,) vs model (192,)" in message


def test_pretraining_class_refuses_an_encoder_only_checkpoint(tmp_path):
    vitmae.ViTMAEModel(vitmae.ViTMAEConfig(**TINY)).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"missing \['decoder.decoder_embed.bias'"):
        vitmae.ViTMAEForPreTraining.from_pretrained(tmp_path)


def test_wrong_model_type_is_an_error(tmp_path):
    vitmae.ViTModel(vitmae.ViTConfig(**vit_kwargs(TINY))).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="expected a config with model_type 'vit_mae', got 'vit'"):
        vitmae.ViTMAEModel.from_pretrained(tmp_path)


def test_folder_without_weights_and_missing_folder(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(vitmae.ViTMAEConfig(**TINY).to_dict()))
    with pytest.raises(ValueError, match=r"no weights in .*expected one of model.safetensors.*found \['config.json'\]"):
        vitmae.ViTMAEModel.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="checkpoint folder not found"):
        vitmae.ViTMAEModel.from_pretrained(tmp_path / "nothing-here")


def test_a_mistyped_folder_shaped_like_a_hub_id_says_there_is_neither(tmp_path, monkeypatch):
    use_hub(monkeypatch, tmp_path / "hub-cache")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    with pytest.raises(NotFound) as err:
        vitmae.ViTMAEModel.from_pretrained("models/vit-mae-bse")
    assert str(err.value) == (
        f"checkpoint folder not found: no local folder {tmp_path / 'models' / 'vit-mae-bse'}, and the Hugging Face hub "
        f"could not give models/vit-mae-bse (cannot reach {CLOSED_HUB}: [Errno 111] Connection refused); "
        "check the name, "
        "or where the hub is reachable run `hf download models/vit-mae-bse --local-dir DIR` and pass DIR in its place"
    )


@pytest.mark.parametrize(
    "offline, reason", [(True, "(offline: HF_HUB_OFFLINE is set)"), (False, f"(cannot reach {CLOSED_HUB}: ")]
)
def test_a_hub_id_with_the_hub_unreachable_says_why_and_what_to_do(tmp_path, monkeypatch, offline, reason):
    use_hub(monkeypatch, tmp_path / "hub-cache", offline=offline)
    monkeypatch.chdir(tmp_path)
    started = time.monotonic()
    with pytest.raises(NotFound) as err:
        vitmae.ViTImageProcessor.from_pretrained("facebook/vit-mae-base")
    message = str(err.value)
    assert len(message.splitlines()) == 1 and time.monotonic() - started < 10
    assert (
        f"no local folder {tmp_path / 'facebook' / 'vit-mae-base'}, and the Hugging Face hub could not give" in message
    )
    assert reason in message
    assert message.endswith("`hf download facebook/vit-mae-base --local-dir DIR` and pass DIR in its place")


class _HubAnswer(http.server.BaseHTTPRequestHandler):
    """Answers every request as the hub answers for a missing (or private) repository, or a gated one."""

    answers = {"missing": (401, "RepoNotFound"), "gated": (403, "GatedRepo"), "down": (500, "")}

    def do_GET(self) -> None:
        status, code = self.answers[self.server.answer]
        self.send_response(status)
        self.send_header("X-Error-Code", code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_HEAD = do_GET

    def log_message(self, *args) -> None:
        pass


@pytest.mark.parametrize(
    "answer, reason",
    [
        ("missing", "(no such repository, or a private one: log in with `hf auth login` if you have access)"),
        (
            "gated",
            "(the repository is gated: accept its conditions on its page, then log in with `hf auth login` "
            "if you have access)",
        ),
        ("down", "answered HTTP 500)"),
    ],
)
def test_what_the_hub_answered_is_said_in_a_few_words(tmp_path, monkeypatch, answer, reason):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HubAnswer)
    server.answer = answer
    monkeypatch.chdir(tmp_path)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        use_hub(monkeypatch, tmp_path / "hub-cache", f"http://127.0.0.1:{server.server_port}")
        with pytest.raises(NotFound) as err:
            vitmae.ViTMAEModel.from_pretrained("no-such-org/vit-mae-base")
    finally:
        server.shutdown()
        server.server_close()
    message = str(err.value)
    assert reason in message and len(message.splitlines()) == 1, message
    assert message.startswith(
        f"checkpoint folder not found: no local folder {tmp_path / 'no-such-org' / 'vit-mae-base'}, "
    )


def test_a_name_that_cannot_be_a_hub_id_is_only_a_missing_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *a, **k: pytest.fail("asked the hub"))
    (tmp_path / "config.json").write_text("{}")
    for name in ("./models/vit-mae-bse", "../vit-mae-base", "models/mae/v2", "vit-mae-base", str(tmp_path / "nothing")):
        with pytest.raises(NotFound) as err:
            vitmae.ViTMAEModel.from_pretrained(name)
        assert str(err.value) == f"checkpoint folder not found: {os.path.abspath(name)}"
    with pytest.raises(
        NotFound, match=f"^checkpoint folder not found: {tmp_path / 'config.json'} is a file; pass the folder"
    ):
        vitmae.ViTMAEModel.from_pretrained("config.json")


def test_fsspec_uri_round_trip():
    model = vitmae.ViTMAEForPreTraining(vitmae.ViTMAEConfig(**TINY)).eval()
    model.save_pretrained("memory://models/mae")
    loaded = vitmae.ViTMAEModel.from_pretrained("memory://models/mae")
    pixels = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(pixels, mask_ratio=0.0).last_hidden_state, model.vit(pixels, mask_ratio=0.0).last_hidden_state
        )


def test_loading_takes_every_tensor_from_the_checkpoint_in_float32_by_default(tmp_path):
    """from_pretrained builds on the meta device; nothing may stay there, and a bf16 file loads as float32."""
    model = vitmae.ViTMAEForPreTraining(vitmae.ViTMAEConfig(**TINY)).to(torch.bfloat16)
    model.save_pretrained(tmp_path)
    loaded = vitmae.ViTMAEForPreTraining.from_pretrained(tmp_path)
    tensors = dict(loaded.named_parameters()) | dict(loaded.named_buffers())
    assert not [name for name, t in tensors.items() if t.is_meta or t.dtype != torch.float32]
    for name, expected in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], expected.float(), rtol=0, atol=0)
    assert all(p.requires_grad for p in loaded.parameters())


def test_file_access_imports_without_torch():
    """The Ray workers that write Parquet load these modules; importing torch there would cost seconds a run."""
    code = (
        "import sys, vitmae.folder, pipeline.embed.write\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'torch')\n"
        "sys.exit(f'imported {loaded[:3]}' if loaded else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[1], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
