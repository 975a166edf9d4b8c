"""Positions near max_position_embeddings (262,144 in the real model).

- The RoPE tables against the reference's rotary embedding at positions up to 262,143, for the tiny
  head dims and the real ones (256 sliding, 512 full): the angle and cos/sin computation, and the
  inverse frequencies (see tinydg/rope.py for the one ulp by which torch's pow may differ).
- The whole model at a large offset: tinydg's encoder after a cache of P padding positions, and
  its decoder after that, against the reference run on the new tokens alone with explicit
  position ids P, P+1, ... (padding is never attended, so both compute the same thing).
- One position past the limit is refused, naming max_position_embeddings, before any weight is
  converted: through encode, denoise and generate.
"""

import importlib.util
import json
import os
import tempfile

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import tinydg
from helpers import FIXTURES, FLOAT_KEYS, compare, draw_inputs, float32_noise
from tinydg.cache import KVCache, kept
from tinydg.errors import InputError
from tinydg.rope import cos_sin, inv_freq_for

MAX_POSITIONS = 262_144  # the real model's max_position_embeddings
F32 = os.path.join(FIXTURES, "sliding_full_f32")
HAS_REFERENCE = all(importlib.util.find_spec(m) is not None for m in ("torch", "transformers"))
needs_reference = pytest.mark.skipif(not HAS_REFERENCE, reason="torch / transformers not installed")


def padding_cache(text, batch, length, dtype=np.float32, seed=0):
    """A KVCache of `length` positions that are all padding (valid False). Keys and values are random
    blocks broadcast over the positions: per layer [B, K, kept, d] without the memory."""
    rng = np.random.default_rng(seed)

    def arrays():
        return tuple(np.broadcast_to(rng.standard_normal((batch, s.num_key_value_heads, 1, s.head_dim)).astype(dtype),
                                     (batch, s.num_key_value_heads, kept(text, s, length), s.head_dim))
                     for s in text.layers)

    return KVCache(arrays(), arrays(), length, np.zeros((batch, length), dtype=bool))


# --- one past the limit is refused before any work ---------------------------------------------------

def _ones(n):
    return np.ones((1, n), np.int64)


# Each call reaches exactly one position past max_position_embeddings (limit; C: the canvas length).
ONE_PAST = {
    "encode: prompt": lambda m, text, limit, C: tinydg.encode(m, _ones(limit + 1)),
    "encode: cache + prompt": lambda m, text, limit, C: tinydg.encode(m, _ones(3), padding_cache(text, 1, limit - 2)),
    "denoise: cache + canvas":
        lambda m, text, limit, C: tinydg.denoise(m, _ones(C), padding_cache(text, 1, limit - C + 1)),
    "generate: prompt + new tokens": lambda m, text, limit, C: tinydg.generate(m, _ones(limit - 2 * C + 1), 2 * C),
    # C + 1 new tokens take two whole canvases: the second one's last position is the one past
    "generate: rounded up to canvases":
        lambda m, text, limit, C: tinydg.generate(m, _ones(limit - 2 * C + 1), C + 1),
    "generate: cache + prompt + new tokens":
        lambda m, text, limit, C: tinydg.generate(m, _ones(2), C, cache=padding_cache(text, 1, limit - C - 1)),
}


@pytest.mark.parametrize("case", sorted(ONE_PAST))
def test_one_past_the_limit_is_refused_before_any_weight_is_converted(case):
    model = tinydg.load(F32)
    limit = model.text.max_position_embeddings
    with pytest.raises(InputError, match=f"position {limit}, past max_position_embeddings {limit}"):
        ONE_PAST[case](model, model.text, limit, model.config.canvas_length)
    assert model.weights.loaded() == 0, f"{case}: weights were converted before the refusal"


