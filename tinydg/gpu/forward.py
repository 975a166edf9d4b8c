"""The forward pass on the GPU: tinydg.model's pieces and tinydg.layer, step for step, with the hot
paths swapped for CUDA (cuBLAS projections, the attention and MoE RawKernels in kernels.py).

Read tinydg/layer.py and tinydg/model.py first: this file follows them line by line. The readable
softmax runs unchanged on CuPy arrays. What changes:
- every `x @ W.T` is `linear(x, W)` (cuBLAS; W float32 or bf16 bits),
- attention takes the cache and this call's keys as two segments and builds no mask array,
- the router and experts run as router_topk + counting sort + grouped GEMMs + combine,
- RMSNorm, RoPE, gelu * up, soft-capping and the sampler's pass over the vocabulary go through
  kernels.rms_norm / apply_rope / gelu_mul / softcap / propose: the readable functions, or with
  kernels.FUSED_KERNELS one fused launch each.
Activations are float32 throughout; with bf16 weights each product rounds its input to bf16 and
accumulates in float32, and the KV cache holds bf16 (as uint16 bits, like the weights).
"""

import functools

import numpy as np

from ..attention import softmax
from ..backend import namespace
from ..rope import cos_sin, inv_freq_for
from ..weights import DECODER
from . import kernels
from .blas import linear, matmul  # tests on the CPU swap these and kernels for their twins

SC_ROWS_PER_CHUNK = 64  # as tinydg.model


def gated_mlp(x, gate_proj, up_proj, down_proj):
    """tinydg.mlp.gated_mlp with cuBLAS products."""
    return linear(kernels.gelu_mul(linear(x, gate_proj), linear(x, up_proj)), down_proj)


# --- tinydg.model's pieces ------------------------------------------------------------------------------

def embed(weights, ids, hidden_size):
    E = weights[DECODER + "embed_tokens.weight"]
    return kernels.to_float32(E[ids]) * np.float32(hidden_size ** 0.5)


def soft_embedding(weights, logits, hidden_size):
    xp = namespace(logits)
    E = weights[DECODER + "embed_tokens.weight"]
    B, C, V = logits.shape
    flat = logits.reshape(B * C, V)
    out = xp.empty((B * C, E.shape[1]), dtype=xp.float32)
    for lo in range(0, B * C, SC_ROWS_PER_CHUNK):
        out[lo:lo + SC_ROWS_PER_CHUNK] = matmul(softmax(flat[lo:lo + SC_ROWS_PER_CHUNK].astype(xp.float32)), E)
    return (out * np.float32(hidden_size ** 0.5)).reshape(B, C, -1)


def self_conditioning(weights, inputs_embeds, soft, eps):
    p = DECODER + "self_conditioning."
    n = kernels.rms_norm(soft, weights[p + "pre_norm.weight"], eps)
    signal = gated_mlp(n, weights[p + "gate_proj.weight"], weights[p + "up_proj.weight"], weights[p + "down_proj.weight"])
    return kernels.rms_norm(inputs_embeds + signal, None, eps)


def lm_head(weights, hidden, softcap):
    return kernels.softcap(linear(hidden, weights[DECODER + "embed_tokens.weight"]), softcap)


def propose(processed, rng):
    """tinydg.sampler.propose (generation's pass over the vocabulary), or with kernels.FUSED_KERNELS
    one kernel per slice of rows."""
    return kernels.propose(processed, rng)


# --- tinydg.layer ---------------------------------------------------------------------------------------

