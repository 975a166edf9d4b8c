"""Mixture of experts: the router and the experts, grouped by expert.

Letters: N tokens (batch x sequence, flattened), D hidden, E experts, A active experts per token
(top_k_experts), I expert intermediate size.

Router (transformers `DiffusionGemmaTextRouter`), all float32:
    p = softmax( proj( rms_norm(h) * scale * D**-0.5 ) )      # [N, E]
    w, idx = top-A of p, sorted by probability, highest first  # [N, A]
    w = w / sum(w) * per_expert_scale[idx]
Note the router reads the layer's residual stream h, not the pre_feedforward_layernorm_2 output
that the experts read.

Experts (`DiffusionGemmaTextExperts`), each a gated MLP with gate and up stacked in one matrix
(`gate_up_proj` [E, 2I, D], gate rows first) and `down_proj` [E, D, I]. The N*A (token, expert)
pairs are sorted by expert so that each expert runs one matmul over all of its tokens; the
results are put back in (token, slot) order and summed over the A slots in a fixed order.
"""

from .attention import softmax
from .backend import namespace
from .mlp import gelu_tanh
from .norms import rms_norm


def router(h, proj, scale, per_expert_scale, top_k, eps=1e-6):
    """h [N, D]; proj [E, D]; scale [D]; per_expert_scale [E] -> weights [N, A] float32, indices [N, A] int64."""
    xp = namespace(h)
    D = h.shape[-1]
    x = rms_norm(h, None, eps) * scale * xp.float32(D ** -0.5)
    return route(x @ proj.T, per_expert_scale, top_k)


def route(logits, per_expert_scale, top_k):
    """The router after its projection: logits [N, E] -> weights [N, A], indices [N, A]."""
    xp = namespace(logits)
    probs = softmax(logits)  # [N, E]
    # top-k, highest first; the stable sort keeps the lower expert id first on exact ties
    idx = xp.argsort(-probs, axis=-1, kind="stable")[:, :top_k]  # [N, A]
    w = xp.take_along_axis(probs, idx, axis=-1)
    w = w / xp.sum(w, axis=-1, keepdims=True)
    return w * per_expert_scale[idx], idx


def expert_groups(idx, num_experts):
    """Sort the (token, slot) pairs by expert.

    idx [N, A] -> order [N*A] (flat pair ids grouped by expert, stable), offsets [E+1] (expert e owns
    order[offsets[e]:offsets[e+1]]). A counting sort: no loop over tokens.
    """
    xp = namespace(idx)
    flat = idx.reshape(-1)
    order = xp.argsort(flat, kind="stable")
    counts = xp.bincount(flat, minlength=num_experts)
    offsets = xp.concatenate([xp.zeros(1, dtype=counts.dtype), xp.cumsum(counts)])
    return order, offsets


def experts(x, idx, weights, gate_up_proj, down_proj):
    """x [N, D]; idx, weights [N, A]; gate_up_proj [E, 2I, D]; down_proj [E, D, I] -> [N, D]."""
    xp = namespace(x)
    N, D = x.shape
    A = idx.shape[1]
    E, two_I, _ = gate_up_proj.shape
    I = two_I // 2
    order, offsets = expert_groups(idx, E)
    token = order // A  # the token of each sorted pair
    xs = x[token]  # [N*A, D] inputs in expert order
    ys = xp.empty_like(xs)
    bounds = offsets.tolist()
    for e in range(E):  # one matmul per expert over all of its tokens
        lo, hi = bounds[e], bounds[e + 1]
        if lo == hi:
            continue
        gate_up = xs[lo:hi] @ gate_up_proj[e].T  # [n_e, 2I]
        hidden = gelu_tanh(gate_up[:, :I]) * gate_up[:, I:]  # [n_e, I]
        ys[lo:hi] = hidden @ down_proj[e].T  # [n_e, D]
    out = xp.empty_like(ys)
    out[order] = ys  # back to (token, slot) order
    return xp.sum(out.reshape(N, A, D) * weights[:, :, None], axis=1)
