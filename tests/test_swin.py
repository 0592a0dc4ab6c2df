"""What is specific to timm Swin V1 / V2: stages, temporal block choice, the temporal attention itself, Swin-B counts.

The invariants every family shares (identity at initialisation, batch independence, frame order,
gradients, save/load and unload round trips) run on the tiny Swins in tests/test_matrix.py.
"""

from __future__ import annotations

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
from conftest import STRATEGIES, SWINS, randomize_trainable, tiny_swin

SIZE = 32  # 8x8 patches: windows of 4 with a real shift in stage 1; stage 2 (4x4) is one window, shift off
FRAMES = 3


def inject(model: nn.Module, strategy: str = "aim", num_frames: int = FRAMES, **options) -> adaptkit.VideoModel:
    return adaptkit.inject(model, strategy, num_frames=num_frames, num_classes=5,
                           **{**STRATEGIES[strategy], **options})


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
def test_every_temporal_bias_gets_a_nonzero_gradient(version):
    vm = inject(tiny_swin(version))
    randomize_trainable(vm, std=0.1)  # non-zero adapter outputs, so the temporal biases get signal
    vm.train()
    vm(video()).square().mean().backward()
    biases = [(n, p) for n, p in vm.named_parameters() if "temporal_bias" in n]
    assert len(biases) == 2
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for _, p in biases), biases


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
