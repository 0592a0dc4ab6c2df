"""The Triton kernels behind :mod:`adaptkit.layers.frame_attention_triton` (see there for the design), two designs:

- ``per_frame_*``: a (BLOCK_N, T, d) query tile in registers and a loop over key frames with an online softmax,
  every product a broadcast and reduction on CUDA cores;
- ``tiled_*``: BLOCK_N token positions' frames as one block-diagonal score tile on tensor cores.

Kept in their own module because ``@triton.jit`` decides at import time whether a kernel is
compiled for the GPU or run by Triton's interpreter (``TRITON_INTERPRET=1``): tests reload this
module with the interpreter on, and the ops pick the kernels up at call time.
"""

import triton
import triton.language as tl

__all__ = ["per_frame_backward_kernel", "per_frame_forward_kernel", "tiled_backward_kernel", "tiled_forward_kernel"]


@triton.jit
def per_frame_forward_kernel(
    qkv_ptr, bias_ptr, out_ptr, lse_ptr,
    s_b, s_t, s_n, s_c, s_h, s_d,  # packed q/k/v (B, T, N, 3, heads, d); s_c steps from q to k to v
    sb_h, sb_i, sb_j,  # bias (heads, T, T)
    so_b, so_t, so_n, so_h,  # output (B, T, N, heads, d), unit stride over d
    sl_b, sl_t, sl_n,  # log-sum-exp (B, T, N, heads), unit stride over heads
    num_tokens, num_frames, head_dim, scale: tl.constexpr,  # constexpr: torch.compile would pass a float as fp64
    HAS_BIAS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid = tl.program_id(0)
    h = tl.program_id(1)
    blocks_per_clip = tl.cdiv(num_tokens, BLOCK_N)
    b = (pid // blocks_per_clip).to(tl.int64)
    n = (pid % blocks_per_clip) * BLOCK_N + tl.arange(0, BLOCK_N)
    t = tl.arange(0, BLOCK_T)
    d = tl.arange(0, BLOCK_D)
    n_ok, t_ok, d_ok = n < num_tokens, t < num_frames, d < head_dim
    tile_mask = n_ok[:, None, None] & t_ok[None, :, None] & d_ok[None, None, :]
    base = qkv_ptr + b * s_b + h * s_h
    # (BLOCK_N, BLOCK_T, BLOCK_D): token position, query frame, channel.
    q_offsets = n[:, None, None] * s_n + t[None, :, None] * s_t + d[None, None, :] * s_d
    q = tl.load(base + q_offsets, mask=tile_mask, other=0.0).to(tl.float32) * scale
    kv_offsets = n[:, None] * s_n + d[None, :] * s_d  # (BLOCK_N, BLOCK_D): one key frame
    kv_mask = n_ok[:, None] & d_ok[None, :]

    m = tl.full((BLOCK_N, BLOCK_T), float("-inf"), tl.float32)
    denominator = tl.zeros((BLOCK_N, BLOCK_T), tl.float32)
    acc = tl.zeros((BLOCK_N, BLOCK_T, BLOCK_D), tl.float32)
    for j in range(num_frames):  # key frames, online softmax
        k = tl.load(base + s_c + j * s_t + kv_offsets, mask=kv_mask, other=0.0).to(tl.float32)
        v = tl.load(base + 2 * s_c + j * s_t + kv_offsets, mask=kv_mask, other=0.0).to(tl.float32)
        s = tl.sum(q * k[:, None, :], axis=2)  # (BLOCK_N, BLOCK_T)
        if HAS_BIAS:
            s += tl.load(bias_ptr + h * sb_h + t * sb_i + j * sb_j, mask=t_ok, other=0.0).to(tl.float32)[None, :]
        m_new = tl.maximum(m, s)
        # While a row has seen only -inf logits (a bias masking its first keys), m_new is -inf and
        # exp(-inf - -inf) would be NaN: subtract 0 instead, so alpha and p are exactly 0 (as flash attention does).
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp(m - m_safe)
        p = tl.exp(s - m_safe)
        denominator = denominator * alpha + p
        acc = acc * alpha[:, :, None] + p[:, :, None] * v[:, None, :]
        m = m_new

    out = acc / denominator[:, :, None]
    out_offsets = b * so_b + h * so_h + n[:, None, None] * so_n + t[None, :, None] * so_t + d[None, None, :]
    tl.store(out_ptr + out_offsets, out.to(out_ptr.dtype.element_ty), mask=tile_mask)
    lse_offsets = b * sl_b + h + n[:, None] * sl_n + t[None, :] * sl_t
    tl.store(lse_ptr + lse_offsets, m + tl.log(denominator), mask=n_ok[:, None] & t_ok[None, :])


@triton.jit
def per_frame_backward_kernel(
    qkv_ptr, bias_ptr, grad_out_ptr, lse_ptr, grad_qkv_ptr, grad_bias_ptr,
    s_b, s_t, s_n, s_c, s_h, s_d,  # packed q/k/v
    sb_h, sb_i, sb_j,  # bias
    sg_b, sg_t, sg_n, sg_h, sg_d,  # gradient of the output (B, T, N, heads, d)
    sl_b, sl_t, sl_n,  # log-sum-exp
    sq_b, sq_t, sq_n, sq_c, sq_h,  # gradient of packed q/k/v, unit stride over d
    sp_p, sp_h, sp_i,  # per-program partial bias gradient (programs, heads, T, T), unit stride over key frames
    num_tokens, num_frames, head_dim, scale: tl.constexpr,  # constexpr: torch.compile would pass a float as fp64
    HAS_BIAS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid = tl.program_id(0)
    h = tl.program_id(1)
    blocks_per_clip = tl.cdiv(num_tokens, BLOCK_N)
    b = (pid // blocks_per_clip).to(tl.int64)
    n = (pid % blocks_per_clip) * BLOCK_N + tl.arange(0, BLOCK_N)
    t = tl.arange(0, BLOCK_T)
    d = tl.arange(0, BLOCK_D)
    n_ok, t_ok, d_ok = n < num_tokens, t < num_frames, d < head_dim
    rows_ok = n_ok[:, None] & t_ok[None, :]  # (BLOCK_N, BLOCK_T) query rows
    tile_mask = rows_ok[:, :, None] & d_ok[None, None, :]
    base = qkv_ptr + b * s_b + h * s_h
    q = tl.load(base + n[:, None, None] * s_n + t[None, :, None] * s_t + d[None, None, :] * s_d,
                mask=tile_mask, other=0.0).to(tl.float32)
    grad_out = tl.load(grad_out_ptr + b * sg_b + h * sg_h + n[:, None, None] * sg_n + t[None, :, None] * sg_t
                       + d[None, None, :] * sg_d, mask=tile_mask, other=0.0).to(tl.float32)
    lse = tl.load(lse_ptr + b * sl_b + h + n[:, None] * sl_n + t[None, :] * sl_t, mask=rows_ok, other=0.0)
    kv_offsets = n[:, None] * s_n + d[None, :] * s_d
    kv_mask = n_ok[:, None] & d_ok[None, :]

    # Pass 1: delta_i = sum_j p_ij dp_ij, which equals rowsum(dO * O): the output need not be saved.
    delta = tl.zeros((BLOCK_N, BLOCK_T), tl.float32)
    for j in range(num_frames):
        k = tl.load(base + s_c + j * s_t + kv_offsets, mask=kv_mask, other=0.0).to(tl.float32)
        v = tl.load(base + 2 * s_c + j * s_t + kv_offsets, mask=kv_mask, other=0.0).to(tl.float32)
        s = tl.sum(q * k[:, None, :], axis=2) * scale
        if HAS_BIAS:
            s += tl.load(bias_ptr + h * sb_h + t * sb_i + j * sb_j, mask=t_ok, other=0.0).to(tl.float32)[None, :]
        p = tl.where(rows_ok, tl.exp(s - lse), 0.0)
        delta += p * tl.sum(grad_out * v[:, None, :], axis=2)

    # Pass 2: gradients. Each program owns its token positions and head in every frame: no atomics.
    grad_q = tl.zeros((BLOCK_N, BLOCK_T, BLOCK_D), tl.float32)
    grad_base = grad_qkv_ptr + b * sq_b + h * sq_h
    grad_kv_offsets = n[:, None] * sq_n + d[None, :]
    for j in range(num_frames):
        k = tl.load(base + s_c + j * s_t + kv_offsets, mask=kv_mask, other=0.0).to(tl.float32)
        v = tl.load(base + 2 * s_c + j * s_t + kv_offsets, mask=kv_mask, other=0.0).to(tl.float32)
        s = tl.sum(q * k[:, None, :], axis=2) * scale
        if HAS_BIAS:
            s += tl.load(bias_ptr + h * sb_h + t * sb_i + j * sb_j, mask=t_ok, other=0.0).to(tl.float32)[None, :]
        p = tl.where(rows_ok, tl.exp(s - lse), 0.0)  # (BLOCK_N, BLOCK_T)
        grad_p = tl.sum(grad_out * v[:, None, :], axis=2)
        grad_s = p * (grad_p - delta)  # gradient of the logits (bias gradient included)
        grad_v = tl.sum(p[:, :, None] * grad_out, axis=1)  # (BLOCK_N, BLOCK_D)
        grad_k = tl.sum(grad_s[:, :, None] * q, axis=1) * scale
        grad_q += grad_s[:, :, None] * k[:, None, :]
        element = grad_qkv_ptr.dtype.element_ty
        tl.store(grad_base + sq_c + j * sq_t + grad_kv_offsets, grad_k.to(element), mask=kv_mask)
        tl.store(grad_base + 2 * sq_c + j * sq_t + grad_kv_offsets, grad_v.to(element), mask=kv_mask)
        if HAS_BIAS:
            tl.store(grad_bias_ptr + pid * sp_p + h * sp_h + t * sp_i + j, tl.sum(grad_s, axis=0), mask=t_ok)
    q_offsets = n[:, None, None] * sq_n + t[None, :, None] * sq_t + d[None, None, :]
    tl.store(grad_base + q_offsets, (grad_q * scale).to(grad_qkv_ptr.dtype.element_ty), mask=tile_mask)


# The tiled kernels: one program attends BLOCK_N token positions of one clip and one head as a single
# (BLOCK_N*BLOCK_T, BLOCK_N*BLOCK_T) score tile on tensor cores (tl.dot), masked to its block diagonal: row
# r = (position r // BLOCK_T, frame r % BLOCK_T) attends only to the rows of its own position. The dots do BLOCK_N
# times the useful arithmetic, which is still negligible next to the memory traffic; in exchange q, k and v are
# each read once as a whole tile (no per-frame loop of small loads) and the reductions are the dots'.


@triton.jit
def _tile_rows(pid, num_tokens, num_frames, head_dim,
               BLOCK_N: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
    """Clip, token position, frame and channel indices of one program's rows; which rows, keys and elements are real."""
    blocks_per_clip = tl.cdiv(num_tokens, BLOCK_N)
    b = (pid // blocks_per_clip).to(tl.int64)
    r = tl.arange(0, BLOCK_N * BLOCK_T)
    position = r // BLOCK_T  # within the block
    n = (pid % blocks_per_clip) * BLOCK_N + position
    t = r % BLOCK_T
    d = tl.arange(0, BLOCK_D)
    rows_ok = (n < num_tokens) & (t < num_frames)
    # Keys a row attends to: its own position's real frames. Every row keeps at least one key, so that no
    # weight is NaN (the backward's dot products mix rows); rows that are not real are never stored.
    keys_ok = (position[:, None] == position[None, :]) & (t < num_frames)[None, :]
    return b, n, t, d, rows_ok, keys_ok, rows_ok[:, None] & (d < head_dim)[None, :]


@triton.jit
def _load_qkv_tiles(qkv_ptr, b, h, n, t, d, tile_mask, s_b, s_t, s_n, s_c, s_h, s_d):
    """(rows, BLOCK_D) tiles of q, k and v, read through the packed projection's strides."""
    offsets = b * s_b + h * s_h + n[:, None] * s_n + t[:, None] * s_t + d[None, :] * s_d
    q = tl.load(qkv_ptr + offsets, mask=tile_mask, other=0.0)
    k = tl.load(qkv_ptr + s_c + offsets, mask=tile_mask, other=0.0)
    v = tl.load(qkv_ptr + 2 * s_c + offsets, mask=tile_mask, other=0.0)
    return q, k, v


@triton.jit
def _tile_scores(q, k, bias_ptr, h, t, keys_ok, num_frames, sb_h, sb_i, sb_j,
                 scale: tl.constexpr, HAS_BIAS: tl.constexpr, PRECISION: tl.constexpr):
    """scale * q k^T + bias over the block diagonal, -inf elsewhere: (rows, rows) float32."""
    s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale
    if HAS_BIAS:  # gathered on the diagonal blocks' real frames only (masked lanes load nothing)
        bias_mask = keys_ok & (t < num_frames)[:, None]
        s += tl.load(bias_ptr + h * sb_h + t[:, None] * sb_i + t[None, :] * sb_j, mask=bias_mask, other=0.0)
    return tl.where(keys_ok, s, float("-inf"))


@triton.jit
def tiled_forward_kernel(
    qkv_ptr, bias_ptr, out_ptr, lse_ptr,
    s_b, s_t, s_n, s_c, s_h, s_d,
    sb_h, sb_i, sb_j,
    so_b, so_t, so_n, so_h,
    sl_b, sl_t, sl_n,
    num_tokens, num_frames, head_dim, scale: tl.constexpr,
    HAS_BIAS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr,
):
    pid = tl.program_id(0)
    h = tl.program_id(1)
    b, n, t, d, rows_ok, keys_ok, tile_mask = _tile_rows(pid, num_tokens, num_frames, head_dim, BLOCK_N, BLOCK_T,
                                                         BLOCK_D)
    q, k, v = _load_qkv_tiles(qkv_ptr, b, h, n, t, d, tile_mask, s_b, s_t, s_n, s_c, s_h, s_d)
    s = _tile_scores(q, k, bias_ptr, h, t, keys_ok, num_frames, sb_h, sb_i, sb_j, scale, HAS_BIAS, PRECISION)
    m = tl.max(s, axis=1)
    p = tl.exp(s - m[:, None])
    denominator = tl.sum(p, axis=1)
    out = tl.dot(p.to(v.dtype), v, input_precision=PRECISION) / denominator[:, None]
    out_offsets = b * so_b + h * so_h + n[:, None] * so_n + t[:, None] * so_t + d[None, :]
    tl.store(out_ptr + out_offsets, out.to(out_ptr.dtype.element_ty), mask=tile_mask)
    tl.store(lse_ptr + b * sl_b + h + n * sl_n + t * sl_t, m + tl.log(denominator), mask=rows_ok)


@triton.jit
def tiled_backward_kernel(
    qkv_ptr, bias_ptr, grad_out_ptr, lse_ptr, grad_qkv_ptr, grad_bias_ptr,
    s_b, s_t, s_n, s_c, s_h, s_d,
    sb_h, sb_i, sb_j,
    sg_b, sg_t, sg_n, sg_h, sg_d,
    sl_b, sl_t, sl_n,
    sq_b, sq_t, sq_n, sq_c, sq_h,
    sp_p, sp_h, sp_i,
    num_tokens, num_frames, head_dim, scale: tl.constexpr,
    HAS_BIAS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr,
):
    pid = tl.program_id(0)
    h = tl.program_id(1)
    b, n, t, d, rows_ok, keys_ok, tile_mask = _tile_rows(pid, num_tokens, num_frames, head_dim, BLOCK_N, BLOCK_T,
                                                         BLOCK_D)
    q, k, v = _load_qkv_tiles(qkv_ptr, b, h, n, t, d, tile_mask, s_b, s_t, s_n, s_c, s_h, s_d)
    grad_out = tl.load(grad_out_ptr + b * sg_b + h * sg_h + n[:, None] * sg_n + t[:, None] * sg_t + d[None, :] * sg_d,
                       mask=tile_mask, other=0.0)
    lse = tl.load(lse_ptr + b * sl_b + h + n * sl_n + t * sl_t, mask=rows_ok, other=0.0)
    s = _tile_scores(q, k, bias_ptr, h, t, keys_ok, num_frames, sb_h, sb_i, sb_j, scale, HAS_BIAS, PRECISION)
    # The forward's weights; exactly 0 off the block diagonal. Rows that are not real load lse = 0, where exp(s) may
    # overflow (a large bias) and inf * 0 would spread NaN through the dots into real keys: their weights are 0.
    p = tl.where(rows_ok[:, None], tl.exp(s - lse[:, None]), 0.0)
    grad_p = tl.dot(grad_out, tl.trans(v), input_precision=PRECISION)
    # sum_j p_ij dp_ij equals rowsum(dO * O), so the output need not be saved. Rows without a gradient
    # (past the last position, padded frames) have dO = 0, hence grad_s = 0.
    grad_s = p * (grad_p - tl.sum(p * grad_p, axis=1)[:, None])
    element = grad_qkv_ptr.dtype.element_ty
    grad_v = tl.dot(tl.trans(p).to(q.dtype), grad_out, input_precision=PRECISION)
    grad_k = tl.dot(tl.trans(grad_s).to(q.dtype), q, input_precision=PRECISION) * scale
    grad_q = tl.dot(grad_s.to(q.dtype), k, input_precision=PRECISION) * scale
    grad_offsets = b * sq_b + h * sq_h + n[:, None] * sq_n + t[:, None] * sq_t + d[None, :]
    tl.store(grad_qkv_ptr + grad_offsets, grad_q.to(element), mask=tile_mask)
    tl.store(grad_qkv_ptr + sq_c + grad_offsets, grad_k.to(element), mask=tile_mask)
    tl.store(grad_qkv_ptr + 2 * sq_c + grad_offsets, grad_v.to(element), mask=tile_mask)
    if HAS_BIAS:  # sum the diagonal blocks (the rest is exactly 0): (BLOCK_T, BLOCK_T), query frame x key frame
        blocks = tl.reshape(grad_s, (BLOCK_N, BLOCK_T, BLOCK_N, BLOCK_T))
        grad_bias = tl.sum(tl.sum(blocks, axis=2), axis=0)
        i = tl.arange(0, BLOCK_T)
        bias_mask = (i < num_frames)[:, None] & (i < num_frames)[None, :]
        tl.store(grad_bias_ptr + pid * sp_p + h * sp_h + i[:, None] * sp_i + i[None, :], grad_bias, mask=bias_mask)
