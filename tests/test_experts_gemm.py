"""tinydg.gpu.experimental.experts_gemm on the CPU: the code that drives cuBLAS's batched GEMMs, with cuBLAS emulated
in NumPy (twins.gemm_strided) and the gather / combine kernels' twins. It must equal the experts' twin
(tinydg.moe.experts with activations rounded to bf16) for any routing: empty experts, one expert
taking every token, groups of every size. On a GPU, tests/test_gpu.py runs it on cuBLAS."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import routing
from tinydg.bf16 import from_bits, to_bits
from tinydg.gpu import twins
from tinydg.gpu.experimental import experts_gemm


@settings(max_examples=80, deadline=None)
@given(N=st.integers(1, 60), D=st.sampled_from([8, 32, 40]), I=st.sampled_from([4, 16, 24]), E=st.integers(1, 12),
       A=st.integers(1, 4), skew=st.booleans(), seed=st.integers(0, 2**31))
def test_cublas_experts_equal_the_twin(N, D, I, E, A, skew, seed):
    A = min(A, E)
    r = np.random.default_rng(seed)
    idx = routing(r, N, E, A, skew)
    w = r.uniform(0.1, 1.0, (N, A)).astype(np.float32)
    x = r.standard_normal((N, D)).astype(np.float32)
    gate_up = to_bits((r.standard_normal((E, 2 * I, D)) / np.sqrt(D)).astype(np.float32))
    down = to_bits((r.standard_normal((E, D, I)) / np.sqrt(I)).astype(np.float32))
    got = experts_gemm.experts(x, idx, w, gate_up, down, twins)
    np.testing.assert_allclose(got, twins.experts(x, idx, w, gate_up, down), rtol=1e-4, atol=1e-5)


def test_padding_rows_are_zero_and_groups_keep_their_order():
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    idx = np.array([[1, 0], [1, 2], [0, 1], [2, 1]], dtype=np.int32)  # expert 1 takes every token
    order, offsets = twins.expert_groups(idx, 3)
    xs = from_bits(twins.expert_gather_rows(x, order, offsets, 2, 4))
    np.testing.assert_array_equal(xs[1], x)  # tokens 0, 1, 2, 3 in order
    np.testing.assert_array_equal(xs[0, :2], x[[0, 2]])
    assert not xs[0, 2:].any() and not xs[2, 2:].any()
