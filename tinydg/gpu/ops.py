"""The GPU operations: the table of tinydg.ops filled with cuBLAS products and CUDA kernels.

    ops = gpu_ops("bfloat16")                                    # the kernels measured on a GPU
    ops = gpu_ops("bfloat16", Kernels(attention="gemm", fused=True))   # experimental paths, asked for by name
    ops = gpu_ops("bfloat16", emulate=True)                      # the same ops on NumPy, kernels -> twins

tinydg.load(path, backend="cupy", dtype=..., kernels=...) calls this; the model is assembled by
tinydg/layer.py and tinydg/model.py as on NumPy. What the GPU ops change:
- every product is cuBLAS (bf16 x bf16 -> float32 for bf16 weights), activations stay float32;
- attention reads the cache and this call's keys as two segments, with the Visibility turned into
  launch arguments (no mask array), and a bf16 model's keys and values are kept in bf16; a prompt
  with images (whose placeholder runs the kernels' arguments cannot express) takes the readable
  attention with the Visibility's mask, on the GPU;
- the router and experts run as a top-k kernel, a counting sort and grouped GEMMs;
- RMSNorm, RoPE, gelu * up, soft-capping and the sampler's pass are the readable functions on CuPy
  arrays, or with Kernels(fused=True) one fused launch each.
With emulate=True every launcher is its NumPy twin (tinydg.gpu.twins): the GPU assembly runs on the
CPU, which is how its wiring is tested without a GPU.
"""

import dataclasses
from dataclasses import dataclass

import numpy as np

from .. import attention, mlp, norms, rope, sampler, softcap
from ..bf16 import to_bits
from ..errors import InputError
from ..ops import Ops, as_stored
from ..weights import is_expert
from .experimental import attention_gemm, experts_gemm

DTYPES = ("float32", "bfloat16", "float8")
ATTENTION = ("rows", "gemm")
EXPERTS = ("grouped", "cublas")
FLOAT8_MULTIPLE = 32  # the float8 expert kernels run on the tensor cores only: D and I multiples of 32


@dataclass(frozen=True)
class Kernels:
    """Which GPU implementation runs each hot path. The defaults are the kernels that have run and
    passed their tests on a GPU (benchmarks/GPU.md); the others live in tinydg/gpu/experimental/:
    compiled and tested on the CPU against their twins, not yet run on a GPU."""
    attention: str = "rows"  # "rows": one warp per query row, online softmax; "gemm": cuBLAS (experimental)
    experts: str = "grouped"  # "grouped": grouped-GEMM RawKernels; "cublas": batched cuBLAS GEMMs (experimental)
    fused: bool = False  # one launch each for RMSNorm, RoPE, gelu * up, soft-cap, sampler pass (experimental)

    def __post_init__(self):
        if self.attention not in ATTENTION:
            raise InputError(f"Kernels.attention must be one of {ATTENTION}, got {self.attention!r}")
        if self.experts not in EXPERTS:
            raise InputError(f"Kernels.experts must be one of {EXPERTS}, got {self.experts!r}")
        if not isinstance(self.fused, bool):
            raise InputError(f"Kernels.fused must be True or False, got {self.fused!r}")

    @classmethod
    def of(cls, kernels):
        """A Kernels from None (the defaults), a Kernels, or a dict of its fields."""
        if kernels is None:
            return cls()
        if isinstance(kernels, cls):
            return kernels
        if isinstance(kernels, dict):
            unknown = set(kernels) - {f.name for f in dataclasses.fields(cls)}
            if unknown:
                raise InputError(f"unknown kernel options {sorted(unknown)}: choose from attention, experts, fused")
            return cls(**kernels)
        raise InputError(f"kernels must be a tinydg.gpu.Kernels or a dict, got {type(kernels).__name__}")

    def __str__(self):
        return f"attention={self.attention}, experts={self.experts}, fused={'on' if self.fused else 'off'}"


def check_choice(dtype, kernels):
    """Refuse kernel options the weights' dtype cannot run."""
    if kernels.attention == "gemm" and dtype == "float32":
        raise InputError("Kernels(attention='gemm') needs bf16 keys: dtype 'bfloat16' or 'float8'")
    if kernels.experts == "cublas" and dtype != "bfloat16":
        raise InputError("Kernels(experts='cublas') needs dtype 'bfloat16' (bf16 expert weights)")


