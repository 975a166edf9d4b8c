"""Properties of the leaf math (hypothesis), and each leaf against a plain re-derivation."""

import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra.numpy import arrays

from tinydg.attention import attention, causal_mask, sliding_window_mask, softmax
from tinydg.mlp import gelu_tanh
from tinydg.moe import expert_groups, expert_layout, experts, experts_dense, router
from tinydg.norms import rms_norm
from tinydg.ops import numpy_ops
from tinydg.rope import apply_rope, cos_sin, inv_freq

finite = st.floats(-20, 20, allow_nan=False, width=32)


def rand(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


# --- RMSNorm -------------------------------------------------------------------------------------

@given(arrays(np.float32, st.tuples(st.integers(1, 4), st.integers(1, 48)), elements=finite),
       st.floats(0.01, 100))
def test_rms_norm_is_scale_invariant(x, c):
    x = x + np.float32(0.5)  # keep rows away from all-zero, where eps dominates
    y1, y2 = rms_norm(x, None, 1e-12), rms_norm(x * np.float32(c), None, 1e-12)
    np.testing.assert_allclose(y1, y2, rtol=1e-4, atol=1e-4)


@given(st.integers(1, 64), st.integers(0, 2**32 - 1))
def test_rms_norm_unit_rms_and_weight(D, seed):
    rng = np.random.default_rng(seed)
    x, w = rand(rng, 3, D, scale=3.0), rand(rng, D)
    y = rms_norm(x, None, 0.0)
    np.testing.assert_allclose(np.sqrt(np.mean(y * y, axis=-1)), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(rms_norm(x, w, 1e-6), rms_norm(x, None, 1e-6) * w)  # weight as is, not 1 + w


# --- RoPE ----------------------------------------------------------------------------------------

head_dims = st.sampled_from([8, 16, 32, 64, 256, 512])


@given(head_dims, st.sampled_from(["default", "proportional"]), st.integers(0, 300_000), st.integers(0, 2**32 - 1))
def test_rope_preserves_norms(d, kind, pos, seed):
    x = rand(np.random.default_rng(seed), 1, 1, 2, d)
    cos, sin = cos_sin(np.array([pos]), inv_freq(d, kind, 1e6, 0.25))
    y = apply_rope(x, cos, sin)
    np.testing.assert_allclose(np.linalg.norm(y, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-5)


@given(head_dims, st.sampled_from([0.125, 0.25, 0.5, 1.0]), st.integers(0, 100_000), st.integers(0, 2**32 - 1))
def test_proportional_rope_leaves_other_dims_untouched(d, factor, pos, seed):
    x = rand(np.random.default_rng(seed), 1, 1, 1, d)
    cos, sin = cos_sin(np.array([pos]), inv_freq(d, "proportional", 1e6, factor))
    y = apply_rope(x, cos, sin)
    rotated = int(factor * d // 2)
    still = np.ones(d, bool)
    still[:rotated] = still[d // 2:d // 2 + rotated] = False  # dim j rotates with j + d/2
    np.testing.assert_array_equal(y[..., still], x[..., still])


def test_proportional_frequencies_use_the_full_head_dim():
    f = inv_freq(512, "proportional", 1e6, 0.25)
    assert f.shape == (256,) and np.all(f[64:] == 0) and np.all(f[:64] > 0)
    np.testing.assert_allclose(f[:64], 1e6 ** (-np.arange(0, 128, 2) / 512), rtol=1e-5)


@given(head_dims, st.integers(0, 2000), st.integers(0, 2000), st.integers(0, 500), st.integers(0, 2**32 - 1))
def test_rope_scores_depend_on_relative_position(d, p, q, shift, seed):
    rng = np.random.default_rng(seed)
    a, b = rand(rng, 1, 1, 1, d), rand(rng, 1, 1, 1, d)
    f = inv_freq(d, "default", 1e4)

    def score(i, j):
        ci, si = cos_sin(np.array([i]), f)
        cj, sj = cos_sin(np.array([j]), f)
        return float(np.sum(apply_rope(a, ci, si) * apply_rope(b, cj, sj)))

    assert score(p, q) == pytest.approx(score(p + shift, q + shift), rel=1e-3, abs=1e-3)


# --- attention -----------------------------------------------------------------------------------

def naive_attention(q, k, v, mask):
    B, H, Tq, d = q.shape
    G = H // k.shape[1]
    out = np.zeros_like(q)
    for b in range(B):
        for h in range(H):
            s = q[b, h] @ k[b, h // G].T
            m = np.broadcast_to(mask, (B, H, Tq, k.shape[2]))[b, h]
            s = np.where(m, s, -np.inf)
            for t in range(Tq):
                if m[t].any():
                    p = np.exp(s[t] - s[t][m[t]].max())
                    out[b, h, t] = (p / p.sum()) @ v[b, h // G]
    return out


@given(st.integers(1, 2), st.sampled_from([(4, 1), (4, 2), (4, 4), (2, 1)]), st.integers(1, 6), st.integers(0, 5),
       st.integers(1, 4), st.integers(0, 2**32 - 1))
def test_attention_matches_per_head_loop(B, heads, T, S, window, seed):
    H, K = heads
    rng = np.random.default_rng(seed)
    q, k, v = rand(rng, B, H, T, 8), rand(rng, B, K, S + T, 8), rand(rng, B, K, S + T, 8)
    q_pos, k_pos = np.arange(S, S + T), np.arange(S + T)
    valid = rng.random((B, S + T)) > 0.3
    mask = sliding_window_mask(q_pos, k_pos, window)[None, None] & valid[:, None, None, :]
    np.testing.assert_allclose(attention(q, k, v, mask), naive_attention(q, k, v, mask), rtol=1e-5, atol=1e-5)


def test_fully_masked_rows_give_zeros_not_nan():
    s = np.full((2, 5), -np.inf, np.float32)
    s[1, 2] = 3.0
    p = softmax(s)
    assert np.all(p[0] == 0) and p[1, 2] == 1.0


def test_masks():
    q, k = np.arange(3, 6), np.arange(0, 6)
    assert causal_mask(q, k).sum(1).tolist() == [4, 5, 6]
    assert sliding_window_mask(q, k, 2).sum(1).tolist() == [2, 2, 2]  # itself and one before


# --- MoE -----------------------------------------------------------------------------------------

@given(st.integers(1, 20), st.integers(1, 16), st.data())
def test_router_weights_renormalize(N, E, data):
    A = data.draw(st.integers(1, E))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    D = 8
    h, proj, scale = rand(rng, N, D), rand(rng, E, D), rand(rng, D)
    pes = rng.uniform(0.5, 1.5, E).astype(np.float32)
    w, idx = router(numpy_ops(), h, proj, scale, pes, A)
    assert idx.shape == (N, A) and np.all((idx >= 0) & (idx < E))
    assert all(len(set(r)) == A for r in idx.tolist())
    np.testing.assert_allclose((w / pes[idx]).sum(-1), 1.0, rtol=1e-5)
    logits = (rms_norm(h, None) * scale * np.float32(D ** -0.5)) @ proj.T
    chosen = np.take_along_axis(logits, idx, -1)
    assert np.all(np.diff(chosen, axis=-1) <= 1e-6)  # highest first
    others = logits.copy()
    np.put_along_axis(others, idx, -np.inf, -1)
    assert np.all(chosen[:, -1:] >= others.max(-1, keepdims=True) - 1e-6)


@given(st.integers(1, 30), st.integers(1, 12), st.data())
def test_experts_equal_per_token_loop(N, E, data):
    A = data.draw(st.integers(1, E))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    D, I = 8, 6
    x = rand(rng, N, D)
    idx = np.stack([rng.permutation(E)[:A] for _ in range(N)])
    if data.draw(st.booleans()):  # ragged loads: crowd everything onto few experts
        idx = np.stack([np.arange(A)] * N) % E
    w = rng.random((N, A)).astype(np.float32)
    gu, dn = rand(rng, E, 2 * I, D), rand(rng, E, D, I)
    want = np.zeros((N, D), np.float32)
    for n in range(N):
        for a in range(A):
            g = gu[idx[n, a]] @ x[n]
            want[n] += w[n, a] * (dn[idx[n, a]] @ (gelu_tanh(g[:I]) * g[I:]))
    np.testing.assert_allclose(experts(x, idx, w, gu, dn), want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(experts_dense(x, idx, w, gu, dn), want, rtol=1e-4, atol=1e-5)


@given(st.integers(1, 40), st.integers(1, 10), st.data())
def test_the_dense_experts_are_the_grouped_experts(N, E, data):
    """moe.experts_dense (the math as written) and moe.experts (grouped by expert, what runs) agree."""
    A = data.draw(st.integers(1, E))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    D, I = data.draw(st.sampled_from([4, 16, 24])), data.draw(st.sampled_from([2, 8, 12]))
    x = rand(rng, N, D)
    idx = np.stack([rng.permutation(E)[:A] for _ in range(N)])
    w = rng.random((N, A)).astype(np.float32)
    gu, dn = rand(rng, E, 2 * I, D), rand(rng, E, D, I)
    grouped = experts(x, idx, w, gu, dn)
    scale = max(1.0, float(np.abs(grouped).max()))  # float32 sums in another order: relative to the size
    np.testing.assert_allclose(experts_dense(x, idx, w, gu, dn), grouped, rtol=1e-4, atol=1e-5 * scale * D * I)


@given(st.integers(1, 40), st.integers(1, 10), st.data())
def test_the_expert_layout_changes_memory_not_values(N, E, data):
    """moe.expert_layout keeps values and shape, makes each w[e].T contiguous, and the experts computed
    from it agree with the checkpoint layout (the same products, possibly another BLAS kernel)."""
    A = data.draw(st.integers(1, E))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    D, I = data.draw(st.sampled_from([4, 16, 24])), data.draw(st.sampled_from([2, 8, 12]))
    x, w = rand(rng, N, D), rng.random((N, A)).astype(np.float32)
    idx = np.stack([rng.permutation(E)[:A] for _ in range(N)])
    gu, dn = rand(rng, E, 2 * I, D), rand(rng, E, D, I)
    gu2, dn2 = expert_layout(gu), expert_layout(dn)
    assert gu2.shape == gu.shape and np.array_equal(gu2, gu) and np.array_equal(dn2, dn)
    assert all(gu2[e].T.flags.c_contiguous and dn2[e].T.flags.c_contiguous for e in range(E))
    grouped = experts(x, idx, w, gu, dn)
    scale = max(1.0, float(np.abs(grouped).max()))
    np.testing.assert_allclose(experts(x, idx, w, gu2, dn2), grouped, rtol=1e-5, atol=1e-6 * scale * D * I)
    norm = rand(rng, D)
    assert expert_layout(norm) is norm  # only the 3-D expert weights are laid out anew


@given(arrays(np.int64, st.tuples(st.integers(1, 20), st.integers(1, 4)), elements=st.integers(0, 9)))
def test_expert_groups_is_a_stable_counting_sort(idx):
    order, offsets = expert_groups(idx, 10)
    flat = idx.reshape(-1)
    assert sorted(order.tolist()) == list(range(flat.size))
    assert np.all(np.diff(flat[order]) >= 0)
    for e in range(10):
        members = order[offsets[e]:offsets[e + 1]]
        assert np.all(flat[members] == e) and np.all(np.diff(members) > 0)


# --- against torch, where installed --------------------------------------------------------------

@given(arrays(np.float32, st.integers(1, 64), elements=finite))
def test_gelu_tanh_matches_torch(x):
    torch = pytest.importorskip("torch")
    want = torch.nn.functional.gelu(torch.from_numpy(x), approximate="tanh").numpy()
    np.testing.assert_allclose(gelu_tanh(x), want, rtol=1e-5, atol=1e-6)


@given(head_dims, st.sampled_from(["default", "proportional"]), st.sampled_from([1e4, 1e6]))
def test_inv_freq_matches_reference(d, kind, theta):
    pytest.importorskip("torch")
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    from transformers.models.diffusion_gemma.modeling_diffusion_gemma import DiffusionGemmaTextRotaryEmbedding
    from transformers import DiffusionGemmaTextConfig
    cfg = DiffusionGemmaTextConfig(head_dim=d, global_head_dim=d, num_hidden_layers=1, num_experts=2,
                                   top_k_experts=1, moe_intermediate_size=4, layer_types=["full_attention"],
                                   rope_parameters={"full_attention": {"rope_type": kind, "rope_theta": theta,
                                                                       **({"partial_rotary_factor": 0.25} if kind == "proportional" else {})}})
    fn = ROPE_INIT_FUNCTIONS[kind] if kind != "default" else DiffusionGemmaTextRotaryEmbedding.compute_default_rope_parameters
    want, _ = fn(cfg.per_layer_config["full_attention"], None, layer_type="full_attention")
    np.testing.assert_allclose(inv_freq(d, kind, theta, 0.25 if kind == "proportional" else 1.0), want.numpy(),
                               rtol=1e-6)
