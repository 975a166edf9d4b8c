"""The CUDA kernels of the GPU backend that have run on a GPU (sources in `cuda/`), and the
functions that launch them.

Each launcher takes and returns CuPy arrays and names the NumPy function it must equal (its twin,
in twins.py); the GPU tests check every pair on hypothesis-drawn shapes. The sources include no
CUDA headers: bf16 values travel as uint16 bit patterns and are widened to float32 in the kernels,
so NVRTC (CuPy's compiler) or nvcc compiles them as they are. `source(name)` is the exact text that
gets compiled. The launchers of kernels not yet run on a GPU are in experimental/kernels.py; their
sources share these files, and KERNELS lists every kernel of every file.
"""

import functools
import math
import os

import numpy as np


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


def kernel(file, name):
    """The compiled kernel `name` of the source file `file` (compiled once per process)."""
    if name not in KERNELS[file]:
        raise KeyError(f"{name} is not a kernel of {file}")
    return _module(file).get_function(name)


def suffix(a):
    """Kernel variant for a weight / key array: float32 or bf16 bits (uint16)."""
    if a.dtype == np.float32:
        return "f32"
    if a.dtype == np.uint16:
        return "bf16"
    raise TypeError(f"expected float32 or bf16 bits (uint16), got {a.dtype}")


def blocks(n, threads):
    return (max(1, math.ceil(n / threads)),)


# --- bf16 ------------------------------------------------------------------------------------------

def to_bf16(x):
    """float32 -> bf16 bits (uint16), same shape. Twin: tinydg.bf16.to_bits."""
    import cupy
    x = cupy.ascontiguousarray(x, dtype=cupy.float32)
    y = cupy.empty(x.shape, dtype=cupy.uint16)
    if x.size:
        kernel("convert.cu", "f32_to_bf16")(blocks(min(x.size, 1 << 24), 256), (256,), (x, y, np.int64(x.size)))
    return y