def check_shapes(dtype, kernels, text):
    """Refuse what the CUDA kernels cannot run at the model's sizes, before any weight is uploaded."""
    if dtype == "float8" and (text.hidden_size % FLOAT8_MULTIPLE or text.moe_intermediate_size % FLOAT8_MULTIPLE):
        raise InputError(f"dtype 'float8' on the GPU needs hidden_size and moe_intermediate_size to be multiples "
                         f"of {FLOAT8_MULTIPLE} (its expert kernels are tensor-core only); this model has "
                         f"{text.hidden_size} and {text.moe_intermediate_size}: use 'bfloat16'")
    if kernels.attention == "gemm" and any(s.head_dim % 8 for s in text.layers):
        raise InputError("Kernels(attention='gemm') needs head dims that are multiples of 8 (16-byte rows)")


def gpu_ops(dtype="float32", kernels=None, *, emulate=False, text=None) -> Ops:
    """The GPU operations for weights in `dtype` ("float32", "bfloat16" or "float8") with the
    implementations `kernels` chooses (a Kernels, a dict of its fields, or None: the measured ones).
    emulate: every launcher replaced by its NumPy twin, on the CPU (the twins take any size). text:
    the model's TextConfig, to refuse sizes the kernels cannot run."""
    if dtype not in DTYPES:
        raise InputError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    kernels = Kernels.of(kernels)
    check_choice(dtype, kernels)
    if text is not None and not emulate:
        check_shapes(dtype, kernels, text)
    if emulate:
        from . import twins as lib
    else:
        from . import launchers as lib
        from . import require
        require()
    xp = lib.array_module()
    bf16 = dtype in ("bfloat16", "float8")

    def upload(host, name):
        """(host float32, its name) -> device: float32 as it is; bfloat16: matrices (>= 2-D) as bf16 bits,
        the rest float32; float8: the experts (tinydg.weights.is_expert) as tinydg.fp8.Float8Rows, made on
        the device."""
        host = np.asarray(host, dtype=np.float32)
        if dtype == "float8" and is_expert(name):
            return lib.quantize_rows(xp.asarray(host))
        if bf16 and host.ndim >= 2:
            return xp.asarray(to_bits(host))
        return xp.asarray(host)

    def embedding(E, ids):
        return lib.to_float32(E[ids])

    def attend_dense(q, past_k, past_v, k, v, visibility):
        """tinydg.attention.attention over [cache ; new] keys made float32, masked by visibility.mask: the
        path of an encoder call with image runs (a prompt with images is encoded once)."""
        keys = xp.concatenate([lib.to_float32(past_k), lib.to_float32(k)], axis=2)  # [B, K, S + T, d]
        values = xp.concatenate([lib.to_float32(past_v), lib.to_float32(v)], axis=2)
        return attention.attention(q, keys, values, visibility.mask)

    def attend_rows(q, past_k, past_v, k, v, visibility):
        """The Visibility as kernels.attention's launch arguments: the cache segment ends where this
        call's keys start, at the first query's position. Image runs: attend_dense."""
        if visibility.runs:
            return attend_dense(q, past_k, past_v, k, v, visibility)
        start = visibility.q_start
        return lib.attention(q, past_k, past_v, start - past_k.shape[2], k, v, start, start,
                             causal=visibility.causal, window=visibility.window, valid=visibility.valid)

    def attend_gemm(q, past_k, past_v, k, v, visibility):
        if visibility.runs:
            return attend_dense(q, past_k, past_v, k, v, visibility)
        return attention_gemm.attention(q, past_k, past_v, k, v, visibility, lib)

    def experts_cublas(x, idx, weights, gate_up_proj, down_proj):
        return experts_gemm.experts(x, idx, weights, gate_up_proj, down_proj, lib)

    fused = kernels.fused
    if dtype == "float8":
        experts = lib.experts_fp8
    else:
        experts = experts_cublas if kernels.experts == "cublas" else lib.experts
    return Ops(
        backend="cupy", dtype=dtype, options=str(kernels) + (", emulated on NumPy" if emulate else ""), xp=xp,
        upload=upload,
        kv_dtype=xp.uint16 if bf16 else xp.float32,
        embedding=embedding,
        linear=lib.linear,
        matmul=lib.matmul,
        rms_norm=lib.rms_norm if fused else norms.rms_norm,
        rope=lib.apply_rope if fused else rope.apply_rope,
        gelu_mul=lib.gelu_mul if fused else mlp.gelu_mul,
        to_cache=lib.to_bf16 if bf16 else as_stored,
        attend=attend_gemm if kernels.attention == "gemm" else attend_rows,
        route=lib.router_topk,
        experts=experts,
        softcap=lib.softcap if fused else softcap.softcap,
        propose=lib.propose if fused else sampler.propose,
    )
