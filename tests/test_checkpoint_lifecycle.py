"""The adapter checkpoint's life: saved by name, re-saved after a frozen load, interrupted, tampered with, refused."""

from __future__ import annotations

import json

import pytest
import timm
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import adaptkit
import adaptkit.checkpoint as checkpoint


def _vit() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", embed_dim=32, depth=2, num_heads=2, img_size=32, patch_size=8)


def _trained(folder, **options) -> adaptkit.VideoModel:
    """An AIM model with non-zero adapters, saved to ``folder``."""
    video_model = adaptkit.inject(_vit(), "aim", num_frames=3, num_classes=5, **options)
    with torch.no_grad():
        for tensor in video_model.trainable_state_dict().values():
            tensor.add_(0.3 * torch.randn_like(tensor))
    video_model.save_pretrained(folder)
    return video_model


def _keys(folder) -> set[str]:
    with safe_open(str(folder / "adapter_model.safetensors"), "pt") as file:
        return set(file.keys())


def test_a_model_loaded_frozen_saves_the_same_tensors(tmp_path):
    trained = _trained(tmp_path / "a")
    loaded = adaptkit.from_pretrained(_vit(), tmp_path / "a")  # frozen, like PEFT
    assert loaded.get_nb_trainable_parameters()[0] == 0
    loaded.save_pretrained(tmp_path / "b")
    assert _keys(tmp_path / "b") == _keys(tmp_path / "a") == set(trained.trainable_state_dict())
    again = adaptkit.from_pretrained(_vit(), tmp_path / "b")
    video = torch.randn(1, 3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(again(video), trained.eval()(video), rtol=0, atol=0)


def test_a_frozen_head_is_still_saved_and_a_merged_frozen_load_keeps_it(tmp_path):
    video_model = adaptkit.inject(_vit(), "zero-i2v", num_frames=3, num_classes=5)
    video_model.head.requires_grad_(False)
    video_model.save_pretrained(tmp_path / "z")
    assert "head.weight" in _keys(tmp_path / "z")
    loaded = adaptkit.from_pretrained(_vit(), tmp_path / "z")
    loaded.merge()
    loaded.save_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / "image_model.safetensors").is_file()
    adaptkit.from_pretrained(_vit(), tmp_path / "m")


def test_a_tensor_trained_outside_the_set_is_named_when_saving(tmp_path):
    video_model = adaptkit.inject(_vit(), "aim", num_frames=3, num_classes=5)
    video_model.backbone.cls_token.requires_grad_(True)
    with pytest.warns(UserWarning, match=r"1 trainable tensor\(s\) outside the adapter set are not saved: "
                                         r"\['backbone.cls_token'\]"):
        video_model.save_pretrained(tmp_path)
    assert "backbone.cls_token" not in _keys(tmp_path)


def test_saving_an_unloaded_model_is_refused(tmp_path):
    video_model = adaptkit.inject(_vit(), "aim", num_frames=3, num_classes=5)
    video_model.unload()
    with pytest.raises(RuntimeError, match="unloaded"):
        video_model.save_pretrained(tmp_path)
    assert not (tmp_path / "adapter_model.safetensors").exists()


def test_loading_onto_the_meta_device_is_refused_not_dropped(tmp_path):
    _trained(tmp_path)
    with torch.device("meta"):
        base = _vit()
    with pytest.raises(RuntimeError, match="meta device .* materialise the image model first"):
        adaptkit.from_pretrained(base, tmp_path)


def test_an_interrupted_overwrite_is_refused_not_mixed(tmp_path, monkeypatch):
    _trained(tmp_path, scale=0.5)
    other = adaptkit.inject(_vit(), "aim", num_frames=3, num_classes=5, scale=1.0)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # stands for a kill between the weights and the config

    monkeypatch.setattr(checkpoint, "atomic_write_text", killed)
    with pytest.raises(KeyboardInterrupt):
        other.save_pretrained(tmp_path)
    monkeypatch.undo()
    with pytest.raises(checkpoint.CorruptCheckpointError, match="SHA-256 differs"):
        adaptkit.from_pretrained(_vit(), tmp_path)


@pytest.mark.parametrize("damage", ["nan", "inf", "int"])
def test_non_finite_or_non_float_tensors_are_refused(tmp_path, damage):
    _trained(tmp_path)
    file = tmp_path / "adapter_model.safetensors"
    tensors = load_file(str(file))
    if damage == "int":
        tensors["head.bias"] = tensors["head.bias"].long()
    else:
        tensors["head.weight"][0, 0] = float(damage)
    save_file(tensors, str(file))
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    config["sha256"]["adapter_model.safetensors"] = checkpoint.sha256_file(file)  # as a save of these tensors
    (tmp_path / "adapter_config.json").write_text(json.dumps(config))
    error = ValueError if damage == "int" else checkpoint.CorruptCheckpointError
    match = "wrong kind.*head.bias: saved torch.int64" if damage == "int" else "NaN or infinite values in \\['head.weight'\\]"
    with pytest.raises(error, match=match):
        adaptkit.from_pretrained(_vit(), tmp_path)