def to_float32(x):
    """bf16 bits (uint16) or float32 -> float32, same shape. Twin: tinydg.bf16.from_bits."""
    import cupy
    if x.dtype == cupy.float32:
        return x
    x = cupy.ascontiguousarray(x)
    if x.dtype != cupy.uint16:
        raise TypeError(f"expected float32 or bf16 bits (uint16), got {x.dtype}")
    y = cupy.empty(x.shape, dtype=cupy.float32)
    if x.size:
        kernel("convert.cu", "bf16_to_f32")(blocks(min(x.size, 1 << 24), 256), (256,), (x, y, np.int64(x.size)))
    return y


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
        kernel("router.cu", "router_topk")(blocks(32 * N, 128), (128,),
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
    kernel("permute.cu", "expert_counts")((num_experts,), (256,), (flat, np.int32(P), counts))
    kernel("permute.cu", "expert_order")((num_experts,), (256,), (flat, counts, np.int32(P), np.int32(num_experts),
                                                                  order, offsets))
    return order, offsets


TILE_ROWS, TILE_COLS = 16, 32  # TM, TN in experts.cu
EXPERT_VARIANTS = ("auto", "fma")


def experts(x, idx, weights, gate_up_proj, down_proj, variant="auto"):
    """x [N, D]; idx, weights [N, A]; gate_up_proj [E, 2I, D]; down_proj [E, D, I] (float32 or bf16
    bits) -> [N, D] float32. Twin: tinydg.gpu.twins.experts (tinydg.moe.experts; with bf16 weights the
    activations are rounded to bf16 as the products see them). Counting sort, grouped gate_up
    (gelu * up fused), grouped down (routing weight fused), fixed-order combine: five launches, no
    host synchronization. variant: "auto" takes the tensor-core (mma) GEMMs for bf16 weights when D
    and I are multiples of 32, else the FMA ones; "fma" always the FMA GEMMs."""
    import cupy
    if variant not in EXPERT_VARIANTS:
        raise ValueError(f"variant must be one of {EXPERT_VARIANTS}, got {variant!r}")
    D, I = x.shape[1], down_proj.shape[2]
    dtype = suffix(gate_up_proj)
    if suffix(down_proj) != dtype:
        raise TypeError("gate_up_proj and down_proj must have the same dtype")
    mma = variant == "auto" and dtype == "bf16" and D % 32 == 0 and I % 32 == 0
    names = ("expert_gate_up_mma", "expert_down_mma") if mma else (f"expert_gate_up_{dtype}", f"expert_down_{dtype}")
    return grouped_experts(x, idx, weights, (cupy.ascontiguousarray(gate_up_proj),),
                           (cupy.ascontiguousarray(down_proj),), gate_up_proj.shape[0], I, names, 128 if mma else 256)


def grouped_experts(x, idx, weights, gate_up_args, down_args, E, I, names, threads):
    """The five launches of `experts` for any weight layout: gate_up_args / down_args are the weight
    arguments of the kernels `names` = (gate_up kernel, down kernel), run with `threads` per block."""
    import cupy
    x = cupy.ascontiguousarray(x, dtype=cupy.float32)
    N, D = x.shape
    A = idx.shape[1]
    order, offsets = expert_groups(idx, E)
    route_w = cupy.ascontiguousarray(weights.reshape(-1), dtype=cupy.float32)
    P = N * A
    hidden = cupy.empty((P, I), dtype=cupy.float32)
    ys = cupy.empty((P, D), dtype=cupy.float32)
    out = cupy.empty((N, D), dtype=cupy.float32)
    if N == 0:
        return out
    row_tiles = math.ceil(N / TILE_ROWS)  # an expert gets at most N pairs
    gate_up_name, down_name = names
    kernel("experts.cu", gate_up_name)((math.ceil(I / TILE_COLS), row_tiles, E), (threads,),
                                       (x, order, offsets, *gate_up_args, hidden, np.int32(A), np.int32(D), np.int32(I)))
    kernel("experts.cu", down_name)((math.ceil(D / TILE_COLS), row_tiles, E), (threads,),
                                    (hidden, order, offsets, *down_args, route_w, ys, np.int32(D), np.int32(I)))
    kernel("experts.cu", "expert_combine")(blocks(N * D, 256), (256,), (ys, out, np.int32(N), np.int32(A), np.int32(D)))
    return out


# --- attention --------------------------------------------------------------------------------------

ATTENTION_VARIANTS = ("auto", "scalar")


def attention(q, k1, v1, pos1, k2, v2, pos2, q_pos0, *, causal, window=0, valid=None, scale=1.0, chunk=None,
              variant="auto"):
    """Softmax attention of q [B, H, Tq, d] (float32, positions q_pos0 + i) over two key segments:
    k1, v1 [B, K, S1, d] at positions pos1 + j (the cache) and k2, v2 [B, K, S2, d] at pos2 + j (this
    call's tokens), float32 or bf16 bits, never concatenated. causal / window (0: none) / valid [B, L]
    (bool over absolute positions, None: all valid) choose the visible keys: the launch arguments of a
    tinydg.attention.Visibility. One warp per query row, float32 online softmax; chunk: keys per split
    (None picks one). variant: "auto" reads bf16 keys with 16-byte loads (attention_partial_bf16x8)
    when d % 8 == 0, "scalar" always takes attention_partial_*. -> [B, H, Tq, d] float32.
    Twin: tinydg.gpu.twins.attention (tinydg.attention.attention over the concatenated keys)."""
    import cupy
    if variant not in ATTENTION_VARIANTS:
        raise ValueError(f"variant must be one of {ATTENTION_VARIANTS}, got {variant!r}")
    q = cupy.ascontiguousarray(q, dtype=cupy.float32)
    B, H, Tq, d = q.shape
    K, S1, S2 = k1.shape[1], k1.shape[2], k2.shape[2]
    if d > ATTENTION_MAX_HEAD_DIM:
        raise ValueError(f"attention kernel supports head_dim <= {ATTENTION_MAX_HEAD_DIM}, got {d}")
    if H % K:
        raise ValueError(f"query heads {H} are not a multiple of KV heads {K}")
    dtype = suffix(k1)
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
    if (variant == "auto" and dtype == "bf16" and d % 8 == 0
            and all(a.data.ptr % 16 == 0 for a in (k1, v1, k2, v2) if a.size)):
        dtype = "bf16x8"
    kernel("attention.cu", f"attention_partial_{dtype}")(
       (math.ceil(32 * rows / 128), splits), (128,),
       (q, k1, v1, np.int32(S1), np.int64(pos1), k2, v2, np.int32(S2), np.int64(pos2), valid,
        np.int64(valid.shape[1]), np.int64(q_pos0), np.int32(bool(causal)), np.int32(window), np.int32(B),
        np.int32(H), np.int32(K), np.int32(Tq), np.int32(d), np.float32(scale), np.int32(chunk), part_acc, part_ml))
    kernel("attention.cu", "attention_combine")(blocks(rows * d, 256), (256,),
                                                (part_acc, part_ml, out, np.int64(rows), np.int32(d), np.int32(splits)))
    return out
