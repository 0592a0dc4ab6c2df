"""AIM and the baselines on timm Swin V1 / V2: tiny random models, plus Swin-B counts on the meta device."""

from __future__ import annotations

import copy
import math

import pytest
import timm
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import adaptkit
from adaptkit.layers import RelativeTemporalBias
from conftest import randomize_trainable

SIZE = 32  # 8x8 patches: windows of 4 with a real shift in stage 1; stage 2 (4x4) is one window, shift off
TINY = dict(embed_dim=24, depths=(2, 2), num_heads=(2, 4), img_size=SIZE, window_size=4, num_classes=7)
SWINS = {"v1": "swin_tiny_patch4_window7_224", "v2": "swinv2_tiny_window8_256"}
STRATEGY_OPTIONS = {"aim": {}, "linear-probe": {}, "space-only": {}, "lora": {"r": 2}}
FRAMES = 3


def tiny_swin(version: str, seed: int = 0, **kwargs) -> nn.Module:
    """A tiny random Swin whose norms are random too (SwinV2 zero-inits its post-norms, hiding every branch)."""
    torch.manual_seed(seed)
    model = timm.create_model(SWINS[version], **{**TINY, **kwargs})
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.LayerNorm):
                module.weight.copy_(1 + 0.3 * torch.randn(module.weight.shape, generator=generator))
                module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=generator))
    return model.eval()


def inject(model: nn.Module, strategy: str = "aim", num_frames: int = FRAMES, **options) -> adaptkit.VideoModel:
    return adaptkit.inject(model, strategy, num_frames=num_frames, num_classes=5,
                           **{**STRATEGY_OPTIONS[strategy], **options})