def attention_block(x, lw, spec, text, cos, sin, cache, i, valid, encoder):
    """As tinydg.layer.attention_block; the keys are [cache.keys[i] ; this call's k] as two segments.
    valid [B, cache.length + T]: real tokens over every position so far."""
    B, T, _ = x.shape
    d, eps = spec.head_dim, text.rms_norm_eps
    q = linear(x, lw["self_attn.q_proj.weight"]).reshape(B, T, -1, d)
    k = linear(x, lw["self_attn.k_proj.weight"]).reshape(B, T, -1, d)
    v = linear(x, lw["self_attn.v_proj.weight"]).reshape(B, T, -1, d) if spec.is_sliding else k
    q = kernels.apply_rope(kernels.rms_norm(q, lw["self_attn.q_norm.weight"], eps), cos, sin)
    k = kernels.apply_rope(kernels.rms_norm(k, lw["self_attn.k_norm.weight"], eps), cos, sin)
    v = kernels.rms_norm(v, None, eps)
    q, k, v = (a.transpose(0, 2, 1, 3) for a in (q, k, v))  # [B, heads, T, d]
    if lw["self_attn.q_proj.weight"].dtype == np.uint16:  # bf16 weights: keys and values kept in bf16,
        k, v = kernels.to_bf16(k), kernels.to_bf16(v)      # as the reference's bf16 cache holds them
    past_k, past_v = cache.keys[i], cache.values[i]
    S = past_k.shape[2]
    window = text.sliding_window if (encoder and spec.is_sliding) else 0  # the decoder sees all it keeps
    o = kernels.attention(q, past_k, past_v, cache.length - S, k, v, cache.length, cache.length,
                          causal=encoder, window=window, valid=valid)
    o = o.transpose(0, 2, 1, 3).reshape(B, T, -1)
    return linear(o, lw["self_attn.o_proj.weight"]), k, v


def feed_forward(h, lw, top_k, eps, trace=None):
    B, T, D = h.shape
    a = gated_mlp(kernels.rms_norm(h, lw["pre_feedforward_layernorm.weight"], eps),
                  lw["mlp.gate_proj.weight"], lw["mlp.up_proj.weight"], lw["mlp.down_proj.weight"])
    a = kernels.rms_norm(a, lw["post_feedforward_layernorm_1.weight"], eps)
    flat = h.reshape(B * T, D)
    x = kernels.rms_norm(flat, None, eps) * lw["router.scale"] * np.float32(D ** -0.5)
    w, idx = kernels.router_topk(linear(x, lw["router.proj.weight"]), lw["router.per_expert_scale"], top_k)
    if trace is not None:
        trace.setdefault("router_idx", []).append(idx.astype(np.int64))
        trace.setdefault("router_w", []).append(w)
    b = kernels.experts(kernels.rms_norm(flat, lw["pre_feedforward_layernorm_2.weight"], eps), idx, w,
                        lw["experts.gate_up_proj"], lw["experts.down_proj"]).reshape(B, T, D)
    b = kernels.rms_norm(b, lw["post_feedforward_layernorm_2.weight"], eps)
    return a + b


def layer_forward(x, lw, spec, text, cos, sin, cache, i, valid, encoder, trace=None):
    eps = text.rms_norm_eps
    attn, k, v = attention_block(kernels.rms_norm(x, lw["input_layernorm.weight"], eps), lw, spec, text, cos, sin,
                                 cache, i, valid, encoder)
    h = x + kernels.rms_norm(attn, lw["post_attention_layernorm.weight"], eps)
    ff = feed_forward(h, lw, text.top_k_experts, eps, trace)
    out = (h + kernels.rms_norm(ff, lw["post_feedforward_layernorm.weight"], eps)) * lw["layer_scalar"]
    return out, k, v


@functools.lru_cache(maxsize=None)
def device_inv_freq(spec, xp):
    """inv_freq_for(spec), copied to the device once: a forward then makes no host-to-device copy
    (one that a CUDA graph could not capture)."""
    return xp.asarray(inv_freq_for(spec))


def run_layers(model, x, cache, positions, valid, encoder, trace):
    """As tinydg.model._run_layers: every layer, then the final norm; returns each layer's new k, v."""
    text, xp = model.text, namespace(x)
    tables = {}
    for spec in text.layers:
        if spec.layer_type not in tables:
            tables[spec.layer_type] = cos_sin(positions, device_inv_freq(spec, xp))
    new_k, new_v = [], []
    for i, spec in enumerate(text.layers):
        x, k, v = layer_forward(x, model.weights.layer(i, encoder=encoder), spec, text, *tables[spec.layer_type],
                                cache, i, valid, encoder, trace)
        new_k.append(k)
        new_v.append(v)
        if trace is not None:
            trace.setdefault("hidden", []).append(x)
    return kernels.rms_norm(x, model.weights[DECODER + "norm.weight"], text.rms_norm_eps), new_k, new_v
