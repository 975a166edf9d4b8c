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
(`gate_up_proj` [E, 2I, D], gate rows first) and `down_proj` [E, D, I]:

    out[n] = sum over slots a of  w[n, a] * down[e] ( gelu(gate[e] x[n]) * up[e] x[n] ),  e = idx[n, a]

`experts_dense` writes exactly that, one einsum per product over each token's chosen experts (it
gathers their weights, so it is for reading and for small models). `experts`, what runs, computes
the same sum grouped by expert: the N*A (token, expert) pairs are sorted by expert so that each
expert runs one matmul over all of its tokens; the results are put back in (token, slot) order and
summed over the A slots in a fixed order.
"""

from .attention import softmax
from .backend import namespace
from .mlp import gelu_tanh


def router(ops, h, proj, scale, per_expert_scale, top_k, eps=1e-6):
    """h [N, D]; proj [E, D]; scale [D]; per_expert_scale [E] -> weights [N, A] float32, indices [N, A].
    `ops`: the model's operations (tinydg.ops); on NumPy rms_norm, linear and route are this package's."""
    xp = namespace(h)
    D = h.shape[-1]
    x = ops.rms_norm(h, None, eps) * scale * xp.float32(D ** -0.5)  # [N, D]
    return ops.route(ops.linear(x, proj), per_expert_scale, top_k)  # [N, E] -> [N, A]


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
    """x [N, D]; idx, weights [N, A]; gate_up_proj [E, 2I, D]; down_proj [E, D, I] -> [N, D].

    Two passes over the experts, each one product per expert over all of its pairs, with the
    activation between them computed once for every pair: the loops hold nothing but the products."""
    xp = namespace(x)
    N, D = x.shape
    A = idx.shape[1]
    E, two_I, _ = gate_up_proj.shape
    I = two_I // 2
    order, offsets = expert_groups(idx, E)
    xs = x[order // A]  # [N*A, D] inputs in expert order
    bounds = offsets.tolist()
    spans = [(e, bounds[e], bounds[e + 1]) for e in range(E) if bounds[e] < bounds[e + 1]]  # the experts in use
    gate_up = xp.empty((N * A, two_I), dtype=x.dtype)
    for e, lo, hi in spans:
        xp.matmul(xs[lo:hi], gate_up_proj[e].T, out=gate_up[lo:hi])  # [n_e, 2I]
    hidden = gelu_tanh(gate_up[:, :I]) * gate_up[:, I:]  # [N*A, I]
    ys = xp.empty_like(xs)
    for e, lo, hi in spans:
        xp.matmul(hidden[lo:hi], down_proj[e].T, out=ys[lo:hi])  # [n_e, D]
    ys *= weights.reshape(-1)[order][:, None]  # each pair's routing weight
    out = xp.empty_like(ys)
    out[order] = ys  # back to (token, slot) order
    return xp.sum(out.reshape(N, A, D), axis=1)


def expert_layout(w):
    """An expert weight [E, out, in] with the same values and shape, laid out so that each expert's
    matrix transposed, w[e].T [in, out], is one contiguous block: `experts` multiplies a few rows by
    w[e].T, and BLAS does that about 15 % faster from this layout than from the checkpoint's
    (benchmarks/RESULTS.md). Arrays that are not 3-D (no other weight is) come back as they are."""
    xp = namespace(w)
    if w.ndim != 3:
        return w
    return xp.ascontiguousarray(xp.swapaxes(w, 1, 2)).swapaxes(1, 2)  # strides (out*in, 1, out)


def experts_dense(x, idx, weights, gate_up_proj, down_proj):
    """The same sum as `experts`, as the math reads: x [N, D]; idx, weights [N, A] -> [N, D].
    Gathers each token's A experts' weights ([N, A, 2I, D]), so it is for reading, not for speed."""
    xp = namespace(x)
    I = down_proj.shape[2]
    gate_up = xp.einsum("nd,nafd->naf", x, gate_up_proj[idx])  # [N, A, 2I]
    hidden = gelu_tanh(gate_up[..., :I]) * gate_up[..., I:]  # [N, A, I]
    y = xp.einsum("nai,nadi->nad", hidden, down_proj[idx])  # [N, A, D]
    return xp.einsum("na,nad->nd", weights, y)  # [N, D]