def video(batch: int = 2, frames: int = FRAMES, size: int = SIZE, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, frames, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors gain nothing from intra-op threads, which spin against each other on a busy 2-core machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


versions = pytest.mark.parametrize("version", list(SWINS))
strategies = pytest.mark.parametrize("strategy", list(STRATEGY_OPTIONS))


# ----------------------------------------------------------------------------- structure
@versions
def test_family_is_found_and_blocks_are_a_flat_view(version):
    vm = inject(tiny_swin(version))
    assert vm.family.name == {"v1": "timm_swin", "v2": "timm_swinv2"}[version]
    blocks = vm.family.blocks()
    assert len(blocks) == 4 and list(blocks) == [b for stage in vm.backbone.layers for b in stage.blocks]
    assert [b.temporal_adapter is not None for b in blocks] == [True, False, True, False]  # the regular-window ones
    assert [vm.family.block_dim(b.block) for b in blocks] == [24, 24, 48, 48]
    assert vm.temporal_embed is None  # frame order comes from the relative temporal bias
    assert vm.family.embed_dim == 48 and vm.head.in_features == 48


@versions
def test_aim_trains_exactly_adapters_temporal_biases_final_norm_and_head(version):
    vm = inject(tiny_swin(version))
    trainable = {n for n, p in vm.named_parameters() if p.requires_grad}
    kinds = ("temporal_adapter.", "spatial_adapter.", "mlp_adapter.", "temporal_bias.")
    for name in trainable:
        assert any(k in name for k in kinds) or name.startswith(("head.", "backbone.norm.")), name
    assert sum(n.endswith("temporal_bias.weight") for n in trainable) == 2
    assert sum(n.endswith("spatial_adapter.fc1.weight") for n in trainable) == 4
    assert {"backbone.norm.weight", "head.weight"} <= trainable
    assert vm.backbone.layers[0].blocks[0].temporal_bias.weight.shape == (2 * FRAMES - 1, 2)


@versions
def test_temporal_blocks_all_puts_temporal_attention_everywhere(version):
    vm = inject(tiny_swin(version), temporal_blocks="all")
    assert all(b.temporal_adapter is not None and b.temporal_bias is not None for b in vm.family.blocks())
    assert vm.strategy_config["options"]["temporal_blocks"] == "all"


def test_temporal_blocks_errors():
    with pytest.raises(ValueError, match="'unshifted', 'all'"):
        inject(tiny_swin("v1"), temporal_blocks="odd")
    with pytest.raises(ValueError, match="none of the blocks selected"):
        inject(tiny_swin("v1"), layers=[1, 3])  # only shifted-window blocks: no temporal attention anywhere
    vit = timm.create_model("vit_tiny_patch16_224", embed_dim=32, depth=2, num_heads=2, img_size=32, patch_size=8)
    with pytest.raises(ValueError, match="has no meaning on timm_vit"):
        adaptkit.inject(vit, "aim", temporal_blocks="all")
    # Refused before any surgery: nothing frozen, head in place, not marked as injected.
    assert all(p.requires_grad for p in vit.parameters()) and isinstance(vit.head, nn.Linear)
    assert not hasattr(vit, "_adaptkit_injected")


def test_timesformer_is_refused_before_any_surgery():
    model = tiny_swin("v1")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(TypeError, match="'timesformer' is ViT-only"):
        adaptkit.inject(model, "timesformer", num_frames=FRAMES, num_classes=5)
    assert all(p.requires_grad for p in model.parameters()) and isinstance(model.head.fc, nn.Linear)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    inject(model)  # still injectable


# ----------------------------------------------------------------------------- behaviour
@versions
@settings(max_examples=8, deadline=None)
@given(batch=st.integers(1, 3), frames=st.integers(1, 5))
def test_shapes_for_any_batch_and_clip_length(version, batch, frames):
    """Built for 3 frames; other lengths resample the temporal bias (1 frame: only its zero offset)."""
    vm = inject(tiny_swin(version)).eval()
    randomize_trainable(vm)
    with torch.no_grad():
        out = vm(video(batch, frames))
        features = vm.forward_features(video(batch, frames))
    assert out.shape == (batch, 5) and features.shape == (batch, 48)
    assert torch.isfinite(out).all()


@settings(max_examples=6, deadline=None)
@given(height=st.integers(4, 10).map(lambda n: 4 * n), width=st.integers(4, 10).map(lambda n: 4 * n))
def test_dynamic_size_swin_accepts_any_multiple_of_the_patch(height, width):
    vm = inject(tiny_swin("v1", dynamic_img_size=True)).eval()
    randomize_trainable(vm)
    with torch.no_grad():
        assert vm(torch.randn(2, 3, FRAMES, height, width)).shape == (2, 5)


@versions
@strategies
def test_identity_at_initialisation(version, strategy):
    """Fresh logits == head(time-mean of the untouched image model's pooled features of the same frames)."""
    model = tiny_swin(version)
    reference = copy.deepcopy(model).eval()
    vm = inject(model, strategy).eval()
    clip = video(batch=2)
    frames = clip.permute(0, 2, 1, 3, 4).flatten(0, 1)  # (B*T, C, H, W)
    with torch.no_grad():
        features = reference.forward_head(reference.forward_features(frames), pre_logits=True)
        expected = vm.head(features.view(2, FRAMES, -1).mean(dim=1))
        assert torch.equal(vm(clip), expected)


@versions
@strategies
def test_batch_independence(version, strategy):
    vm = inject(tiny_swin(version), strategy)
    randomize_trainable(vm)
    vm.eval()
    clip = video(batch=3)
    changed = clip.clone()
    changed[1] = torch.randn_like(changed[1])
    with torch.no_grad():
        out, out_changed = vm(clip), vm(changed)
    assert torch.equal(out[0], out_changed[0]) and torch.equal(out[2], out_changed[2])
    assert not torch.allclose(out[1], out_changed[1])


@versions
@strategies
def test_frame_order_matters_only_with_temporal_adaptation(version, strategy):
    vm = inject(tiny_swin(version), strategy)
    randomize_trainable(vm)
    vm.eval()
    clip = video()
    with torch.no_grad():
        out, reversed_out = vm(clip), vm(clip.flip(2))
    if strategy == "aim":
        assert not torch.allclose(out, reversed_out, atol=1e-4)
    else:  # per-frame model + mean over time: only the summation order changes
        torch.testing.assert_close(out, reversed_out, atol=1e-5, rtol=1e-5)


@versions
def test_the_temporal_bias_is_what_carries_frame_order(version):
    """Without an absolute temporal embedding, temporal attention with a zero bias is order-blind."""
    vm = inject(tiny_swin(version))
    randomize_trainable(vm)
    with torch.no_grad():
        for block in vm.family.blocks():
            if block.temporal_bias is not None:
                block.temporal_bias.weight.zero_()
    vm.eval()
    clip = video()
    with torch.no_grad():
        torch.testing.assert_close(vm(clip), vm(clip.flip(2)), atol=1e-5, rtol=1e-5)
    no_temporal = inject(tiny_swin(version), temporal=False)
    assert not any(n for n, _ in no_temporal.named_parameters() if "temporal" in n)


@versions
@strategies
def test_one_backward_reaches_every_trainable_and_no_frozen_parameter(version, strategy):
    vm = inject(tiny_swin(version), strategy)
    randomize_trainable(vm, std=0.1)  # non-zero adapter outputs, so every weight (temporal biases too) gets signal
    vm.train()
    vm(video()).square().mean().backward()
    trainable = {n for n, p in vm.named_parameters() if p.requires_grad}
    assert trainable
    for name, p in vm.named_parameters():
        if name in trainable:
            assert p.grad is not None, f"trainable {name} got no gradient"
            if "temporal_bias" in name:
                assert p.grad.abs().sum() > 0, f"{name} got a zero gradient"
        else:
            assert p.grad is None, f"frozen {name} got a gradient"


@versions
def test_gradient_checkpointing_changes_nothing(version):
    vm = inject(tiny_swin(version))
    randomize_trainable(vm, std=0.1)
    vm.eval()  # no dropout/drop path: both passes must agree
    clip = video()
    grads = []
    for enable in (False, True):
        vm.zero_grad(set_to_none=True)
        vm.set_grad_checkpointing(enable)
        out = vm(clip)
        out.square().mean().backward()
        grads.append((out.detach(), {n: p.grad.clone() for n, p in vm.named_parameters() if p.grad is not None}))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=0, atol=0)
    assert grads[0][1].keys() == grads[1][1].keys()
    for name, grad in grads[0][1].items():
        torch.testing.assert_close(grads[1][1][name], grad, rtol=1e-5, atol=1e-7)


