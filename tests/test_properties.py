"""Hypothesis properties of shapes and of the AIM block's semantics."""

from __future__ import annotations

import copy

import pytest
import timm
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import adaptkit
from adaptkit.strategies.aim import AIMBlock
from conftest import BACKBONES, STRATEGIES, family_of, image_features, randomize_trainable

SETTINGS = settings(max_examples=20, deadline=None)
VIT_LIKE = [name for name in BACKBONES if not family_of(name).hierarchical]  # one stack of same-width blocks


@SETTINGS
@given(
    batch=st.integers(1, 3),
    frames=st.integers(1, 5),
    grid_h=st.integers(1, 4),
    grid_w=st.integers(1, 4),
    heads=st.sampled_from([1, 2, 4]),
    head_dim=st.sampled_from([4, 8]),
    depth=st.integers(1, 3),
    strategy=st.sampled_from(list(STRATEGIES)),
    classes=st.one_of(st.none(), st.integers(1, 7)),
)
def test_output_shapes(batch, frames, grid_h, grid_w, heads, head_dim, depth, strategy, classes):
    """(B, C, T, H, W) -> (B, classes) or (B, D), for any clip length and any frame size the model takes."""
    dim = heads * head_dim
    model = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=dim, depth=depth,
                              num_heads=heads, dynamic_img_size=True)
    options = dict(STRATEGIES[strategy])
    if strategy == "zero-i2v":  # one temporal head per offset: no more offsets than heads
        options["temporal_offsets"] = [-1, 1][:heads]
    vm = adaptkit.inject(model, strategy, num_frames=3, num_classes=classes, **options)
    out = vm(torch.randn(batch, 3, frames, 8 * grid_h, 8 * grid_w))
    assert out.shape == (batch, classes if classes is not None else dim)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("backbone", VIT_LIKE)
@settings(max_examples=10, deadline=None)
@given(frames=st.integers(2, 6), data=st.data())
def test_temporal_attention_has_no_position_machinery(backbone, frames, data):
    """Along time the re-used attention is permutation-equivariant: no RoPE, no spatial bias."""
    _, vm, _ = _build(backbone)
    family = vm.family
    block = family.blocks()[0].block
    perm = torch.tensor(data.draw(st.permutations(range(frames))))
    x = torch.randn(2, frames, 3, family.embed_dim)  # (B, T, N, D)
    with torch.no_grad():
        out = family.attend_time(block, x.flatten(0, 1), frames).unflatten(0, (2, frames))
        permuted = family.attend_time(block, x[:, perm].flatten(0, 1), frames).unflatten(0, (2, frames))
        torch.testing.assert_close(permuted, out[:, perm], atol=1e-5, rtol=1e-5)


def _build(backbone: str, **options):
    factory, size = BACKBONES[backbone]
    torch.manual_seed(0)
    image_model = factory()
    return image_model, adaptkit.inject(image_model, "aim", num_frames=3, num_classes=5, **options), size


def _adapter(adapter: torch.nn.Module, x: torch.Tensor, skip: bool) -> torch.Tensor:
    """An adapter written out (paper Fig. 2): Linear down, exact (erf) GELU, Linear up, with or without the skip."""
    hidden = F.gelu(F.linear(x, adapter.fc1.weight, adapter.fc1.bias), approximate="none")
    out = F.linear(hidden, adapter.fc2.weight, adapter.fc2.bias)
    return x + out if skip else out


