"""Long prompts attended in blocks of queries (tinydg.attention.attend): each block over only the keys
it may see gives the numbers of one pass, and memory that grows linearly with the prompt."""

import dataclasses
import functools
import os
import tracemalloc

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import tinydg
from helpers import FIXTURES
from tinydg.attention import Visibility, attend


def segments(r, B, K, G, S, T, d):
    q = r.standard_normal((B, K * G, T, d)).astype(np.float32)
    past_k, past_v = (r.standard_normal((B, K, S, d)).astype(np.float32) for _ in range(2))
    k, v = (r.standard_normal((B, K, T, d)).astype(np.float32) for _ in range(2))
    return q, past_k, past_v, k, v


@settings(max_examples=150, deadline=None)
@given(B=st.integers(1, 2), K=st.integers(1, 2), G=st.sampled_from([1, 2]), S=st.integers(0, 20),
       T=st.integers(1, 70), start=st.integers(0, 5), causal=st.booleans(), window=st.sampled_from([0, 1, 3, 16]),
       block=st.integers(1, 33), pad=st.booleans(), seed=st.integers(0, 2**31))
def test_blocks_of_queries_equal_one_pass(B, K, G, S, T, start, causal, window, block, pad, seed):
    r = np.random.default_rng(seed)
    q, past_k, past_v, k, v = segments(r, B, K, G, S, T, 8)
    q_start = start + S  # the cache holds positions q_start - S .. q_start - 1
    valid = np.ones((B, q_start + T), dtype=bool)
    if pad:
        for b in range(B):
            valid[b, : int(r.integers(0, q_start + T))] = False
    visibility = Visibility(q_start, S, causal, window, valid)
    whole = attend(q, past_k, past_v, k, v, visibility, block=T)
    blocked = attend(q, past_k, past_v, k, v, visibility, block=block)
    np.testing.assert_allclose(blocked, whole, rtol=1e-6, atol=1e-6)  # sums in another order: an ulp or so


def test_a_whole_encode_in_blocks_equals_one_pass():
    """The fixture whose prompt is several sliding windows long, encoded with blocks of 3 queries: the
    same hidden states and the same cache as in one pass (float32 sums in another order, carried through
    the layers: within 1e-5)."""
    model = tinydg.load(os.path.join(FIXTURES, "long_prompt_multi"))
    blocked = dataclasses.replace(model, ops=dataclasses.replace(
        model.ops, attend=functools.partial(attend, block=3)))
    rec = dict(np.load(os.path.join(FIXTURES, "long_prompt_multi", "reference.npz")))
    ids, mask = rec["input_ids"], rec["attention_mask"]
    assert ids.shape[1] > 3 * 4 and model.text.sliding_window < ids.shape[1]
    h1, c1 = tinydg.encode(model, ids, attention_mask=mask)
    h2, c2 = tinydg.encode(blocked, ids, attention_mask=mask)
    real = mask.astype(bool)
    np.testing.assert_allclose(h2[real], h1[real], rtol=1e-5, atol=1e-5)
    assert c1.length == c2.length and np.array_equal(c1.valid, c2.valid)
    for a, b in zip(c1.keys + c1.values, c2.keys + c2.values):
        assert a.shape == b.shape
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)


def test_memory_grows_linearly_with_the_prompt():
    """A causal layer over 4096 prompt tokens: one pass would hold [B, H, T, T] float32 scores (128 MiB
    here); blocks of 256 queries hold at most [B, H, 256, T] at a time."""
    r = np.random.default_rng(0)
    T = 4096
    q, past_k, past_v, k, v = segments(r, 1, 1, 2, 0, T, 8)
    visibility = Visibility(0, 0, True, 0, np.ones((1, T), dtype=bool))
    tracemalloc.start()
    attend(q, past_k, past_v, k, v, visibility, block=256)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    one_pass_scores = 2 * T * T * 4
    assert peak < one_pass_scores / 4, f"peak {peak / 2**20:.0f} MiB"
