"""The NumPy twins of the GPU launchers: the same signatures as kernels.py and blas.py, computed by
tinydg's readable functions. Each kernel must equal its twin (the GPU tests check this), and with
the twins put in place of the kernels, tinydg.gpu.forward runs on the CPU, which is how its wiring
(segments, positions, windows, padding) is tested without a GPU.
"""

import numpy as np

from .. import moe
from ..fp8 import Float8Rows, dequantize, quantize_rows as host_quantize_rows
from ..mlp import gelu_tanh
from ..attention import attention as readable_attention
from ..attention import causal_mask, padding_mask
from .bf16 import from_bf16_bits, to_bf16_bits


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


def experts(x, idx, weights, gate_up_proj, down_proj, kernel="auto"):
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
              kernel="auto"):
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