@versions
@strategies
def test_save_load_round_trip(tmp_path, version, strategy):
    pristine = tiny_swin(version)
    vm = inject(copy.deepcopy(pristine), strategy)
    randomize_trainable(vm, std=0.2)
    vm.eval()
    vm.save_pretrained(tmp_path)
    loaded = adaptkit.from_pretrained(copy.deepcopy(pristine), tmp_path)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    with torch.no_grad():
        assert torch.equal(loaded(video()), vm(video()))
    if strategy == "aim":
        assert any(k.endswith("temporal_bias.weight") for k in vm.trainable_state_dict())


@versions
@strategies
def test_unload_round_trip_is_bit_identical(version, strategy):
    model = tiny_swin(version)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    vm = inject(model, strategy)
    if strategy != "space-only":  # adapter strategies train without touching the image weights
        optimizer = torch.optim.SGD([p for p in vm.parameters() if p.requires_grad], lr=0.1)
        randomize_trainable(vm, std=0.1)
        vm(video()).square().mean().backward()
        optimizer.step()
    restored = vm.unload()
    assert restored is model
    after = restored.state_dict()
    assert list(after) == list(before)
    for key, value in before.items():
        assert torch.equal(after[key], value), key
    assert {n: p.requires_grad for n, p in restored.named_parameters()} == flags
    inject(restored, strategy)  # injectable again


@versions
@strategies
def test_every_strategy_builds_runs_and_its_trainables_matter(version, strategy):
    vm = inject(tiny_swin(version), strategy).eval()
    with torch.no_grad():
        logits = vm(video())
        assert logits.shape == (2, 5)
        randomize_trainable(vm)  # guards against silent no-ops (e.g. LoRA on a bypassed module)
        assert not torch.allclose(vm(video()), logits, atol=1e-4)


def test_lora_targets_a_module_that_runs():
    # SwinV2 feeds qkv.weight to F.linear with its q/v biases, so LoRA on qkv would silently do nothing.
    assert inject(tiny_swin("v1"), "lora").family.lora_targets() == ["qkv"]
    assert inject(tiny_swin("v2"), "lora").family.lora_targets() == ["attn.proj"]


# ----------------------------------------------------------------------------- temporal attention itself
def _reference_temporal_attention(attn: nn.Module, x: torch.Tensor, bias: torch.Tensor, cosine: bool) -> torch.Tensor:
    """Written out with einsum: (S, T, D) -> (S, T, D), no window bias, no mask."""
    heads = attn.num_heads
    if cosine:
        qkv_bias = torch.cat((attn.q_bias, torch.zeros_like(attn.q_bias), attn.v_bias))
        qkv = F.linear(x, attn.qkv.weight, qkv_bias)
    else:
        qkv = attn.qkv(x)
    q, k, v = qkv.unflatten(-1, (3, heads, -1)).unbind(2)  # (S, T, heads, hd) each
    if cosine:
        logits = torch.einsum("sihd,sjhd->shij", F.normalize(q, dim=-1), F.normalize(k, dim=-1))
        logits = logits * attn.logit_scale.clamp(max=math.log(100.0)).exp()
    else:
        logits = torch.einsum("sihd,sjhd->shij", q, k) / math.sqrt(q.shape[-1])
    weights = (logits + bias).softmax(dim=-1)
    return attn.proj(torch.einsum("shij,sjhd->sihd", weights, v).flatten(2))


