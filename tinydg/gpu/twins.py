"""The NumPy twins of the GPU launchers: the same names and signatures as tinydg.gpu.launchers (the
CUDA kernels and cuBLAS products), computed by tinydg's readable functions. Each kernel must equal its
twin (tests/test_gpu.py checks every pair on a GPU), and `tinydg.gpu.ops.gpu_ops(..., emulate=True)`
builds the GPU operations from these twins, so the GPU assembly runs on the CPU: that is how its
wiring (key segments, positions, windows, padding, bf16 weights) is tested without a GPU.
"""

import numpy as np

from .. import moe
from ..attention import attention as readable_attention
from ..attention import visible
from ..bf16 import from_bits, round_to_bf16, to_bits
from ..fp8 import Float8Rows, dequantize
from ..fp8 import quantize_rows  # noqa: F401  (twin of experimental.kernels.quantize_rows)
from ..mlp import gelu_mul, gelu_tanh  # noqa: F401  (gelu_mul: twin of the fused gelu_mul)
from ..norms import rms_norm  # noqa: F401  (twin of the fused rms_norm)
from ..rope import apply_rope  # noqa: F401  (twin of the fused apply_rope)
from ..sampler import propose  # noqa: F401  (twin of the fused sampler pass)
from ..softcap import softcap  # noqa: F401  (twin of the fused soft-cap)


def array_module():
    return np


def to_bf16(x):
    return to_bits(x)


def to_float32(x):
    return x if x.dtype == np.float32 else from_bits(x)


def _operand(x, w):
    """What the GPU multiplies: with bf16 weights, the activations rounded to bf16 too."""
    if w.dtype == np.uint16:
        return round_to_bf16(x), from_bits(w)
    return np.asarray(x, dtype=np.float32), w


def linear(x, w):
    x, w = _operand(x, w)
    return x @ w.T


def matmul(x, w):
    x, w = _operand(x, w)
    return x @ w


def router_topk(logits, per_expert_scale, top_k):
    w, idx = moe.route(logits, per_expert_scale, top_k)
    return w, idx.astype(np.int32)


def expert_groups(idx, num_experts):
    order, offsets = moe.expert_groups(idx, num_experts)
    return order.astype(np.int32), offsets.astype(np.int32)


def expert_gather_rows(x, order, offsets, A, M):
    """kernels.expert_gather_rows: each expert's sorted pairs' tokens as bf16, zero-padded to M rows."""
    E, D = len(offsets) - 1, x.shape[1]
    xs = np.zeros((E, M, D), dtype=np.uint16)
    for e in range(E):
        rows = order[offsets[e]:min(offsets[e + 1], offsets[e] + M)] // A
        xs[e, :len(rows)] = to_bits(x[rows])
    return xs


def expert_combine_rows(y, order, offsets, idx, weights):
    """kernels.expert_combine_rows: out[t] = sum over slots a of weights[t, a] * y[idx[t, a], rank]."""
    N, A = idx.shape
    pos = np.empty(N * A, dtype=np.int64)
    pos[np.asarray(order)] = np.arange(N * A)
    e = np.asarray(idx).reshape(-1)
    rows = y[e, pos - np.asarray(offsets)[e]].reshape(N, A, -1)  # [N, A, D]
    out = np.zeros((N, y.shape[2]), dtype=np.float32)
    for a in range(A):  # in slot order, as the kernel sums
        out += np.asarray(weights, dtype=np.float32)[:, a, None] * rows[:, a]
    return out