def test_exactly_at_the_limit_is_accepted():
    """The last position, max_position_embeddings - 1, is computed: the refusals above are not off by one."""
    model = tinydg.load(F32)
    text, C = model.text, model.config.canvas_length
    limit = text.max_position_embeddings
    cache = padding_cache(text, 1, limit - C - 2)
    _, cache = tinydg.encode(model, np.ones((1, 2), np.int64), cache)
    assert cache.length == limit - C
    assert tinydg.denoise(model, np.ones((1, C), np.int64), cache).shape == (1, C, text.vocab_size)
    out = tinydg.generate(model, np.ones((1, 2), np.int64), C, seed=0, max_denoising_steps=1,
                          cache=padding_cache(text, 1, limit - C - 2))
    assert out.sequences.shape == (1, 2 + C)


# --- the RoPE tables against the reference's rotary embedding ----------------------------------------

def _reference_rotary(text_overrides):
    """(transformers' DiffusionGemmaTextRotaryEmbedding, tinydg's TextConfig) for one tiny config."""
    from transformers import DiffusionGemmaConfig
    from transformers.models.diffusion_gemma.modeling_diffusion_gemma import DiffusionGemmaTextRotaryEmbedding
    from tinydg.tools import reference as ref
    config = ref.tiny_config(max_position_embeddings=MAX_POSITIONS, **text_overrides)
    with tempfile.TemporaryDirectory() as folder:
        with open(os.path.join(folder, "config.json"), "w") as f:
            json.dump(config, f)
        text = tinydg.load_config(folder)[0].text_config
    return DiffusionGemmaTextRotaryEmbedding(DiffusionGemmaConfig(**config).text_config), text


@pytest.mark.reference
@needs_reference
@pytest.mark.parametrize("head_dims", [(4, 8), (8, 16), (16, 32), (256, 512)], ids=str)
def test_rope_tables_match_the_reference_near_the_limit(head_dims):
    """Given the reference's inverse frequencies, tinydg's angles are the same float32 products and its
    cos and sin agree within an ulp (2**-24 measured). Its own inverse frequencies are the reference's,
    or one ulp off where torch's vectorised pow is (tinydg/rope.py); the angles then differ by at most
    two ulps (up to 2**-8 radians for the real full layers at 262,143), and nowhere else."""
    import torch
    rotary, text = _reference_rotary({"head_dim": head_dims[0], "global_head_dim": head_dims[1]})
    rng = np.random.default_rng(0)
    positions = np.concatenate([np.arange(MAX_POSITIONS - 144, MAX_POSITIONS), rng.integers(0, MAX_POSITIONS, 500),
                                np.arange(64)])
    for spec in text.layers:
        theirs = getattr(rotary, f"{spec.layer_type}_inv_freq").numpy()  # [d/2]
        cos_t, sin_t = (a[0].numpy() for a in rotary(torch.zeros(1), torch.as_tensor(positions)[None],
                                                      spec.layer_type))  # [T, d]
        cos, sin = cos_sin(positions, theirs)
        np.testing.assert_allclose(cos, cos_t, rtol=0, atol=2**-23, err_msg=f"{spec.layer_type} cos")
        np.testing.assert_allclose(sin, sin_t, rtol=0, atol=2**-23, err_msg=f"{spec.layer_type} sin")
        ours = inv_freq_for(spec)
        assert _ulps(ours, theirs).max() <= 1, f"{spec.layer_type}: inverse frequencies more than an ulp apart"
        angles = positions.astype(np.float32)[:, None] * ours  # [T, d/2]
        angles_t = positions.astype(np.float32)[:, None] * theirs
        assert _ulps(angles, angles_t).max() <= 2, f"{spec.layer_type}: angles more than two ulps apart"
        same = ours == theirs
        np.testing.assert_array_equal(angles[:, same], angles_t[:, same])


def _ulps(a, b):
    """|a - b| in units in the last place, for float32 arrays of one sign (as angles and frequencies are)."""
    return np.abs(a.view(np.int32).astype(np.int64) - b.view(np.int32).astype(np.int64))


# --- the whole model at a large offset ---------------------------------------------------------------

