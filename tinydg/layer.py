"""One DiffusionGemma layer, shared by the encoder and the decoder and by every backend (transformers
`DiffusionGemma{Encoder,Decoder}TextLayer`): attention, then a dense MLP beside a mixture of
experts, with seven RMSNorms and a per-side `layer_scalar`:

    h   = x + post_attention_layernorm( attn( input_layernorm(x) ) )
    a   = post_feedforward_layernorm_1( mlp( pre_feedforward_layernorm(h) ) )
    b   = post_feedforward_layernorm_2( experts( pre_feedforward_layernorm_2(h), router(h) ) )
    out = ( h + post_feedforward_layernorm(a + b) ) * layer_scalar

Every array operation goes through `ops` (tinydg.ops): the readable functions on NumPy, cuBLAS and
CUDA kernels on a GPU. Letters: B batch, T tokens of this call, D hidden, H query heads, K KV heads,
d head dim, S cached positions of this layer, N = B * T.
"""

from .backend import namespace
from .mlp import gated_mlp
from .moe import router


def qkv(ops, x, lw, spec, cos, sin, eps):
    """x [B, T, D] -> q [B, H, T, d], k [B, K, T, d], v [B, K, T, d] for this call's tokens.

    Full-attention layers have no v_proj: v is the raw k projection (before k_norm and RoPE)."""
    xp = namespace(x)
    B, T, _ = x.shape
    d = spec.head_dim
    q = ops.linear(x, lw["self_attn.q_proj.weight"]).reshape(B, T, -1, d)  # [B, T, H, d]
    k = ops.linear(x, lw["self_attn.k_proj.weight"]).reshape(B, T, -1, d)  # [B, T, K, d]
    v = ops.linear(x, lw["self_attn.v_proj.weight"]).reshape(B, T, -1, d) if spec.is_sliding else k
    q = ops.rope(ops.rms_norm(q, lw["self_attn.q_norm.weight"], eps), cos, sin)
    k = ops.rope(ops.rms_norm(k, lw["self_attn.k_norm.weight"], eps), cos, sin)
    v = ops.rms_norm(v, None, eps)
    heads_first = (0, 2, 1, 3)  # [B, T, heads, d] -> [B, heads, T, d]
    return xp.transpose(q, heads_first), xp.transpose(k, heads_first), xp.transpose(v, heads_first)


def attention_block(ops, x, lw, spec, cos, sin, past_k, past_v, visibility, eps):
    """Self-attention of this call's tokens over [past ; new] keys, as `visibility` allows.

    x [B, T, D]; past_k, past_v [B, K, S, d]. Returns the output [B, T, D] and this call's k, v
    [B, K, T, d] as the cache stores them (what the encoder caches)."""
    xp = namespace(x)
    B, T, _ = x.shape
    q, k, v = qkv(ops, x, lw, spec, cos, sin, eps)
    k, v = ops.to_cache(k), ops.to_cache(v)  # a bf16 model attends to bf16 keys, as its cache holds them
    o = ops.attend(q, past_k, past_v, k, v, visibility)  # [B, H, T, d], scale 1.0
    o = xp.transpose(o, (0, 2, 1, 3)).reshape(B, T, -1)  # [B, T, H*d]
    return ops.linear(o, lw["self_attn.o_proj.weight"]), k, v


def feed_forward(ops, h, lw, top_k, eps, trace=None):
    """The dense MLP and the experts side by side. h [B, T, D] -> a + b [B, T, D]."""
    xp = namespace(h)
    B, T, D = h.shape
    a = gated_mlp(ops, ops.rms_norm(h, lw["pre_feedforward_layernorm.weight"], eps),
                  lw["mlp.gate_proj.weight"], lw["mlp.up_proj.weight"], lw["mlp.down_proj.weight"])
    a = ops.rms_norm(a, lw["post_feedforward_layernorm_1.weight"], eps)
    flat = h.reshape(B * T, D)  # [N, D]
    w, idx = router(ops, flat, lw["router.proj.weight"], lw["router.scale"], lw["router.per_expert_scale"], top_k, eps)
    if trace is not None:
        trace.setdefault("router_idx", []).append(idx.astype(xp.int64, copy=False))
        trace.setdefault("router_w", []).append(w)
    b = ops.experts(ops.rms_norm(flat, lw["pre_feedforward_layernorm_2.weight"], eps), idx, w,
                    lw["experts.gate_up_proj"], lw["experts.down_proj"]).reshape(B, T, D)
    b = ops.rms_norm(b, lw["post_feedforward_layernorm_2.weight"], eps)
    return a + b


def layer_forward(ops, x, lw, spec, text, cos, sin, past_k, past_v, visibility, trace=None):
    """One layer. x [B, T, D] -> out [B, T, D], k, v [B, K, T, d]."""
    eps = text.rms_norm_eps
    attn, k, v = attention_block(ops, ops.rms_norm(x, lw["input_layernorm.weight"], eps), lw, spec, cos, sin,
                                 past_k, past_v, visibility, eps)
    h = x + ops.rms_norm(attn, lw["post_attention_layernorm.weight"], eps)
    ff = feed_forward(ops, h, lw, text.top_k_experts, eps, trace)
    out = (h + ops.rms_norm(ff, lw["post_feedforward_layernorm.weight"], eps)) * lw["layer_scalar"]
    return out, k, v
