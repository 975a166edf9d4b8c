"""The operations a forward pass is made of, as one explicit value a model holds.

tinydg/layer.py and tinydg/model.py put the model together once, for every backend: every array
operation they need comes from `model.ops`, an immutable `Ops` fixed when the model is loaded.
On NumPy the ops are the readable functions themselves (`numpy_ops` below), so the function a
notebook shows is the function that runs. On a GPU, `tinydg.gpu.ops.gpu_ops` fills the same table
with cuBLAS products and CUDA kernels, chosen by explicit options and shown in `repr(model.ops)`.

The letters used in every docstring of tinydg (each module names the ones it uses):
    B batch            T tokens of one call    S cached positions     C canvas        L positions so far
    D hidden           H query heads           K key/value heads      d head dim      G = H / K
    E experts          A active experts        I intermediate size    V vocabulary    N rows (B * T)
    Im an expert's intermediate size, where the dense MLP's I appears too      M max denoising steps
"""

import operator
from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import attention, fp8, mlp, moe, norms, rope, sampler, softcap
from .weights import is_expert


@dataclass(frozen=True)
class Ops:
    """What a forward pass calls. Shapes in the comments; weights are whatever `upload` made."""
    backend: str  # "numpy" or "cupy"
    dtype: str  # the weights' dtype: "float32", "bfloat16" or "float8"
    options: str  # the choices that built these ops, for repr
    xp: object  # the array module: numpy or cupy
    upload: Callable  # (host float32 weight, its name) -> the array this backend computes with
    kv_dtype: object  # what the KV cache holds: float32, or uint16 (bf16 bits)
    embedding: Callable  # (E [V, D], ids [B, T]) -> E[ids] as float32 [B, T, D]
    linear: Callable  # (x [..., in], w [out, in]) -> x @ w.T [..., out]
    matmul: Callable  # (x [M, K], w [K, N]) -> x @ w [M, N]
    rms_norm: Callable  # (x [..., D], weight [D] or None, eps) -> [..., D]
    rope: Callable  # (x [B, T, heads, d], cos [T, d], sin [T, d]) -> [B, T, heads, d]
    gelu_mul: Callable  # (gate, up) -> gelu_tanh(gate) * up
    to_cache: Callable  # this call's k or v [B, K, T, d] -> as the cache stores it
    attend: Callable  # (q [B, H, T, d], past_k, past_v [B, K, S, d], k, v [B, K, T, d], Visibility) -> [B, H, T, d]
    route: Callable  # (router logits [N, E], per_expert_scale [E], top_k) -> weights, indices [N, A]
    experts: Callable  # (x [N, D], idx, weights [N, A], gate_up_proj [E, 2I, D], down_proj [E, D, I]) -> [N, D]
    softcap: Callable  # (logits, cap) -> cap * tanh(logits / cap), in place
    propose: Callable  # (processed [B, C, V], rng) -> proposal, draft, entropy [B, C]: the sampler's pass

    def __repr__(self):
        return f"Ops({self.backend}, {self.dtype}{', ' + self.options if self.options else ''})"


def as_stored(a):
    """The readable path's cache holds keys and values as computed."""
    return a


def numpy_upload(dtype, expert_layout=True):
    """(host float32 weight, its name) -> the array NumPy computes with. Only the experts
    (tinydg.weights.is_expert) change: quantized to float8 and back (dtype "float8"), and with
    expert_layout laid out as their products run fastest (moe.expert_layout: a copy, the same values)."""
    def upload(host, name):
        if not is_expert(name):
            return np.asarray(host)
        host = fp8.quantize_experts(host) if dtype == "float8" else np.asarray(host)
        return moe.expert_layout(host) if expert_layout else host
    return upload


def numpy_ops(dtype="float32", expert_layout=True):
    """The readable functions, on NumPy in float32. dtype "float8": the experts quantized to float8
    and back at load (tinydg.fp8.quantize_experts), so NumPy computes with the weights the GPU's
    float8 mode stores; everything else is the same. expert_layout=False keeps the experts in the
    checkpoint's layout (for weights converted at every use, where a layout copy costs more than it saves)."""
    return Ops(
        backend="numpy", dtype=dtype, options="" if expert_layout else "experts in the checkpoint's layout", xp=np,
        upload=numpy_upload(dtype, expert_layout),
        kv_dtype=np.float32,
        embedding=operator.getitem,
        linear=mlp.linear,
        matmul=operator.matmul,
        rms_norm=norms.rms_norm,
        rope=rope.apply_rope,
        gelu_mul=mlp.gelu_mul,
        to_cache=as_stored,
        attend=attention.attend,
        route=moe.route,
        experts=moe.experts,
        softcap=softcap.softcap,
        propose=sampler.propose,
    )