@pytest.mark.parametrize("temporal_in", [False, True])
def test_aim_block_matches_a_loop_reference(temporal_in):
    """The adapted block, written out token position by token position and frame by frame, adapters included.

    Guards against the paper's Appendix F slip (temporal attention fed with ``x`` instead of the
    regrouped tensor silently becomes a second spatial attention), and against a wrong activation or
    skip connection inside an adapter (each is written out here, not called).
    """
    _, vm, _ = _build("timm_vit_registers_layerscale_avg", temporal_in=temporal_in, scale=0.7)
    randomize_trainable(vm, std=0.3)
    vm.eval()
    aim: AIMBlock = vm.family.blocks()[0]
    blk = aim.block
    batch, frames, tokens, dim = 2, 3, 7, vm.family.embed_dim
    x = torch.randn(batch * frames, tokens, dim)
    with torch.no_grad():
        got = aim(x, {}, frames)

        clips = x.view(batch, frames, tokens, dim).clone()
        temporal = torch.zeros_like(clips)
        for b in range(batch):
            for n in range(tokens):
                seq = blk.norm1(clips[b, :, n][None])  # (1, T, D): one token position over time
                if temporal_in:  # the SSv2 variant's adapter before the attention keeps its skip
                    seq = _adapter(aim.temporal_adapter_in, seq, skip=True)
                temporal[b, :, n] = _adapter(aim.temporal_adapter, blk.ls1(blk.attn(seq)), skip=False)[0]
        clips = clips + temporal
        for b in range(batch):
            for t in range(frames):
                frame = clips[b, t][None]  # (1, N, D): one frame
                frame = frame + _adapter(aim.spatial_adapter, blk.ls1(blk.attn(blk.norm1(frame))), skip=True)
                xn = blk.norm2(frame)
                clips[b, t] = (frame + blk.ls2(blk.mlp(xn)) + 0.7 * _adapter(aim.mlp_adapter, xn, skip=False))[0]
    torch.testing.assert_close(got, clips.view_as(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backbone", VIT_LIKE)
@SETTINGS
@given(frames=st.integers(1, 6))
def test_other_clip_lengths_interpolate_the_temporal_embedding(backbone, frames):
    _, vm, size = _build(backbone)
    table = vm.temporal_embed.table(frames)
    assert table.shape == (1, frames, vm.family.embed_dim)
    if frames == vm.num_frames:
        assert table is vm.temporal_embed.weight
    with torch.no_grad():
        vm.temporal_embed.weight.fill_(0.25)  # a constant table stays constant
        torch.testing.assert_close(vm.temporal_embed.table(frames), torch.full_like(table, 0.25))
        assert vm(torch.randn(2, 3, frames, size, size)).shape == (2, 5)


def test_the_temporal_embedding_resamples_frames_as_equal_cells():
    """Frame t of T covers [t, t+1) / T of the clip (``align_corners=False``, as timm resamples position embeddings)."""
    from adaptkit.layers import TemporalEmbedding

    embedding = TemporalEmbedding(4, 1)
    with torch.no_grad():
        embedding.weight.copy_(torch.arange(4.0).view(1, 4, 1))
    torch.testing.assert_close(embedding.table(2).flatten(), torch.tensor([0.5, 2.5]))
    torch.testing.assert_close(embedding.table(7).flatten(),
                               torch.tensor([0, 5 / 14, 13 / 14, 1.5, 29 / 14, 37 / 14, 3.0]))


@pytest.mark.parametrize("backbone", ["open_clip_tower", "timm_clip_norm_pre"])
def test_the_temporal_embedding_is_added_before_the_pre_norm(backbone):
    """As in the official implementation: patch + position embedding, + temporal embedding, then ln_pre."""
    if backbone == "timm_clip_norm_pre":
        torch.manual_seed(0)
        model, size = timm.create_model("vit_base_patch16_clip_224", embed_dim=32, depth=2, num_heads=2, img_size=32,
                                        patch_size=8), 32
    else:
        factory, size = BACKBONES[backbone]
        torch.manual_seed(0)
        model = factory()
    vm = adaptkit.inject(model, "aim", num_frames=3, num_classes=5).eval()
    pre_norm = getattr(vm.backbone, "ln_pre", None) or vm.backbone.norm_pre
    assert not isinstance(pre_norm, torch.nn.Identity)
    seen: list[torch.Tensor] = []
    pre_norm.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    video = torch.randn(2, 3, 3, size, size)
    with torch.no_grad():
        vm(video)
        vm.temporal_embed.weight.normal_()
        vm(video)
    difference = (seen[1] - seen[0]).unflatten(0, (2, 3))  # (B*T, N, D) -> (B, T, N, D)
    expected = vm.temporal_embed.weight[:, :, None, :].expand_as(difference)
    torch.testing.assert_close(difference, expected, atol=1e-5, rtol=1e-5)


def test_another_clip_length_averages_the_features_of_the_frames_given():
    """Identity at initialisation for a clip of T' != T frames: the head on the mean over the T' frames."""
    factory, size = BACKBONES["timm_vit"]
    torch.manual_seed(0)
    image_model = factory()
    twin = copy.deepcopy(image_model).eval()
    vm = adaptkit.inject(image_model, "aim", num_frames=3, num_classes=5).eval()
    video = torch.randn(2, 3, 5, size, size)
    frames = video.permute(0, 2, 1, 3, 4).flatten(0, 1)  # (B, C, T', H, W) -> (B*T', C, H, W)
    with torch.no_grad():
        expected = vm.head(image_features(twin, frames).view(2, 5, -1).mean(dim=1))
        torch.testing.assert_close(vm(video), expected, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize(
    "layers, expected",
    [("all", [0, 1, 2, 3]), ("top:2", [2, 3]), ("bottom:1", [0]), ("every:2", [0, 2]), ([3, -4], [0, 3])],
)
def test_layers_option_selects_blocks(layers, expected):
    model = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=16, depth=4, num_heads=2)
    vm = adaptkit.inject(model, "aim", num_frames=2, num_classes=3, layers=layers)
    assert [i for i, b in enumerate(vm.family.blocks()) if isinstance(b, AIMBlock)] == expected


def test_drop_path_is_linear_over_depth_on_temporal_and_joint_branches_only():
    model = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=16, depth=5, num_heads=2)
    vm = adaptkit.inject(model, "aim", num_frames=2, num_classes=3, drop_path=0.2)
    rates = [getattr(b.drop_path, "drop_prob", 0.0) for b in vm.family.blocks()]
    assert rates == pytest.approx([0.0, 0.05, 0.1, 0.15, 0.2])
    # The frozen blocks keep their own (here: no) stochastic depth on the spatial and MLP branches.
    assert all(isinstance(b.block.drop_path1, torch.nn.Identity) for b in vm.family.blocks())
    # With trained (non-zero) adapters, dropping a branch changes the output: on in training, off in evaluation.
    vm.head_drop.p = 0.0
    randomize_trainable(vm, std=0.3)
    video = torch.randn(2, 3, 2, 32, 32)
    with torch.no_grad():
        vm.train()
        torch.manual_seed(0)
        first = vm(video)
        torch.manual_seed(1)
        assert not torch.equal(first, vm(video)), "drop path must be active in training"
        vm.eval()
        assert torch.equal(vm(video), vm(video)), "drop path must be off in eval mode"


def test_a_dropped_sample_loses_both_the_temporal_and_the_joint_branch():
    _, vm, _ = _build("timm_vit", drop_path=0.1)
    randomize_trainable(vm, std=0.3)
    vm.eval()
    aim: AIMBlock = vm.family.blocks()[1]
    x = torch.randn(2 * 3, 5, vm.family.embed_dim)

    class Dropped(torch.nn.Module):  # drop path that drops every sample
        def forward(self, y: torch.Tensor) -> torch.Tensor:
            return torch.zeros_like(y)

    with torch.no_grad():
        aim.drop_path = Dropped()
        got = aim(x, {}, 3)
        aim.drop_path = torch.nn.Identity()  # the same block without its two branches
        for adapter in (aim.temporal_adapter, aim.mlp_adapter):
            adapter.fc2.weight.zero_()
            adapter.fc2.bias.zero_()
        expected = aim(x, {}, 3)
    torch.testing.assert_close(got, expected, atol=0, rtol=0)


def test_head_dropout_drops_features_in_training_only():
    factory, size = BACKBONES["timm_vit"]
    vm = adaptkit.inject(factory(), "linear-probe", num_frames=2, num_classes=5, head_dropout=0.5).train()
    seen: list[torch.Tensor] = []
    vm.head.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    video = torch.randn(16, 3, 2, size, size)
    with torch.no_grad():
        torch.manual_seed(0)
        vm(video)
        features = vm.forward_features(video)
        vm.eval()
        vm(video)
    kept = seen[0] != 0
    assert 0.4 < (~kept).float().mean() < 0.6
    torch.testing.assert_close(seen[0][kept], 2 * features[kept])  # inverted dropout scales the kept ones
    torch.testing.assert_close(seen[1], features, atol=0, rtol=0)


def test_adapters_and_head_start_as_the_official_implementation_does():
    """fc1 trunc-normal std 0.02 with zero bias, exact GELU, fc2 zero (identity at init); head normal std 0.01."""
    from adaptkit.layers import Adapter

    torch.manual_seed(0)
    adapter = Adapter(768)
    assert isinstance(adapter.act, torch.nn.GELU) and adapter.act.approximate == "none"
    assert abs(adapter.fc1.weight.std().item() - 0.02) < 1e-3 and not adapter.fc1.bias.any()
    assert not adapter.fc2.weight.any() and not adapter.fc2.bias.any()
    model = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=192, depth=1, num_heads=3)
    vm = adaptkit.inject(model, "aim", num_frames=2, num_classes=400)
    assert abs(vm.head.weight.std().item() - 0.01) < 5e-4 and not vm.head.bias.any()


def test_unload_gives_back_a_model_equal_to_a_never_injected_copy():
    factory, size = BACKBONES["timm_eva_rope"]
    torch.manual_seed(0)
    image_model = factory()
    twin = copy.deepcopy(image_model).eval()
    vm = adaptkit.inject(image_model, "aim", num_frames=2, num_classes=3)
    randomize_trainable(vm)
    restored = vm.unload().eval()
    frames = torch.randn(4, 3, size, size)
    with torch.no_grad():
        assert torch.equal(restored(frames), twin(frames))
