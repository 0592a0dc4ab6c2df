"""What AIM keeps for the backward pass: recomputing its cheap parts saves memory and changes no bit.

An AIM block recomputes in the backward pass (``VideoBlock.run_recomputed``, ``torch.utils.checkpoint``)
its adapters' hidden units, the norm feeding only the MLP adapter, and the temporal branch after
q/k/v (attention over frames, output projection, temporal adapter). The same operations run again,
so outputs and gradients must equal, bit for bit, those of the block that keeps everything.
"""

from __future__ import annotations

import pytest
import torch

from conftest import build, randomize_trainable

CASES = [
    ("timm_vit", {}),
    ("timm_vit", {"temporal_in": True, "drop_path": 0.3}),
    ("timm_vit", {"joint": False}),
    ("timm_vit", {"spatial": False, "temporal": False}),
    ("timm_vit_registers_layerscale_avg", {}),
    ("timm_eva_rope", {}),
    ("timm_beit_relpos", {}),
    ("open_clip_tower", {}),
    ("timm_swin", {}),
    ("timm_swinv2", {"temporal_blocks": "all"}),
]


def _run(vm, video, recompute: bool, seed: int = 7, autocast: bool = False):
    vm.set_grad_checkpointing(False if recompute else "none")
    assert all(block.recompute_adapters == recompute for block in vm.family.blocks())
    vm.zero_grad(set_to_none=True)
    torch.manual_seed(seed)  # the same drop-path masks in both runs
    video = video.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = vm(video).float()
    out.square().sum().backward()
    grads = {name: p.grad for name, p in vm.named_parameters() if p.grad is not None}
    return out.detach(), video.grad, grads


@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16_autocast"])
@pytest.mark.parametrize("backbone, options", CASES, ids=[f"{b}-{'-'.join(o) or 'default'}" for b, o in CASES])
def test_recomputing_the_cheap_parts_changes_no_bit(backbone, options, autocast):
    """Under autocast the residual stream's float32 norm inputs are also kept as bfloat16 terms (keep_as_sum)."""
    _, vm, size = build(backbone, "aim", **options)
    randomize_trainable(vm, std=0.2)  # fresh adapters are neutral: give them something to do
    vm.train()
    video = torch.randn(2, 3, 3, size, size)
    out, video_grad, grads = _run(vm, video, recompute=False, autocast=autocast)
    out_r, video_grad_r, grads_r = _run(vm, video, recompute=True, autocast=autocast)
    assert torch.equal(out, out_r)
    assert torch.equal(video_grad, video_grad_r)
    assert grads.keys() == grads_r.keys() and len(grads) > 0
    for name, grad in grads.items():
        assert torch.equal(grad, grads_r[name]), name


def _saved_bytes(vm, run) -> int:
    """Bytes of distinct storages autograd keeps for backward during ``run()`` (parameters excluded)."""
    params = {p.untyped_storage()._cdata for p in vm.parameters()}
    kept: dict[int, tuple[torch.Tensor, int]] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage._cdata not in params:
            kept[storage._cdata] = (t, storage.nbytes())  # the tensor too: its storage id stays unique
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run()
    return sum(size for _, size in kept.values())


def test_an_aim_block_keeps_only_inputs_qkv_and_the_frozen_mlp_activation():
    """fp32, CPU: bytes kept by one block, bounded from the shapes.

    In units u of one (B*T, N, D) float32 tensor: the temporal branch keeps its input and q/k/v (1 + 3);
    the spatial branch its norm's input, q/k/v, the attention output and the adapter's input
    (1 + 3 + 1 + 1); the MLP its norm's input and the frozen MLP's hidden activation (1 + mlp_ratio).
    Norm statistics (two floats per token and norm) and the spatial attention's log-sum-exp (one per
    token and head) come on top. Keeping everything costs
    a further 2 u (the temporal and MLP adapters' inputs) plus each adapter's two hidden activations.
    """
    _, vm, _ = build("timm_vit", "aim")
    randomize_trainable(vm, std=0.2)
    block = vm.family.blocks()[0]
    frames, tokens, dim = 3, 17, vm.family.embed_dim
    hidden_mlp = block.block.mlp.fc1.out_features
    hidden_adapter = block.mlp_adapter.fc1.out_features
    heads = block.block.attn.num_heads
    x = torch.randn(2 * frames, tokens, dim, requires_grad=True)
    unit = x.numel() * 4

    vm.set_grad_checkpointing(False)
    recomputed = _saved_bytes(vm, lambda: block(x, {}, frames))
    vm.set_grad_checkpointing("none")
    everything = _saved_bytes(vm, lambda: block(x, {}, frames))

    assert recomputed <= (1 + 3 + 1 + 3 + 1 + 1 + 1 + hidden_mlp / dim + (3 * 2 + heads) / dim) * unit
    assert everything - recomputed >= (2 + 3 * 2 * hidden_adapter / dim) * unit


def test_each_checkpointing_mode_keeps_less_than_the_previous():
    _, vm, size = build("timm_vit", "aim")
    video = torch.randn(2, 3, 3, size, size)
    vm.set_grad_checkpointing("none")
    nothing_recomputed = _saved_bytes(vm, lambda: vm(video))
    vm.set_grad_checkpointing(False)
    default = _saved_bytes(vm, lambda: vm(video))
    vm.set_grad_checkpointing("temporal")
    temporal = _saved_bytes(vm, lambda: vm(video))
    vm.set_grad_checkpointing(True)
    everything_recomputed = _saved_bytes(vm, lambda: vm(video))
    assert everything_recomputed < temporal < default < nothing_recomputed
    assert not any(b.recompute_adapters for b in vm.family.blocks())  # the block checkpoint covers them


def test_under_autocast_a_block_keeps_no_float32_residual_but_its_input():
    """The norms' float32 inputs x + t and x + t + s are kept as x (kept anyway) and the bfloat16 branch outputs."""
    _, vm, _ = build("timm_vit", "aim")
    randomize_trainable(vm, std=0.2)
    block = vm.family.blocks()[0]
    x = torch.randn(2 * 3, 17, vm.family.embed_dim, requires_grad=True)

    def float32_residuals(mode) -> int:
        vm.set_grad_checkpointing(mode)
        kept: dict[int, torch.Tensor] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            if t.dtype == torch.float32 and t.shape == x.shape:
                kept[t.untyped_storage()._cdata] = t
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.autocast("cpu", dtype=torch.bfloat16):
            block(x, {}, 3).float().sum().backward()
        return len(kept)

    assert float32_residuals("none") == 3  # x, x1 and x2, one per norm
    assert float32_residuals(False) == 1  # x only; x1 and x2 are rebuilt in the backward pass


def test_a_term_changed_in_place_is_refused():
    _, vm, _ = build("timm_vit", "aim")
    block = vm.family.blocks()[0]
    x = torch.randn(4, 3, requires_grad=True)
    term = torch.randn(4, 3, dtype=torch.bfloat16)
    total = x + term
    with block.keep_as_sum(total, x, term):
        y = torch.sigmoid(total * 1.0)  # mul by a constant keeps nothing; sigmoid keeps its output only
        z = torch.nn.functional.layer_norm(total, (3,))  # keeps total: kept as x + term
    term.add_(1)
    with pytest.raises(RuntimeError, match="modified in place"):
        (y.sum() + z.sum()).backward()
