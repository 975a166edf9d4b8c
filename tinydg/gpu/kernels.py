"""The CUDA kernels of the GPU backend (sources in `cuda/`) and the functions that launch them.

Each launcher takes and returns CuPy arrays and names the NumPy function it must equal; the GPU
tests check every pair on hypothesis-drawn shapes. The sources include no CUDA headers: bf16 values
travel as uint16 bit patterns and are widened to float32 in the kernels, so NVRTC (CuPy's compiler)
or nvcc compiles them as they are. `source(name)` is the exact text that gets compiled.
"""

import functools
import math
import os

import numpy as np

from .. import sampler
from ..fp8 import E4M3_MAX, Float8Rows
from ..mlp import gelu_tanh
from ..norms import rms_norm as readable_rms_norm
from ..rope import apply_rope as readable_apply_rope

CUDA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cuda")
KERNELS = {  # source file -> the kernels it defines (extern "C", so their names are not mangled)
    "convert.cu": ("f32_to_bf16", "bf16_to_f32", "f32_to_e4m3_rows"),
    "router.cu": ("router_topk",),
    "permute.cu": ("expert_counts", "expert_order"),
    "experts.cu": ("expert_gate_up_f32", "expert_gate_up_bf16", "expert_down_f32", "expert_down_bf16",
                   "expert_gate_up_mma", "expert_down_mma", "expert_gate_up_fp8", "expert_down_fp8", "expert_combine",
                   "expert_positions", "expert_gather_rows", "expert_combine_rows"),
    "attention.cu": ("attention_partial_f32", "attention_partial_bf16", "attention_partial_bf16x8", "attention_combine"),
    "softmax.cu": ("attention_scores_softmax",),
    "elementwise.cu": ("rms_norm_rows", "rope_rows", "gelu_mul"),
    "sampler.cu": ("propose_rows", "softcap"),
}
SOURCES = tuple(KERNELS)
ROUTER_MAX_EXPERTS = 1024  # a lane of the router's warp owns E / 32 <= 32 experts
ROUTER_MAX_TOP_K = 32
ATTENTION_MAX_HEAD_DIM = 512  # 16 floats per lane


def source(name):
    """The compiled text of one kernel file: common.cuh followed by the file."""
    with open(os.path.join(CUDA_DIR, "common.cuh")) as f:
        common = f.read()
    with open(os.path.join(CUDA_DIR, name)) as f:
        return common + "\n" + f.read()


@functools.lru_cache(maxsize=None)
def _module(name):
    import cupy
    return cupy.RawModule(code=source(name), options=("--std=c++17",))


def _kernel(file, name):
    if name not in KERNELS[file]:
        raise KeyError(f"{name} is not a kernel of {file}")
    return _module(file).get_function(name)


def _suffix(a):
    """Kernel variant for a weight / key array: float32, bf16 bits (uint16) or float8 rows (tinydg.fp8)."""
    if isinstance(a, Float8Rows):
        return "fp8"
    if a.dtype == np.float32:
        return "f32"
    if a.dtype == np.uint16:
        return "bf16"
    raise TypeError(f"expected float32, bf16 bits (uint16) or Float8Rows, got {a.dtype}")


def _blocks(n, threads):
    return (max(1, math.ceil(n / threads)),)


# --- bf16 ------------------------------------------------------------------------------------------

def to_bf16(x):
    """float32 -> bf16 bits (uint16), same shape. Twin: tinydg.gpu.bf16.to_bf16_bits."""
    import cupy
    x = cupy.ascontiguousarray(x, dtype=cupy.float32)
    y = cupy.empty(x.shape, dtype=cupy.uint16)
    if x.size:
        _kernel("convert.cu", "f32_to_bf16")(_blocks(min(x.size, 1 << 24), 256), (256,), (x, y, np.int64(x.size)))
    return y