@versions
def test_temporal_attention_is_plain_attention_over_frames_with_the_new_bias(version):
    vm = inject(tiny_swin(version), temporal_blocks="all").eval()
    randomize_trainable(vm)
    x = torch.randn(5, FRAMES, 48)  # 5 sequences over time
    frame_folded = x.transpose(0, 1).contiguous()  # (T, 5, D): one clip whose frames have 5 tokens
    for wrapped in list(vm.family.blocks())[2:]:  # stage 2: shifted and unshifted block
        block, attn = wrapped.block, wrapped.block.attn
        with torch.no_grad():
            expected = _reference_temporal_attention(attn, x, wrapped.temporal_bias(FRAMES), cosine=version == "v2")
            got = vm.family.attend_time(block, frame_folded, FRAMES, wrapped.temporal_bias).transpose(0, 1)
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
            # The window's own position bias plays no part along time.
            window_bias = attn.relative_position_bias_table if version == "v1" else attn.cpb_mlp[0].weight
            window_bias.add_(1.0)
            again = vm.family.attend_time(block, frame_folded, FRAMES, wrapped.temporal_bias).transpose(0, 1)
            torch.testing.assert_close(again, got, rtol=0, atol=0)


def test_relative_temporal_bias_table_and_resampling():
    bias = RelativeTemporalBias(num_frames=3, num_heads=2)
    assert torch.equal(bias.weight, torch.zeros(5, 2))
    with torch.no_grad():
        bias.weight.copy_(torch.arange(10.0).view(5, 2))
    out = bias(3)
    for i in range(3):
        for j in range(3):
            assert torch.equal(out[:, i, j], bias.weight[i - j + 2])
    stretched = bias.table(5)  # 9 offsets: centre and both ends stay, the rest is linear in between
    assert stretched.shape == (9, 2)
    assert torch.equal(stretched[4], bias.weight[2])
    assert torch.equal(stretched[0], bias.weight[0]) and torch.equal(stretched[-1], bias.weight[-1])
    torch.testing.assert_close(stretched[1], (bias.weight[0] + bias.weight[1]) / 2)
    assert torch.equal(bias(1), bias.weight[2].view(2, 1, 1))


# ----------------------------------------------------------------------------- errors
def test_frame_size_the_swin_cannot_window_is_refused_naming_the_valid_size():
    vm = inject(tiny_swin("v1"))
    with pytest.raises(ValueError, match=r"frame size 40x40 does not fit.*built for 32x32.*only valid size"):
        vm(video(size=40))
    dynamic = inject(tiny_swin("v2", dynamic_img_size=True))
    with pytest.raises(ValueError, match=r"not a multiple of the patch size 4x4"):
        dynamic(torch.randn(1, 3, FRAMES, 34, 36))


# ----------------------------------------------------------------------------- paper numbers (meta device)
def _adapter_params(dim: int, ratio: float = 0.25) -> int:
    hidden = round(dim * ratio)
    return 2 * dim * hidden + hidden + dim


def test_swin_b_aim_has_the_papers_9_2m_tunable_parameters():
    with torch.device("meta"):
        model = timm.create_model("swin_base_patch4_window7_224")
    vm = adaptkit.inject(model, "aim", num_frames=8, num_classes=400)
    total, trainable = adaptkit.count_parameters(vm)
    assert abs(trainable - 9.2e6) / 9.2e6 < 0.03  # paper Table 6
    # Exactly: S and joint adapters in all 24 blocks, T adapters and (15, heads) biases in the 12 regular-window
    # blocks, the final norm and the 400-class head.
    dims, depths, heads = (128, 256, 512, 1024), (2, 2, 18, 2), (4, 8, 16, 32)
    expected = sum(
        2 * depth * _adapter_params(d) + (depth // 2) * (_adapter_params(d) + 15 * h)
        for d, depth, h in zip(dims, depths, heads)
    ) + 2 * 1024 + 1024 * 400 + 400
    assert trainable == expected
    assert sum(b.temporal_adapter is not None for b in vm.family.blocks()) == 12
    assert abs(total - 95.9e6) < 0.1e6
