"""tinydg.gpu.experimental.attention_gemm on the CPU: the same code that drives cuBLAS, with cuBLAS's column-major
strided-batched GEMM emulated in NumPy (twins.gemm_strided) and the masked softmax's twin. It must
equal the readable attention with q and the probabilities rounded to bf16, over segments, positions,
causal and sliding windows, padding, GQA and query chunking. On a GPU, tests/test_gpu.py runs it
with cuBLAS and the CUDA softmax."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import draw_segments, gemm_attention_oracle
from tinydg.attention import Visibility
from tinydg.bf16 import from_bits, to_bits
from tinydg.gpu import twins
from tinydg.gpu.experimental import attention_gemm


@settings(max_examples=150, deadline=None)
@given(B=st.integers(1, 2), K=st.integers(1, 3), G=st.sampled_from([1, 2, 4]), Tq=st.integers(1, 24),
       S1=st.integers(0, 40), d=st.sampled_from([8, 16, 32]), causal=st.booleans(),
       window=st.sampled_from([0, 1, 3, 16]), pad=st.booleans(), score_bytes=st.sampled_from([1 << 28, 4096, 1]),
       scale=st.sampled_from([1.0, 0.125]), seed=st.integers(0, 2**31))
def test_gemm_attention_equals_the_readable_attention(B, K, G, Tq, S1, d, causal, window, pad, score_bytes, scale,
                                                      seed):
    q, k1, v1, pos1, k2, v2, pos2, valid = draw_segments(seed, B, K, G, Tq, S1, d, pad)
    visibility = Visibility(pos2, S1, causal, window, valid)  # the cache ends where this call's keys start
    got = attention_gemm.attention(q, k1, v1, k2, v2, visibility, twins, scale=scale, score_bytes=score_bytes)
    want = gemm_attention_oracle(q, k1, v1, pos1, k2, v2, pos2, pos2, causal, window, valid, scale)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    # and the float32 attention (kernels.attention's twin) up to bf16 rounding of q and probabilities
    exact = twins.attention(q, k1, v1, pos1, k2, v2, pos2, pos2, causal=causal, window=window, valid=valid, scale=scale)
    np.testing.assert_allclose(got, exact, atol=0.05 * max(1.0, float(np.abs(exact).max())))


def test_the_decoder_canvas_at_the_real_sizes_is_one_chunk_of_aligned_columns():
    """A sliding decoder layer of the real model: 16 heads over 8 KV heads, 1023 cached keys and 256 canvas
    keys fit in one chunk; the canvas keys start at column 1024, a multiple of 8."""
    assert attention_gemm.rows_per_chunk(256, 8, 2, 1023 + 256, 0, attention_gemm.SCORE_BYTES) == 256
    assert attention_gemm.round_up(1023, attention_gemm.ALIGN) == 1024
    # a 32K-token prefill of a global layer is cut into chunks of query rows
    R = attention_gemm.rows_per_chunk(32768, 2, 8, 32768, 0, attention_gemm.SCORE_BYTES)
    assert 1 < R < 32768 and 2 * 8 * 4 * R * (32768 + 16) <= attention_gemm.SCORE_BYTES


@pytest.mark.parametrize("pos, S, lo, hi, want", [(0, 10, 3, 5, (3, 6)), (5, 10, 0, 100, (0, 10)), (5, 10, 20, 30, (10, 10)),
                                                  (5, 10, -9, 4, (0, 0)), (0, 0, 0, 9, (0, 0))])
def test_visible_range(pos, S, lo, hi, want):
    assert attention_gemm.visible_range(pos, S, lo, hi) == want


def test_the_cublas_emulation_reads_column_major_with_offsets_and_strides():
    r = np.random.default_rng(0)
    A = to_bits(r.standard_normal((3, 4, 6)).astype(np.float32))  # row-major [4, 6] = column-major 6 x 4
    B = to_bits(r.standard_normal((3, 5, 6)).astype(np.float32))
    C = np.zeros((3, 5, 8), dtype=np.float32)
    # C[p][:, 2:6] (row-major [5, 4], ld 8) = B[p] @ A[p].T
    twins.gemm_strided(True, False, 4, 5, 6, 2.0, A, 0, 6, 24, B, 0, 6, 30, 0.0, C, 2, 8, 40, 3)
    want = 2 * from_bits(B) @ np.swapaxes(from_bits(A), 1, 2)
    np.testing.assert_allclose(C[:, :, 2:6], want, rtol=1e-6)
    assert not C[:, :, :2].any() and not C[:, :, 6:].any()