def to_float32(x):
    """bf16 bits (uint16) or float32 -> float32, same shape. Twin: tinydg.gpu.bf16.from_bf16_bits."""
    import cupy
    if x.dtype == cupy.float32:
        return x
    x = cupy.ascontiguousarray(x)
    if x.dtype != cupy.uint16:
        raise TypeError(f"expected float32 or bf16 bits (uint16), got {x.dtype}")
    y = cupy.empty(x.shape, dtype=cupy.float32)
    if x.size:
        _kernel("convert.cu", "bf16_to_f32")(_blocks(min(x.size, 1 << 24), 256), (256,), (x, y, np.int64(x.size)))
    return y


def quantize_rows(w):
    """w [..., rows, k] float32 -> tinydg.fp8.Float8Rows (codes uint8, scales float32 [..., rows]).
    Twin: tinydg.fp8.quantize_rows. The scales are CuPy reductions; one kernel writes the codes. Reads
    back whether the weight is finite (a host synchronization, once per weight at load time)."""
    import cupy
    w = cupy.ascontiguousarray(w, dtype=cupy.float32)
    amax = cupy.abs(w).max(axis=-1)
    if not bool(cupy.isfinite(amax).all()):  # max carries a NaN or an infinity through
        raise ValueError("cannot quantize to float8: the weight holds NaN or infinite values")
    scales = cupy.where(amax > 0, amax / E4M3_MAX, cupy.float32(1.0)).astype(cupy.float32)
    codes = cupy.empty(w.shape, dtype=cupy.uint8)
    if w.size:
        _kernel("convert.cu", "f32_to_e4m3_rows")(_blocks(min(w.size, 1 << 24), 256), (256,),
                                                  (w, scales, codes, np.int64(w.size), np.int64(w.shape[-1])))
    return Float8Rows(codes, scales)


# --- fused kernels: RMSNorm, RoPE, gelu * up, soft-capping, the sampler's pass ----------------------

FUSED_KERNELS = False  # True: one launch each for RMSNorm, RoPE, gelu * up, soft-capping and the sampler's
                       # pass over the vocabulary (not yet checked on a GPU); False: the readable functions
                       # on CuPy arrays (several launches each)


def rms_norm(x, weight=None, eps=1e-6):
    """[..., D] float32 -> [..., D] float32. Twin: tinydg.norms.rms_norm."""
    import cupy
    if not FUSED_KERNELS:
        return readable_rms_norm(x, weight, eps)
    x = cupy.ascontiguousarray(x, dtype=cupy.float32)
    y = cupy.empty_like(x)
    D = x.shape[-1]
    rows = x.size // D if D else 0
    if rows:
        w = None if weight is None else cupy.ascontiguousarray(weight, dtype=cupy.float32)
        _kernel("elementwise.cu", "rms_norm_rows")((math.ceil(32 * rows / 128),), (128,),
                                                   (x, w, y, np.int64(rows), np.int32(D), np.float32(eps)))
    return y


def apply_rope(x, cos, sin):
    """x [B, T, heads, d] float32; cos, sin [T, d] -> [B, T, heads, d]. Twin: tinydg.rope.apply_rope."""
    import cupy
    if not FUSED_KERNELS:
        return readable_apply_rope(x, cos, sin)
    x = cupy.ascontiguousarray(x, dtype=cupy.float32)
    B, T, heads, d = x.shape
    y = cupy.empty_like(x)
    if x.size:
        cos, sin = (cupy.ascontiguousarray(a, dtype=cupy.float32) for a in (cos, sin))
        _kernel("elementwise.cu", "rope_rows")(_blocks(min(x.size, 1 << 24), 256), (256,),
                                               (x, cos, sin, y, np.int64(x.size), np.int32(T), np.int32(heads), np.int32(d)))
    return y


