"""The NumPy twins of the GPU launchers: the same signatures as kernels.py and blas.py, computed by
tinydg's readable functions. Each kernel must equal its twin (the GPU tests check this), and with
the twins put in place of the kernels, tinydg.gpu.forward runs on the CPU, which is how its wiring
(segments, positions, windows, padding) is tested without a GPU.
"""

import numpy as np

from .. import moe
from ..norms import rms_norm  # noqa: F401  (twin of kernels.rms_norm)
from ..rope import apply_rope  # noqa: F401  (twin of kernels.apply_rope)
from ..fp8 import Float8Rows, dequantize, quantize_rows as host_quantize_rows
from ..mlp import gelu_tanh
from ..attention import attention as readable_attention
from ..attention import causal_mask, padding_mask
from .bf16 import from_bf16_bits, to_bf16_bits


def softcap(logits, cap):
    c = np.float32(cap)
    logits /= c
    np.tanh(logits, out=logits)
    logits *= c
    return logits


def propose(processed, rng):
    from ..sampler import propose as readable
    return readable(processed, rng)


def gelu_mul(gate, up):
    return gelu_tanh(gate) * up


def to_bf16(x):
    return to_bf16_bits(x)


def to_float32(x):
    return x if x.dtype == np.float32 else from_bf16_bits(x)


def _operand(x, w):
    """What the GPU multiplies: with bf16 weights, the activations rounded to bf16 too."""
    if w.dtype == np.uint16:
        return from_bf16_bits(to_bf16_bits(x)), from_bf16_bits(w)
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


def _bf16_round(a):
    return from_bf16_bits(to_bf16_bits(a))


def quantize_rows(w):
    return host_quantize_rows(w)


def expert_gather_rows(x, order, offsets, A, M):
    """kernels.expert_gather_rows: each expert's sorted pairs' tokens as bf16, zero-padded to M rows."""
    E, D = len(offsets) - 1, x.shape[1]
    xs = np.zeros((E, M, D), dtype=np.uint16)
    for e in range(E):
        rows = order[offsets[e]:min(offsets[e + 1], offsets[e] + M)] // A
        xs[e, :len(rows)] = to_bf16_bits(x[rows])
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


def experts(x, idx, weights, gate_up_proj, down_proj, kernel=None):
    """tinydg.moe.experts; with bf16 or float8 weights the kernels round their activations to bf16
    (x, and the gated hidden before the down projection), and so does this twin. float8 weights are
    dequantized (value * row scale); the kernels apply the scale to each output instead."""
    if isinstance(gate_up_proj, Float8Rows):
        gate_up, down = dequantize(gate_up_proj), dequantize(down_proj)
    elif gate_up_proj.dtype == np.uint16:
        gate_up, down = from_bf16_bits(gate_up_proj), from_bf16_bits(down_proj)
    else:
        return moe.experts(x, idx, weights, gate_up_proj, down_proj)
    N, D = x.shape
    A, I = idx.shape[1], down.shape[2]
    order, offsets = moe.expert_groups(idx, gate_up.shape[0])
    xs = _bf16_round(x)[order // A]
    ys = np.empty((N * A, D), dtype=np.float32)
    for e in range(gate_up.shape[0]):
        lo, hi = int(offsets[e]), int(offsets[e + 1])
        if lo < hi:
            g_u = xs[lo:hi] @ gate_up[e].T
            ys[lo:hi] = _bf16_round(gelu_tanh(g_u[:, :I]) * g_u[:, I:]) @ down[e].T
    out = np.empty_like(ys)
    out[order] = ys
    return np.sum(out.reshape(N, A, D) * weights[:, :, None], axis=1)


def attention(q, k1, v1, pos1, k2, v2, pos2, q_pos0, *, causal, window=0, valid=None, scale=1.0, chunk=None,
              kernel=None):
    """Concatenate the segments, build the dense mask tinydg.model would, call tinydg.attention."""
    S1, S2, Tq = k1.shape[2], k2.shape[2], q.shape[2]
    keys = np.concatenate([to_float32(k1), to_float32(k2)], axis=2)
    values = np.concatenate([to_float32(v1), to_float32(v2)], axis=2)
    k_pos = np.concatenate([np.arange(pos1, pos1 + S1), np.arange(pos2, pos2 + S2)])
    q_pos = np.arange(q_pos0, q_pos0 + Tq)
    mask = causal_mask(q_pos, k_pos) if causal else np.ones((Tq, S1 + S2), dtype=bool)
    if window > 0:
        mask = mask & (k_pos[None, :] > q_pos[:, None] - window)
    mask = mask[None, None]
    if valid is not None:
        mask = mask & padding_mask(np.asarray(valid, dtype=bool), k_pos)
    return readable_attention(q, keys, values, mask, scale)


def _column_major(flat, offset, rows, cols, ld):
    """The rows x cols column-major matrix at `offset` of a flat array, as a (writable) NumPy view."""
    item = flat.itemsize
    return np.lib.stride_tricks.as_strided(flat[offset:], shape=(rows, cols), strides=(item, ld * item))


def gemm_strided(transa, transb, m, n, k, alpha, A, a_off, lda, stride_a, B, b_off, ldb, stride_b,
                 beta, C, c_off, ldc, stride_c, batch):
    """tinydg.gpu.blas.gemm_strided on NumPy arrays: cuBLAS's column-major addressing, emulated with
    strided views, so that code written against cuBLAS can be checked on the CPU."""
    a, b = from_bf16_bits(A).reshape(-1), from_bf16_bits(B).reshape(-1)
    c = C.reshape(-1)  # a view: the results land in C
    for p in range(batch):
        op_a = _column_major(a, a_off + p * stride_a, *((k, m) if transa else (m, k)), lda)
        op_b = _column_major(b, b_off + p * stride_b, *((n, k) if transb else (k, n)), ldb)
        out = _column_major(c, c_off + p * stride_c, m, n, ldc)
        product = (op_a.T if transa else op_a) @ (op_b.T if transb else op_b)
        out[...] = np.float32(alpha) * product + (np.float32(beta) * out if beta else np.float32(0))


def masked_softmax(scores, layout, valid, qpos0, causal, window, K, G):
    """kernels.masked_softmax in NumPy: tinydg.attention.softmax over the visible columns, rounded to bf16."""
    from ..attention import softmax
    BK, _, r, Lc = scores.shape
    n1, kpos1, c2, n2, kpos2 = layout
    c = np.arange(Lc)
    in_1, in_2 = c < n1, (c >= c2) & (c < c2 + n2)
    kp = np.where(in_1, kpos1 + c, kpos2 + c - c2)                   # [Lc]
    qp = qpos0 + np.arange(r)                                        # [r]
    visible = (in_1 | in_2)[None, :] & np.ones((r, 1), dtype=bool)   # [r, Lc]
    if causal:
        visible &= kp[None, :] <= qp[:, None]
    if window > 0:
        visible &= kp[None, :] > qp[:, None] - window
    rows_valid = np.asarray(valid, dtype=bool)[:, np.clip(kp, 0, valid.shape[1] - 1)]  # [B, Lc] (gaps: clipped, masked above)
    b = np.arange(BK) // K
    mask = visible[None, None] & rows_valid[b][:, None, None, :]     # [BK, 1, r, Lc]
    p = softmax(np.where(mask, scores, np.float32(-np.inf)))
    return to_bf16_bits(np.where(mask, p, np.float32(0)))