def experts(x, idx, weights, gate_up_proj, down_proj, variant="auto"):
    """tinydg.moe.experts; with bf16 or float8 weights the kernels round their activations to bf16
    (x, and the gated hidden before the down projection), and so does this twin. float8 weights are
    dequantized (value * row scale); the kernels apply the scale to each output instead."""
    if isinstance(gate_up_proj, Float8Rows):
        gate_up, down = dequantize(gate_up_proj), dequantize(down_proj)
    elif gate_up_proj.dtype == np.uint16:
        gate_up, down = from_bits(gate_up_proj), from_bits(down_proj)
    else:
        return moe.experts(x, idx, weights, gate_up_proj, down_proj)
    N, D = x.shape
    A, I = idx.shape[1], down.shape[2]
    order, offsets = moe.expert_groups(idx, gate_up.shape[0])
    xs = round_to_bf16(x)[order // A]
    ys = np.empty((N * A, D), dtype=np.float32)
    for e in range(gate_up.shape[0]):
        lo, hi = int(offsets[e]), int(offsets[e + 1])
        if lo < hi:
            g_u = xs[lo:hi] @ gate_up[e].T
            ys[lo:hi] = round_to_bf16(gelu_tanh(g_u[:, :I]) * g_u[:, I:]) @ down[e].T
    out = np.empty_like(ys)
    out[order] = ys
    return np.sum(out.reshape(N, A, D) * weights[:, :, None], axis=1)


experts_fp8 = experts  # the twin of the float8 launcher: the same function, dequantizing Float8Rows


def attention(q, k1, v1, pos1, k2, v2, pos2, q_pos0, *, causal, window=0, valid=None, scale=1.0, chunk=None,
              variant="auto"):
    """Concatenate the segments, mask with tinydg.attention.visible, call tinydg.attention.attention."""
    S1, S2, Tq = k1.shape[2], k2.shape[2], q.shape[2]
    keys = np.concatenate([to_float32(k1), to_float32(k2)], axis=2)
    values = np.concatenate([to_float32(v1), to_float32(v2)], axis=2)
    k_pos = np.concatenate([np.arange(pos1, pos1 + S1), np.arange(pos2, pos2 + S2)])
    q_pos = np.arange(q_pos0, q_pos0 + Tq)
    if valid is None:
        valid = np.ones((q.shape[0], int(k_pos.max(initial=0)) + 1), dtype=bool)
    mask = visible(q_pos, k_pos, causal, window, np.asarray(valid, dtype=bool))
    return readable_attention(q, keys, values, mask, scale)


def _column_major(flat, offset, rows, cols, ld):
    """The rows x cols column-major matrix at `offset` of a flat array, as a (writable) NumPy view."""
    item = flat.itemsize
    return np.lib.stride_tricks.as_strided(flat[offset:], shape=(rows, cols), strides=(item, ld * item))


def gemm_strided(transa, transb, m, n, k, alpha, A, a_off, lda, stride_a, B, b_off, ldb, stride_b,
                 beta, C, c_off, ldc, stride_c, batch):
    """tinydg.gpu.blas.gemm_strided on NumPy arrays: cuBLAS's column-major addressing, emulated with
    strided views, so that code written against cuBLAS can be checked on the CPU."""
    a, b = from_bits(A).reshape(-1), from_bits(B).reshape(-1)
    c = C.reshape(-1)  # a view: the results land in C
    for p in range(batch):
        op_a = _column_major(a, a_off + p * stride_a, *((k, m) if transa else (m, k)), lda)
        op_b = _column_major(b, b_off + p * stride_b, *((n, k) if transb else (k, n)), ldb)
        out = _column_major(c, c_off + p * stride_c, m, n, ldc)
        product = (op_a.T if transa else op_a) @ (op_b.T if transb else op_b)
        out[...] = np.float32(alpha) * product + (np.float32(beta) * out if beta else np.float32(0))


def masked_softmax(scores, layout, valid, qpos0, causal, window, K, G):
    """experimental.kernels.masked_softmax in NumPy: tinydg.attention.softmax over the columns that hold
    keys and that tinydg.attention.visible allows, rounded to bf16."""
    from ..attention import softmax
    BK, _, r, Lc = scores.shape
    n1, kpos1, c2, n2, kpos2 = layout
    c = np.arange(Lc)
    in_1, in_2 = c < n1, (c >= c2) & (c < c2 + n2)
    kp = np.clip(np.where(in_1, kpos1 + c, kpos2 + c - c2), 0, valid.shape[1] - 1)  # [Lc] (gap columns: masked below)
    seen = visible(qpos0 + np.arange(r), kp, causal, window, np.asarray(valid, dtype=bool))  # [B, 1, r, Lc]
    mask = seen[np.arange(BK) // K] & (in_1 | in_2)  # [BK, 1, r, Lc]
    p = softmax(np.where(mask, scores, np.float32(-np.inf)))
    return to_bits(np.where(mask, p, np.float32(0)))