def gelu_mul(gate, up):
    """gelu_tanh(gate) * up, float32, same shape. Twin: tinydg.mlp.gelu_tanh(gate) * up."""
    import cupy
    if not FUSED_KERNELS:
        return gelu_tanh(gate) * up
    gate, up = (cupy.ascontiguousarray(a, dtype=cupy.float32) for a in (gate, up))
    y = cupy.empty_like(gate)
    if gate.size:
        _kernel("elementwise.cu", "gelu_mul")(_blocks(min(gate.size, 1 << 24), 256), (256,),
                                              (gate, up, y, np.int64(gate.size)))
    return y


def softcap(logits, cap):
    """logits <- cap * tanh(logits / cap), in place; returns logits. Twin: tinydg.gpu.twins.softcap."""
    import cupy
    if not FUSED_KERNELS or not logits.flags.c_contiguous or logits.dtype != cupy.float32:
        c = np.float32(cap)
        logits /= c
        cupy.tanh(logits, out=logits)
        logits *= c
        return logits
    if logits.size:
        _kernel("sampler.cu", "softcap")(_blocks(min(logits.size, 1 << 24), 256), (256,),
                                         (logits, np.int64(logits.size), np.float32(cap)))
    return logits


def propose(processed, rng):
    """processed [B, C, V] float32 -> (proposal, draft, entropy), each [B, C]: tinydg.sampler.propose,
    the same draws taken from rng in the same order, with one kernel per slice of rows reading the
    logits three times and the draws once. Twin: tinydg.sampler.propose."""
    import cupy
    if not FUSED_KERNELS:
        return sampler.propose(processed, rng)
    B, C, V = processed.shape
    flat = cupy.ascontiguousarray(processed.reshape(B * C, V), dtype=cupy.float32)
    proposal = cupy.empty(B * C, dtype=cupy.int64)
    draft = cupy.empty(B * C, dtype=cupy.int64)
    entropy = cupy.empty(B * C, dtype=cupy.float32)
    for lo in range(0, B * C, sampler.ROWS_PER_CHUNK):
        x = flat[lo:lo + sampler.ROWS_PER_CHUNK]
        E = cupy.ascontiguousarray(cupy.asarray(rng.exponential(size=(len(x), V))), dtype=cupy.float32)
        _kernel("sampler.cu", "propose_rows")((len(x),), (1024,), (x, E, proposal[lo:], draft[lo:], entropy[lo:],
                                                                   np.int64(V)))
    return proposal.reshape(B, C), draft.reshape(B, C), entropy.reshape(B, C)


# --- mixture of experts --------------------------------------------------------------------------

def router_topk(logits, per_expert_scale, top_k):
    """logits [N, E] (the router projection's output) -> weights [N, A] float32, indices [N, A] int32.
    Twin: tinydg.moe.router after `x @ proj.T` (softmax, top-k highest first, renormalize, scale)."""
    import cupy
    logits = cupy.ascontiguousarray(logits, dtype=cupy.float32)
    N, E = logits.shape
    if E > ROUTER_MAX_EXPERTS or not 0 < top_k <= min(E, ROUTER_MAX_TOP_K):
        raise ValueError(f"router kernel needs E <= {ROUTER_MAX_EXPERTS} and 0 < top_k <= min(E, {ROUTER_MAX_TOP_K}); "
                         f"got E={E}, top_k={top_k}")
    scale = cupy.ascontiguousarray(per_expert_scale, dtype=cupy.float32)
    w = cupy.empty((N, top_k), dtype=cupy.float32)
    idx = cupy.empty((N, top_k), dtype=cupy.int32)
    if N:
        _kernel("router.cu", "router_topk")(_blocks(32 * N, 128), (128,),
                                            (logits, scale, w, idx, np.int32(N), np.int32(E), np.int32(top_k)))
    return w, idx