def test_load_adapter_is_frozen_unless_trainable(tmp_path):
    _trained(tmp_path)
    video_model = adaptkit.from_pretrained(_vit(), tmp_path)
    video_model.load_adapter(tmp_path, "frozen")
    video_model.load_adapter(tmp_path, "trainable", is_trainable=True)
    video_model.set_adapter("frozen")
    assert video_model.get_nb_trainable_parameters()[0] == 0
    video_model.set_adapter("trainable")
    assert video_model.get_nb_trainable_parameters()[0] == sum(
        t.numel() for t in video_model.trainable_state_dict().values()) > 0


def test_a_peft_folder_is_named_as_such(tmp_path):
    from peft import LoraConfig, get_peft_model

    get_peft_model(_vit(), LoraConfig(r=2, target_modules=["qkv"])).save_pretrained(str(tmp_path))
    with pytest.raises(checkpoint.CorruptCheckpointError, match="is a PEFT adapter \\(LORA\\), not an adaptkit one"):
        adaptkit.from_pretrained(_vit(), tmp_path)


@pytest.mark.parametrize("text, match", [
    ("{not json", "is not valid JSON"),
    ("[1, 2]", "holds a JSON list"),
])
def test_an_unreadable_config_is_named(tmp_path, text, match):
    _trained(tmp_path)
    (tmp_path / "adapter_config.json").write_text(text)
    with pytest.raises(checkpoint.CorruptCheckpointError, match=f"adapter_config.json {match}"):
        adaptkit.from_pretrained(_vit(), tmp_path)


def test_a_config_without_a_key_is_refused_and_an_unknown_key_warns(tmp_path):
    _trained(tmp_path)
    file = tmp_path / "adapter_config.json"
    config = json.loads(file.read_text())
    file.write_text(json.dumps({**config, "future_field": 1}))
    with pytest.warns(UserWarning, match=r"ignoring keys this adaptkit does not know: \['future_field'\]"):
        adaptkit.from_pretrained(_vit(), tmp_path)
    del config["options"]
    file.write_text(json.dumps(config))
    with pytest.raises(checkpoint.CorruptCheckpointError, match="lacks options"):
        adaptkit.from_pretrained(_vit(), tmp_path)


def test_an_unmerged_save_removes_a_merged_models_backbone(tmp_path):
    merged = adaptkit.inject(_vit(), "zero-i2v", num_frames=3, num_classes=5).merge()
    merged.save_pretrained(tmp_path)
    assert (tmp_path / "image_model.safetensors").is_file()
    adaptkit.inject(_vit(), "zero-i2v", num_frames=3, num_classes=5).save_pretrained(tmp_path)
    assert not (tmp_path / "image_model.safetensors").exists()
    assert json.loads((tmp_path / "adapter_config.json").read_text())["merged"] is False
    adaptkit.from_pretrained(_vit(), tmp_path)


def test_other_frozen_weights_load_with_a_warning(tmp_path):
    import warnings

    _trained(tmp_path)
    torch.manual_seed(123)
    other = timm.create_model("vit_tiny_patch16_224", embed_dim=32, depth=2, num_heads=2, img_size=32, patch_size=8)
    with pytest.warns(adaptkit.BackboneWeightsWarning, match="trained on other frozen image-model weights"):
        adaptkit.from_pretrained(other, tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        adaptkit.from_pretrained(_vit(), tmp_path)  # the same weights
        adaptkit.from_pretrained(_vit().to(torch.bfloat16), tmp_path)  # rounded copies of them


def test_the_fingerprint_covers_only_what_the_set_does_not_hold(tmp_path):
    adaptkit.inject(_vit(), "space-only", num_frames=3, num_classes=5).save_pretrained(tmp_path / "full")
    assert "frozen_weights" not in json.loads((tmp_path / "full" / "adapter_config.json").read_text())
    _trained(tmp_path / "aim")
    assert set(json.loads((tmp_path / "aim" / "adapter_config.json").read_text())["frozen_weights"]) == {
        "norm", "signed_sum"}


@pytest.mark.parametrize("backbone", ["open_clip_tower", "timm_swin"])
def test_the_fingerprint_is_the_same_on_two_copies_under_lora(backbone):
    # PEFT's LoRA on nn.MultiheadAttention swaps parameter objects, whose ids Python reuses: the wrapped modules'
    # tensors are left out, so two injections into copies of one image model agree exactly.
    import copy

    from conftest import BACKBONES

    torch.manual_seed(0)
    pristine = BACKBONES[backbone][0]()
    prints = [checkpoint.frozen_weights_fingerprint(adaptkit.inject(copy.deepcopy(pristine), "lora", num_frames=3,
                                                                     num_classes=5)) for _ in range(3)]
    assert prints[0] is not None and prints[0] == prints[1] == prints[2]