@st.composite
def small_configs(draw):
    """Tiny configurations with the real max_position_embeddings; the full layers' caches hold ~262K
    positions, so their KV heads and head dims stay small."""
    from tinydg.tools import reference as ref
    n_layers = draw(st.integers(1, 2))
    types = [draw(st.sampled_from(["sliding_attention", "full_attention"])) for _ in range(n_layers - 1)]
    heads = draw(st.sampled_from([1, 2]))
    experts = draw(st.integers(1, 4))
    return ref.tiny_config(
        layer_types=types + ["full_attention"],  # the reference forces the last layer to be full
        max_position_embeddings=MAX_POSITIONS,
        vocab_size=64,
        hidden_size=draw(st.sampled_from([16, 32])),
        num_attention_heads=heads,
        num_key_value_heads=draw(st.sampled_from([k for k in (1, 2) if heads % k == 0])),
        num_global_key_value_heads=1,
        head_dim=draw(st.sampled_from([4, 8, 16])),
        global_head_dim=draw(st.sampled_from([8, 16, 32])),
        num_experts=experts,
        top_k_experts=draw(st.integers(1, experts)),
        sliding_window=draw(st.integers(2, 8)),
        canvas_length=draw(st.integers(1, 4)),
    )


def _run_after(model, rec, cache):
    """helpers.run_tinydg, with the prompt appended to `cache` instead of starting one."""
    enc_trace, dec_trace = {}, {}
    enc_last, cache = tinydg.encode(model, rec["input_ids"], cache, attention_mask=rec["attention_mask"],
                                    trace=enc_trace)
    logits = tinydg.denoise(model, rec["canvas"], cache, trace=dec_trace)
    commit_hidden, grown = tinydg.encode(model, rec["commit_canvas"], cache)
    return {
        "enc_hidden": np.stack(enc_trace["hidden"]), "enc_last_hidden": enc_last,
        "dec_hidden": np.stack(dec_trace["hidden"]), "router_idx": np.stack(dec_trace["router_idx"]),
        "router_w": np.stack(dec_trace["router_w"]), "logits": logits,
        "logits_sc": tinydg.denoise(model, rec["canvas"], cache, rec["sc_logits"]),
        "commit_hidden": commit_hidden, "next_logits": tinydg.denoise(model, rec["next_canvas"], grown),
        "argmax": logits.argmax(-1),
        "cache_lengths": np.array([grown.layer_length(i) for i in range(len(grown.keys))]),
    }


@pytest.mark.reference
@needs_reference
@settings(max_examples=5)
@given(small_configs(), st.integers(1, 2), st.integers(1, 4), st.integers(0, 300), st.data())
def test_the_model_at_positions_near_the_limit_matches_the_reference(config, batch, prompt_len, slack, data):
    """tinydg after a cache of P padding positions, against the reference with position ids from P:
    per-layer hidden states, routing and logits of the encoder, the decoder (with and without
    self-conditioning), a committed canvas and the next one, ending at most `slack` short of 262,144."""
    from tinydg.tools import reference as ref
    seed = data.draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    C = config["canvas_length"]
    offset = MAX_POSITIONS - slack - prompt_len - 2 * C
    ids, mask, canvas, next_canvas = draw_inputs(data, rng, config, batch, prompt_len)
    with tempfile.TemporaryDirectory() as folder:
        ref.save(ref.build_model(config, seed), folder)
        rec = ref.record(ref.load_float32(folder), ids, mask, canvas, next_canvas, position_offset=offset)
        model = tinydg.load(folder)
        ours = _run_after(model, rec, padding_cache(model.text, batch, offset, seed=seed))
        text = model.text
        end = offset + prompt_len + C  # the grown cache: the padding, the prompt and the committed canvas
        assert list(ours["cache_lengths"]) == [kept(text, s, end) for s in text.layers]
        assert list(rec["cache_lengths"]) == [kept(text, s, end - offset) for s in text.layers]
        ours["cache_lengths"] = rec["cache_lengths"]
        try:
            compare(ours, rec)
        except AssertionError:
            # as in test_parity_live: within twice the reference's own float32 error, against it run in float64
            # (whose RoPE tables are still the float32 ones)
            rec64 = ref.record(ref.load_float32(folder, "sdpa").double(), ids, mask, canvas, next_canvas,
                                 position_offset=offset)
            compare(ours, {**rec, **{k: rec64[k] for k in FLOAT_KEYS}}, noise=float32_noise(rec, rec64))