def expert_groups(idx, num_experts):
    """idx [N, A] -> order [N*A] int32 (pair ids grouped by expert, stable), offsets [E+1] int32.
    Twin: tinydg.moe.expert_groups. Two launches, no host synchronization."""
    import cupy
    flat = cupy.ascontiguousarray(idx.reshape(-1), dtype=cupy.int32)
    P = flat.size
    counts = cupy.empty(num_experts, dtype=cupy.int32)
    order = cupy.empty(P, dtype=cupy.int32)
    offsets = cupy.empty(num_experts + 1, dtype=cupy.int32)
    _kernel("permute.cu", "expert_counts")((num_experts,), (256,), (flat, np.int32(P), counts))
    _kernel("permute.cu", "expert_order")((num_experts,), (256,), (flat, counts, np.int32(P), np.int32(num_experts),
                                                                   order, offsets))
    return order, offsets


TILE_ROWS, TILE_COLS = 16, 32  # TM, TN in experts.cu
EXPERT_KERNELS = ("auto", "fma", "cublas")
DEFAULT_EXPERTS = "auto"  # what kernel=None means; "cublas" has not yet been checked on a GPU


def expert_gather_rows(x, order, offsets, A, M):
    """x [N, D] float32 -> xs [E, M, D] bf16 bits: each expert's sorted pairs' tokens, zero-padded to M
    rows. Twin: tinydg.gpu.twins.expert_gather_rows."""
    import cupy
    x = cupy.ascontiguousarray(x, dtype=cupy.float32)
    E, D = offsets.size - 1, x.shape[1]
    xs = cupy.empty((E, M, D), dtype=cupy.uint16)
    if xs.size:
        _kernel("experts.cu", "expert_gather_rows")(_blocks(min(xs.size, 1 << 24), 256), (256,),
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
        _kernel("experts.cu", "expert_positions")(_blocks(N * A, 256), (256,), (order, pos, np.int32(N * A)))
        _kernel("experts.cu", "expert_combine_rows")(_blocks(N * D, 256), (256,),
                                                     (cupy.ascontiguousarray(y), idx, w, pos, offsets, out, np.int32(N),
                                                      np.int32(A), np.int32(D), np.int32(M)))
    return out


def experts(x, idx, weights, gate_up_proj, down_proj, kernel=None):
    """x [N, D]; idx, weights [N, A]; gate_up_proj [E, 2I, D]; down_proj [E, D, I] (float32, bf16 bits,
    or tinydg.fp8.Float8Rows) -> [N, D] float32. Twin: tinydg.gpu.twins.experts (tinydg.moe.experts;
    with bf16 or float8 weights the activations are rounded to bf16 as the products see them).
    Counting sort, grouped gate_up (gelu * up fused), grouped down (routing weight fused), fixed-order
    combine: five launches, no host synchronization. kernel: "auto" takes the tensor-core (mma)
    GEMMs for bf16 weights when D and I are multiples of 32, else the FMA ones; "fma" forces the FMA
    GEMMs; "cublas" runs tinydg.gpu.experts_gemm (bf16 weights; it reads the largest group's size
    back to the host); None: DEFAULT_EXPERTS. float8 weights have only the tensor-core GEMMs (D and I
    multiples of 32), whatever `kernel` says."""
    import cupy
    kernel = DEFAULT_EXPERTS if kernel is None else kernel
    if kernel not in EXPERT_KERNELS:
        raise ValueError(f"kernel must be one of {EXPERT_KERNELS}, got {kernel!r}")
    if isinstance(gate_up_proj, Float8Rows):
        kernel = "auto"
    if kernel == "cublas":
        if gate_up_proj.dtype != cupy.uint16 or down_proj.dtype != cupy.uint16:
            raise ValueError("the cublas experts need bf16 weights (uint16 bits)")
        from .experts_gemm import experts as cublas_experts
        return cublas_experts(x, idx, weights, gate_up_proj, down_proj)
    x = cupy.ascontiguousarray(x, dtype=cupy.float32)
    N, D = x.shape
    A = idx.shape[1]
    E, two_I, _ = gate_up_proj.shape
    I = two_I // 2
    variant = _suffix(gate_up_proj)
    if _suffix(down_proj) != variant:
        raise TypeError("gate_up_proj and down_proj must have the same dtype")
    fp8 = variant == "fp8"
    if fp8 and (D % 32 or I % 32):
        raise ValueError(f"float8 experts run on the tensor cores only: D and I multiples of 32 (got {D}, {I})")
    order, offsets = expert_groups(idx, E)
    route_w = cupy.ascontiguousarray(weights.reshape(-1), dtype=cupy.float32)
    if fp8:
        gate_up_args = (cupy.ascontiguousarray(gate_up_proj.codes), cupy.ascontiguousarray(gate_up_proj.scales))
        down_args = (cupy.ascontiguousarray(down_proj.codes), cupy.ascontiguousarray(down_proj.scales))
    else:
        gate_up_args, down_args = (cupy.ascontiguousarray(gate_up_proj),), (cupy.ascontiguousarray(down_proj),)
    P = N * A
    hidden = cupy.empty((P, I), dtype=cupy.float32)
    ys = cupy.empty((P, D), dtype=cupy.float32)
    out = cupy.empty((N, D), dtype=cupy.float32)
    if N == 0:
        return out
    row_tiles = math.ceil(N / TILE_ROWS)  # an expert gets at most N pairs
    mma = fp8 or (kernel == "auto" and variant == "bf16" and D % 32 == 0 and I % 32 == 0)
    if fp8:
        gate_up_name, down_name = "expert_gate_up_fp8", "expert_down_fp8"
    elif mma:
        gate_up_name, down_name = "expert_gate_up_mma", "expert_down_mma"
    else:
        gate_up_name, down_name = f"expert_gate_up_{variant}", f"expert_down_{variant}"
    threads = 128 if mma else 256
    _kernel("experts.cu", gate_up_name)((math.ceil(I / TILE_COLS), row_tiles, E), (threads,),
                                        (x, order, offsets, *gate_up_args, hidden, np.int32(A), np.int32(D), np.int32(I)))
    _kernel("experts.cu", down_name)((math.ceil(D / TILE_COLS), row_tiles, E), (threads,),
                                     (hidden, order, offsets, *down_args, route_w, ys, np.int32(D), np.int32(I)))
    _kernel("experts.cu", "expert_combine")(_blocks(N * D, 256), (256,), (ys, out, np.int32(N), np.int32(A), np.int32(D)))
    return out


# --- attention --------------------------------------------------------------------------------------

ATTENTION_KERNELS = ("auto", "scalar", "gemm")
DEFAULT_ATTENTION = "auto"  # what kernel=None means; "gemm" has not yet been checked on a GPU


def attention(q, k1, v1, pos1, k2, v2, pos2, q_pos0, *, causal, window=0, valid=None, scale=1.0, chunk=None,
              kernel=None):
    """Softmax attention of q [B, H, Tq, d] (float32, positions q_pos0 + i) over two key segments:
    k1, v1 [B, K, S1, d] at positions pos1 + j (the cache) and k2, v2 [B, K, S2, d] at pos2 + j (this
    call's tokens), float32 or bf16 bits, never concatenated. causal / window (0: none) / valid [B, L]
    (bool over absolute positions, None: all valid) choose the visible keys. chunk: keys per split
    (None picks one). kernel: "auto" reads bf16 keys with 16-byte loads (attention_partial_bf16x8)
    when d % 8 == 0, "scalar" always takes attention_partial_*, "gemm" runs tinydg.gpu.attention_gemm
    (cuBLAS on the tensor cores; bf16 keys, d % 8 == 0); None: DEFAULT_ATTENTION. -> [B, H, Tq, d] float32.
    Twin: tinydg.attention.attention(q, concat(k1, k2), concat(v1, v2), mask) with the mask built by
    tinydg.model.encoder_masks (causal) or decoder_masks."""
    import cupy
    kernel = DEFAULT_ATTENTION if kernel is None else kernel
    if kernel not in ATTENTION_KERNELS:
        raise ValueError(f"kernel must be one of {ATTENTION_KERNELS}, got {kernel!r}")
    if kernel == "gemm":
        if not (k1.dtype == v1.dtype == k2.dtype == v2.dtype == cupy.uint16) or q.shape[-1] % 8:
            raise ValueError("the gemm attention needs bf16 keys and values (uint16 bits) and head_dim % 8 == 0")
        from .attention_gemm import attention as gemm_attention
        return gemm_attention(q, k1, v1, pos1, k2, v2, pos2, q_pos0, causal=causal, window=window, valid=valid,
                              scale=scale)
    q = cupy.ascontiguousarray(q, dtype=cupy.float32)
    B, H, Tq, d = q.shape
    K, S1, S2 = k1.shape[1], k1.shape[2], k2.shape[2]
    if d > ATTENTION_MAX_HEAD_DIM:
        raise ValueError(f"attention kernel supports head_dim <= {ATTENTION_MAX_HEAD_DIM}, got {d}")
    if H % K:
        raise ValueError(f"query heads {H} are not a multiple of KV heads {K}")
    variant = _suffix(k1)
    if not (k1.dtype == v1.dtype == k2.dtype == v2.dtype):
        raise TypeError("both key/value segments must share one dtype")
    k1, v1, k2, v2 = (cupy.ascontiguousarray(a) for a in (k1, v1, k2, v2))
    L = S1 + S2
    end = max(pos1 + S1, pos2 + S2)
    if valid is None:
        valid = cupy.ones((B, end), dtype=cupy.uint8)
    else:
        if valid.shape[0] != B or valid.shape[1] < end:
            raise ValueError(f"valid must cover [B={B}, {end}] positions, got {tuple(valid.shape)}")
        valid = cupy.ascontiguousarray(valid, dtype=cupy.uint8)
    rows = B * H * Tq
    if chunk is None:  # split the keys only when there are few query rows to spread over the chip
        splits = max(1, min(math.ceil(L / 256), math.ceil(4096 / max(rows, 1))))
        chunk = max(1, math.ceil(L / splits))
    chunk = max(1, int(chunk))
    splits = max(1, math.ceil(L / chunk))
    part_acc = cupy.empty((splits, rows, d), dtype=cupy.float32)
    part_ml = cupy.empty((splits, rows, 2), dtype=cupy.float32)
    out = cupy.empty((B, H, Tq, d), dtype=cupy.float32)
    if rows == 0:
        return out
    if (kernel == "auto" and variant == "bf16" and d % 8 == 0
            and all(a.data.ptr % 16 == 0 for a in (k1, v1, k2, v2) if a.size)):
        variant = "bf16x8"
    _kernel("attention.cu", f"attention_partial_{variant}")(
        (math.ceil(32 * rows / 128), splits), (128,),
        (q, k1, v1, np.int32(S1), np.int64(pos1), k2, v2, np.int32(S2), np.int64(pos2), valid,
         np.int64(valid.shape[1]), np.int64(q_pos0), np.int32(bool(causal)), np.int32(window), np.int32(B),
         np.int32(H), np.int32(K), np.int32(Tq), np.int32(d), np.float32(scale), np.int32(chunk), part_acc, part_ml))
    _kernel("attention.cu", "attention_combine")(_blocks(rows * d, 256), (256,),
                                                 (part_acc, part_ml, out, np.int64(rows), np.int32(d), np.int32(splits)))
    return out


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
        _kernel("softmax.cu", "attention_scores_softmax")(
            (math.ceil(32 * rows / 128),), (128,),
            (scores, probs, np.int64(rows), np.int32(Lc), np.int32(n1), np.int64(kpos1), np.int32(c2), np.int32(n2),
             np.int64(kpos2), valid, np.int64(valid.shape[1]), np.int64(qpos0), np.int32(bool(causal)),
             np.int32(window), np.int32(K), np.int32(G), np.int32(r)))
    return probs
