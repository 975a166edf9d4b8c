"""Launchers of the CUDA kernels that have not yet run on a GPU: fused RMSNorm, RoPE, gelu * up,
soft-capping and the sampler's pass; float8 quantization and float8 expert GEMMs; the gather,
combine and masked softmax that the cuBLAS experts and attention need.

Their sources sit in tinydg/gpu/cuda/ beside the measured kernels and compile in CI (NVRTC, sm_90);
each launcher names its NumPy twin (tinydg.gpu.twins), and tests/test_gpu.py checks every pair on a
GPU. Until those tests have passed on a GPU, nothing runs them unless asked: `Kernels(fused=True)`,
`dtype="float8"`, `Kernels(experts="cublas")`, `Kernels(attention="gemm")`.
"""

import math

import numpy as np

from ... import sampler
from ...errors import CheckpointError
from ...fp8 import E4M3_MAX, Float8Rows
from ...softcap import softcap as readable_softcap
from ..kernels import blocks, grouped_experts, kernel

def quantize_rows(w):
    """w [..., rows, k] float32 -> tinydg.fp8.Float8Rows (codes uint8, scales float32 [..., rows]).
    Twin: tinydg.fp8.quantize_rows. The scales are CuPy reductions; one kernel writes the codes. Reads
    back whether the weight is finite (a host synchronization, once per weight at load time)."""
    import cupy
    w = cupy.ascontiguousarray(w, dtype=cupy.float32)
    amax = cupy.abs(w).max(axis=-1)
    if not bool(cupy.isfinite(amax).all()):  # max carries a NaN or an infinity through
        raise CheckpointError("cannot quantize to float8: the weight holds NaN or infinite values")
    scales = cupy.where(amax > 0, amax / E4M3_MAX, cupy.float32(1.0)).astype(cupy.float32)
    codes = cupy.empty(w.shape, dtype=cupy.uint8)
    if w.size:
        kernel("convert.cu", "f32_to_e4m3_rows")(blocks(min(w.size, 1 << 24), 256), (256,),
                                                 (w, scales, codes, np.int64(w.size), np.int64(w.shape[-1])))
    return Float8Rows(codes, scales)


# --- fused elementwise kernels and the sampler's pass ---------------------------------------------

def rms_norm(x, weight=None, eps=1e-6):
    """[..., D] float32 -> [..., D] float32. Twin: tinydg.norms.rms_norm."""
    import cupy
    x = cupy.ascontiguousarray(x, dtype=cupy.float32)
    y = cupy.empty_like(x)
    D = x.shape[-1]
    rows = x.size // D if D else 0
    if rows:
        w = None if weight is None else cupy.ascontiguousarray(weight, dtype=cupy.float32)
        kernel("elementwise.cu", "rms_norm_rows")((math.ceil(32 * rows / 128),), (128,),
                                                  (x, w, y, np.int64(rows), np.int32(D), np.float32(eps)))
    return y


def apply_rope(x, cos, sin):
    """x [B, T, heads, d] float32; cos, sin [T, d] -> [B, T, heads, d]. Twin: tinydg.rope.apply_rope."""
    import cupy
    x = cupy.ascontiguousarray(x, dtype=cupy.float32)
    B, T, heads, d = x.shape
    y = cupy.empty_like(x)
    if x.size:
        cos, sin = (cupy.ascontiguousarray(a, dtype=cupy.float32) for a in (cos, sin))
        kernel("elementwise.cu", "rope_rows")(blocks(min(x.size, 1 << 24), 256), (256,),
                                              (x, cos, sin, y, np.int64(x.size), np.int32(T), np.int32(heads), np.int32(d)))
    return y


def gelu_mul(gate, up):
    """gelu_tanh(gate) * up, float32, same shape. Twin: tinydg.mlp.gelu_tanh(gate) * up."""
    import cupy
    gate, up = (cupy.ascontiguousarray(a, dtype=cupy.float32) for a in (gate, up))
    y = cupy.empty_like(gate)
    if gate.size:
        kernel("elementwise.cu", "gelu_mul")(blocks(min(gate.size, 1 << 24), 256), (256,),
                                             (gate, up, y, np.int64(gate.size)))
    return y


def softcap(logits, cap):
    """logits <- cap * tanh(logits / cap), in place, one pass; returns logits. Twin: tinydg.softcap.softcap."""
    import cupy
    if not logits.flags.c_contiguous or logits.dtype != cupy.float32:  # the kernel walks contiguous float32
        return readable_softcap(logits, cap)
    if logits.size:
        kernel("sampler.cu", "softcap")(blocks(min(logits.size, 1 << 24), 256), (256,),
                                        (logits, np.int64(logits.size), np.float32(cap)))
    return logits


def propose(processed, rng):
    """processed [B, C, V] float32 -> (proposal, draft, entropy), each [B, C]: tinydg.sampler.propose,
    the same draws taken from rng in the same order, with one kernel per slice of rows reading the
    logits three times and the draws once. Twin: tinydg.sampler.propose."""
    import cupy
    B, C, V = processed.shape
    flat = cupy.ascontiguousarray(processed.reshape(B * C, V), dtype=cupy.float32)
    proposal = cupy.empty(B * C, dtype=cupy.int64)
    draft = cupy.empty(B * C, dtype=cupy.int64)
    entropy = cupy.empty(B * C, dtype=cupy.float32)
    for lo in range(0, B * C, sampler.ROWS_PER_CHUNK):
        x = flat[lo:lo + sampler.ROWS_PER_CHUNK]
        E = cupy.ascontiguousarray(cupy.asarray(rng.exponential(size=(len(x), V))), dtype=cupy.float32)
        kernel("sampler.cu", "propose_rows")((len(x),), (1024,), (x, E, proposal[lo:], draft[lo:], entropy[lo:],
                                                                  np.int64(V)))
    return proposal.reshape(B, C), draft.reshape(B, C), entropy.reshape(B, C)


# --- float8 experts -------------------------------------------------------------------------------

def experts_fp8(x, idx, weights, gate_up_proj, down_proj):
    """kernels.experts for float8 weights (tinydg.fp8.Float8Rows): the same five launches, with
    gate_up and down GEMMs that widen 8 codes per 8-byte load exactly to bf16 on the tensor cores and
    scale each output by its row's scale. D and I must be multiples of 32. Twin: tinydg.gpu.twins.experts."""
    import cupy
    D, I = x.shape[1], down_proj.shape[-1]
    if not (isinstance(gate_up_proj, Float8Rows) and isinstance(down_proj, Float8Rows)):
        raise TypeError("experts_fp8 takes tinydg.fp8.Float8Rows weights")
    if D % 32 or I % 32:
        raise ValueError(f"float8 experts run on the tensor cores only: D and I multiples of 32 (got {D}, {I})")
    gate_up_args = (cupy.ascontiguousarray(gate_up_proj.codes), cupy.ascontiguousarray(gate_up_proj.scales))
    down_args = (cupy.ascontiguousarray(down_proj.codes), cupy.ascontiguousarray(down_proj.scales))
    return grouped_experts(x, idx, weights, gate_up_args, down_args, gate_up_proj.shape[0], I,
                           ("expert_gate_up_fp8", "expert_down_fp8"), 128)


# --- the cuBLAS experts' gather and combine (experts_gemm.py) ---------------------------------------

def expert_gather_rows(x, order, offsets, A, M):
    """x [N, D] float32 -> xs [E, M, D] bf16 bits: each expert's sorted pairs' tokens, zero-padded to M
    rows. Twin: tinydg.gpu.twins.expert_gather_rows."""
    import cupy
    x = cupy.ascontiguousarray(x, dtype=cupy.float32)
    E, D = offsets.size - 1, x.shape[1]
    xs = cupy.empty((E, M, D), dtype=cupy.uint16)
    if xs.size:
        kernel("experts.cu", "expert_gather_rows")(blocks(min(xs.size, 1 << 24), 256), (256,),
                                                   (x, order, offsets, xs, np.int32(A), np.int32(D), np.int32(M),
                                                    np.int64(xs.size)))
    return xs


def expert_combine_rows(y, order, offsets, idx, weights):
    """y [E, M, D] float32 (each expert's padded rows) -> out [N, D]: sum over each token's slots, in
    order, of routing weight x its expert's row. Twin: tinydg.gpu.twins.expert_combine_rows."""
    import cupy
    E, M, D = y.shape
    N, A = idx.shape
    idx = cupy.ascontiguousarray(idx, dtype=cupy.int32)
    w = cupy.ascontiguousarray(weights, dtype=cupy.float32)
    pos = cupy.empty(N * A, dtype=cupy.int32)
    out = cupy.empty((N, D), dtype=cupy.float32)
    if N * A:
        kernel("experts.cu", "expert_positions")(blocks(N * A, 256), (256,), (order, pos, np.int32(N * A)))
        kernel("experts.cu", "expert_combine_rows")(blocks(N * D, 256), (256,),
                                                    (cupy.ascontiguousarray(y), idx, w, pos, offsets, out, np.int32(N),
                                                     np.int32(A), np.int32(D), np.int32(M)))
    return out


# --- the cuBLAS attention's masked softmax (attention_gemm.py) -------------------------------------

def masked_softmax(scores, layout, valid, qpos0, causal, window, K, G):
    """scores [BK, G, r, Lc] float32 -> probs [BK, G, r, Lc] bf16 bits: softmax over each row's visible
    keys (see cuda/softmax.cu). layout = (n1, kpos1, c2, n2, kpos2): the two key segments' columns
    and positions; valid [B, L] uint8 over key positions. Twin: tinydg.gpu.twins.masked_softmax."""
    import cupy
    BK, _, r, Lc = scores.shape
    n1, kpos1, c2, n2, kpos2 = layout
    scores = cupy.ascontiguousarray(scores, dtype=cupy.float32)
    valid = cupy.ascontiguousarray(valid, dtype=cupy.uint8)
    probs = cupy.empty(scores.shape, dtype=cupy.uint16)
    rows = BK * G * r
    if rows:
        kernel("softmax.cu", "attention_scores_softmax")(
           (math.ceil(32 * rows / 128),), (128,),
           (scores, probs, np.int64(rows), np.int32(Lc), np.int32(n1), np.int64(kpos1), np.int32(c2), np.int32(n2),
            np.int64(kpos2), valid, np.int64(valid.shape[1]), np.int64(qpos0), np.int32(bool(causal)),
            np.int32(window), np.int32(K), np.int32(G), np.int32(r)))
    return probs
