"""The GPU backend on a GPU: every kernel against its NumPy twin (tinydg.gpu.twins) on
hypothesis-drawn shapes, then the whole model against the reference fixtures, then generation.
Skipped where CuPy sees no GPU (CI); tests/test_cuda_compile.py still compiles every kernel there.
Outputs are poisoned before each launch: freed device memory is filled with NaN so that an element a
kernel forgets to write shows up (CuPy's memory pool hands the poisoned blocks back out)."""

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import (FIXTURES, PROBLEMS, SCENARIOS, assert_within_bf16_error, compare, draw_segments, fixture_names,
                     gemm_attention_oracle, load_scenario, routing, run_scenario, run_tinydg, solve)
from tinydg import gpu

pytestmark = pytest.mark.skipif(not gpu.available(), reason="needs CuPy and a CUDA GPU")

if gpu.available():
    import cupy

    from tinydg.bf16 import to_bits
    from tinydg.gpu import blas, kernels, twins
    from tinydg.gpu.blas import linear, matmul
    from tinydg.gpu.experimental import kernels as experimental

KERNEL_EXAMPLES = settings(max_examples=60, deadline=None)


def poison(n_floats=1 << 22):
    """Fill freed pool memory with NaN: the next allocations are likely to reuse it."""
    blocks = [cupy.full(n, np.nan, dtype=cupy.float32) for n in (n_floats, n_floats // 8, n_floats // 64, 4096, 256)]
    cupy.cuda.Device().synchronize()
    del blocks


def rng_for(seed):
    return np.random.default_rng(seed)


def assert_close(got, want, rtol, atol, what):
    got = got.get() if hasattr(got, "get") else got
    assert not np.isnan(got).any(), f"{what}: NaN in the output (an element was never written)"
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=what)


# --- kernels against their twins --------------------------------------------------------------------

@KERNEL_EXAMPLES
@given(n=st.integers(1, 5000), seed=st.integers(0, 2**31))
def test_bf16_conversion(n, seed):
    x = (rng_for(seed).standard_normal(n) * 10.0 ** rng_for(seed + 1).integers(-30, 30, n)).astype(np.float32)
    x[: min(n, 3)] = [np.inf, -np.inf, 0.0][: min(n, 3)]
    poison()
    bits = kernels.to_bf16(cupy.asarray(x)).get()
    np.testing.assert_array_equal(bits, to_bits(x))
    np.testing.assert_array_equal(kernels.to_float32(cupy.asarray(bits)).get(), twins.to_float32(bits))


@KERNEL_EXAMPLES
@given(N=st.integers(1, 300), E=st.sampled_from([2, 4, 8, 31, 32, 33, 128, 256]), k=st.integers(1, 8),
       seed=st.integers(0, 2**31))
def test_router_topk(N, E, k, seed):
    k = min(k, E)
    r = rng_for(seed)
    logits = (r.standard_normal((N, E)) * 3).astype(np.float32)
    scale = r.uniform(0.5, 2.0, E).astype(np.float32)
    poison()
    w, idx = kernels.router_topk(cupy.asarray(logits), cupy.asarray(scale), k)
    tw, tidx = twins.router_topk(logits, scale, k)
    np.testing.assert_array_equal(idx.get(), tidx)
    assert_close(w, tw, 1e-5, 1e-7, "router weights")


def expert_choices(r, N, E, A, used):
    """idx [N, A]: distinct experts per token, drawn from only `used` experts (ragged and empty groups)."""
    pool = r.choice(E, size=max(A, used), replace=False)
    return np.stack([r.choice(pool, size=A, replace=False) for _ in range(N)]).astype(np.int64)


@KERNEL_EXAMPLES
@given(N=st.integers(1, 700), E=st.integers(1, 130), A=st.integers(1, 8), used=st.integers(1, 130),
       seed=st.integers(0, 2**31))
def test_expert_groups(N, E, A, used, seed):
    A, used = min(A, E), min(used, E)
    idx = expert_choices(rng_for(seed), N, E, A, used)
    order, offsets = kernels.expert_groups(cupy.asarray(idx), E)
    t_order, t_offsets = twins.expert_groups(idx, E)
    np.testing.assert_array_equal(offsets.get(), t_offsets)
    np.testing.assert_array_equal(order.get(), t_order)


@KERNEL_EXAMPLES
@given(N=st.integers(1, 200), D=st.sampled_from([8, 32, 40, 96, 256]), I=st.sampled_from([4, 16, 24, 33, 64, 96, 200]),
       E=st.integers(1, 16), A=st.integers(1, 4), used=st.integers(1, 16), bf16=st.booleans(),
       kernel=st.sampled_from(["auto", "fma"]), seed=st.integers(0, 2**31))
def test_experts(N, D, I, E, A, used, bf16, kernel, seed):
    """bf16 with D and I multiples of 32 takes the tensor-core GEMMs under "auto"; every other case
    the FMA ones. Both round activations to bf16 beside bf16 weights, like the twin."""
    A, used = min(A, E), min(used, E)
    r = rng_for(seed)
    idx = expert_choices(r, N, E, A, used)
    w = r.uniform(0.1, 1.0, (N, A)).astype(np.float32)
    x = r.standard_normal((N, D)).astype(np.float32)
    gate_up = (r.standard_normal((E, 2 * I, D)) / np.sqrt(D)).astype(np.float32)
    down = (r.standard_normal((E, D, I)) / np.sqrt(I)).astype(np.float32)
    if bf16:
        gate_up, down = to_bits(gate_up), to_bits(down)
    poison()
    got = kernels.experts(cupy.asarray(x), cupy.asarray(idx), cupy.asarray(w), cupy.asarray(gate_up),
                          cupy.asarray(down), variant=kernel)
    # bf16: the same rounded operands, summed in another order; a rounding of the gated hidden to bf16
    # can land on the other side of a tie, so allow a few bf16 ulps of it through the down projection
    assert_close(got, twins.experts(x, idx, w, gate_up, down), 1e-3 if bf16 else 1e-4, 1e-3 if bf16 else 1e-5,
                 "experts")


@KERNEL_EXAMPLES
@given(rows=st.integers(1, 300), k=st.integers(1, 700), spread=st.integers(-20, 20), zero_row=st.booleans(),
       seed=st.integers(0, 2**31))
def test_float8_quantization(rows, k, spread, zero_row, seed):
    """f32_to_e4m3_rows and the scales: the very codes and scales of tinydg.fp8.quantize_rows."""
    from tinydg import fp8
    r = rng_for(seed)
    w = (r.standard_normal((2, rows, k)) * 2.0 ** r.integers(-spread if spread < 0 else 0, abs(spread) + 1,
                                                               (2, rows, 1))).astype(np.float32)
    if zero_row:
        w[0, 0] = 0
    poison()
    got = experimental.quantize_rows(cupy.asarray(w))
    want = fp8.quantize_rows(w)
    np.testing.assert_array_equal(cupy.asnumpy(got.scales), want.scales)
    np.testing.assert_array_equal(cupy.asnumpy(got.codes), want.codes)


@KERNEL_EXAMPLES
@given(N=st.integers(1, 200), D=st.sampled_from([32, 64, 96, 256]), I=st.sampled_from([32, 64, 96, 224]),
       E=st.integers(1, 16), A=st.integers(1, 4), used=st.integers(1, 16), seed=st.integers(0, 2**31))
def test_float8_experts(N, D, I, E, A, used, seed):
    """expert_gate_up_fp8 / expert_down_fp8: codes widened to bf16 on the tensor cores, row scales on the
    outputs, against the twin (dequantized weights, activations rounded to bf16)."""
    from tinydg import fp8
    A, used = min(A, E), min(used, E)
    r = rng_for(seed)
    idx = expert_choices(r, N, E, A, used)
    w = r.uniform(0.1, 1.0, (N, A)).astype(np.float32)
    x = r.standard_normal((N, D)).astype(np.float32)
    gate_up = fp8.quantize_rows((r.standard_normal((E, 2 * I, D)) / np.sqrt(D)).astype(np.float32))
    down = fp8.quantize_rows((r.standard_normal((E, D, I)) / np.sqrt(I)).astype(np.float32))
    on_gpu = lambda q: fp8.Float8Rows(cupy.asarray(q.codes), cupy.asarray(q.scales))
    poison()
    got = experimental.experts_fp8(cupy.asarray(x), cupy.asarray(idx), cupy.asarray(w), on_gpu(gate_up), on_gpu(down))
    assert_close(got, twins.experts_fp8(x, idx, w, gate_up, down), 1e-3, 1e-3, "float8 experts")


def test_float8_experts_refuse_shapes_off_the_tensor_cores():
    from tinydg import fp8
    q = fp8.quantize_rows(np.ones((2, 2 * 16, 32), dtype=np.float32))
    d = fp8.quantize_rows(np.ones((2, 32, 16), dtype=np.float32))
    on_gpu = lambda q: fp8.Float8Rows(cupy.asarray(q.codes), cupy.asarray(q.scales))
    x, idx, w = cupy.ones((3, 32), dtype=cupy.float32), cupy.zeros((3, 1), dtype=cupy.int32), cupy.ones((3, 1), dtype=cupy.float32)
    with pytest.raises(ValueError, match="multiples of 32"):
        experimental.experts_fp8(x, idx, w, on_gpu(q), on_gpu(d))


@KERNEL_EXAMPLES
@given(rows=st.integers(1, 600), D=st.sampled_from([1, 8, 31, 32, 256, 512, 704, 2816]), weighted=st.booleans(),
       seed=st.integers(0, 2**31))
def test_fused_rms_norm(rows, D, weighted, seed):
    from tinydg.norms import rms_norm
    r = rng_for(seed)
    x = (r.standard_normal((rows, D)) * r.uniform(0.01, 100)).astype(np.float32)
    w = r.standard_normal(D).astype(np.float32) if weighted else None
    poison()
    got = experimental.rms_norm(cupy.asarray(x), None if w is None else cupy.asarray(w), 1e-6)
    assert_close(got, rms_norm(x, w, 1e-6), 1e-5, 1e-6, "rms_norm")


@KERNEL_EXAMPLES
@given(B=st.integers(1, 2), T=st.integers(1, 40), heads=st.integers(1, 8), d=st.sampled_from([2, 8, 64, 256, 512]),
       seed=st.integers(0, 2**31))
def test_fused_rope_and_gelu(B, T, heads, d, seed):
    from tinydg.mlp import gelu_tanh
    from tinydg.rope import apply_rope
    r = rng_for(seed)
    x = r.standard_normal((B, T, heads, d)).astype(np.float32)
    angles = r.uniform(-50, 50, (T, d)).astype(np.float32)
    cos, sin = np.cos(angles), np.sin(angles)
    poison()
    got = experimental.apply_rope(*(cupy.asarray(a) for a in (x, cos, sin)))
    assert_close(got, apply_rope(x, cos, sin), 1e-6, 1e-6, "rope")
    gate, up = (r.standard_normal((B, T, heads * d)) * 4).astype(np.float32), r.standard_normal((B, T, heads * d)).astype(np.float32)
    assert_close(experimental.gelu_mul(cupy.asarray(gate), cupy.asarray(up)), gelu_tanh(gate) * up, 1e-5, 1e-6,
                 "gelu_mul")


@KERNEL_EXAMPLES
@given(B=st.integers(1, 2), C=st.integers(1, 40), V=st.sampled_from([2, 31, 370, 1024, 5000]),
       spread=st.sampled_from([0.1, 1.0, 10.0]), seed=st.integers(0, 2**31))
def test_fused_sampler_pass(B, C, V, spread, seed):
    """experimental.propose (one block per row) against tinydg.sampler.propose with the same draws."""
    from tinydg import sampler
    from tinydg.rng import TorchCPUGenerator
    x = (rng_for(seed).standard_normal((B, C, V)) * spread).astype(np.float32)
    x[0, 0, :2] = x[0, 0].max() + 1  # a tie for the draft: the lower index wins
    x[..., -1] = -np.inf  # a banned token: probability 0 and no NaN in the entropy
    poison()
    got = experimental.propose(cupy.asarray(x), TorchCPUGenerator(seed))
    want = sampler.propose(x, TorchCPUGenerator(seed))
    np.testing.assert_array_equal(cupy.asnumpy(got[1]), want[1])  # draft
    np.testing.assert_array_equal(cupy.asnumpy(got[0]), want[0])  # proposal
    assert_close(got[2], want[2], 1e-4, 1e-5, "entropy")


@KERNEL_EXAMPLES
@given(n=st.integers(1, 5000), cap=st.sampled_from([30.0, 1.0]), seed=st.integers(0, 2**31))
def test_fused_softcap(n, cap, seed):
    x = (rng_for(seed).standard_normal(n) * 50).astype(np.float32)
    got = experimental.softcap(cupy.asarray(x), cap)
    assert_close(got, twins.softcap(x.copy(), cap), 1e-6, 1e-5, "softcap")


@KERNEL_EXAMPLES
@given(N=st.integers(1, 300), D=st.sampled_from([8, 32, 40, 256]), I=st.sampled_from([4, 24, 96]),
       E=st.integers(1, 16), A=st.integers(1, 4), skew=st.booleans(), seed=st.integers(0, 2**31))
def test_cublas_experts(N, D, I, E, A, skew, seed):
    """tinydg.gpu.experimental.experts_gemm on cuBLAS (tests/test_experts_gemm.py runs the same code on NumPy)."""
    from tinydg.gpu import launchers
    from tinydg.gpu.experimental import experts_gemm
    A = min(A, E)
    r = rng_for(seed)
    idx = routing(r, N, E, A, skew)
    w = r.uniform(0.1, 1.0, (N, A)).astype(np.float32)
    x = r.standard_normal((N, D)).astype(np.float32)
    gate_up = to_bits((r.standard_normal((E, 2 * I, D)) / np.sqrt(D)).astype(np.float32))
    down = to_bits((r.standard_normal((E, D, I)) / np.sqrt(I)).astype(np.float32))
    poison()
    got = experts_gemm.experts(*(cupy.asarray(a) for a in (x, idx, w, gate_up, down)), launchers)
    assert_close(got, twins.experts(x, idx, w, gate_up, down), 1e-3, 1e-3, "cublas experts")


@KERNEL_EXAMPLES
@given(batch=st.integers(1, 4), m=st.integers(1, 70), n=st.integers(1, 70), k=st.integers(1, 70),
       transa=st.booleans(), transb=st.booleans(), beta=st.sampled_from([0.0, 1.0]), seed=st.integers(0, 2**31))
def test_gemm_strided(batch, m, n, k, transa, transb, beta, seed):
    """cuBLAS strided-batched bf16 GEMM against its column-major emulation, with offsets and padding."""
    r = rng_for(seed)
    rows_a, cols_a = (k, m) if transa else (m, k)
    rows_b, cols_b = (n, k) if transb else (k, n)
    lda, ldb, ldc = rows_a + 3, rows_b + 1, m + 2
    A = to_bits(r.standard_normal(5 + batch * lda * cols_a).astype(np.float32))
    B = to_bits(r.standard_normal(2 + batch * ldb * cols_b).astype(np.float32))
    C = r.standard_normal(7 + batch * ldc * n).astype(np.float32)
    args = (transa, transb, m, n, k, 0.5, A, 5, lda, lda * cols_a, B, 2, ldb, ldb * cols_b, beta)
    want = C.copy()
    twins.gemm_strided(*args, want, 7, ldc, ldc * n, batch)
    got = cupy.asarray(C)
    blas.gemm_strided(*args[:6], cupy.asarray(A), *args[7:10], cupy.asarray(B), *args[11:], got, 7, ldc, ldc * n, batch)
    assert_close(got, want, 1e-4, 1e-4, "gemm_strided")


@KERNEL_EXAMPLES
@given(B=st.integers(1, 2), K=st.integers(1, 3), G=st.sampled_from([1, 2, 8]), r=st.integers(1, 40),
       n1=st.integers(0, 70), n2=st.integers(0, 70), causal=st.booleans(), window=st.sampled_from([0, 1, 5, 64]),
       pad=st.booleans(), seed=st.integers(0, 2**31))
def test_masked_softmax(B, K, G, r, n1, n2, causal, window, pad, seed):
    rng = rng_for(seed)
    c2 = -(-n1 // 8) * 8
    Lc = max(8, -(-(c2 + n2) // 8) * 8)
    kpos1, kpos2 = 3, 3 + n1 + int(rng.integers(0, 4))
    qpos0 = kpos2 + int(rng.integers(0, max(1, n2)))
    scores = (rng.standard_normal((B * K, G, r, Lc)) * 3).astype(np.float32)
    valid = np.ones((B, max(kpos2 + n2, qpos0 + r) + 1), dtype=np.uint8)
    if pad:
        valid[:, : int(rng.integers(0, valid.shape[1]))] = 0
    layout = (n1, kpos1, c2, n2, kpos2)
    poison()
    got = experimental.masked_softmax(cupy.asarray(scores), layout, cupy.asarray(valid), qpos0, causal, window, K, G)
    want = twins.masked_softmax(scores, layout, valid, qpos0, causal, window, K, G)
    # exp differs from NumPy's in the last place: a probability may round to the neighbouring bf16
    assert_close(twins.to_float32(cupy.asnumpy(got)), twins.to_float32(want), 1e-2, 1e-6, "masked softmax")


@KERNEL_EXAMPLES
@given(B=st.integers(1, 2), K=st.integers(1, 3), G=st.sampled_from([1, 2, 8]), Tq=st.integers(1, 40),
       S1=st.integers(0, 300), d=st.sampled_from([8, 64, 256, 512]), causal=st.booleans(),
       window=st.sampled_from([0, 1, 4, 64, 1024]), pad=st.booleans(), score_bytes=st.sampled_from([1 << 28, 8192]),
       seed=st.integers(0, 2**31))
def test_gemm_attention(B, K, G, Tq, S1, d, causal, window, pad, score_bytes, seed):
    """tinydg.gpu.experimental.attention_gemm on cuBLAS and the CUDA softmax, against the readable
    attention with q and the probabilities rounded to bf16 (tests/test_attention_gemm.py runs the same
    code on NumPy)."""
    from tinydg.attention import Visibility
    from tinydg.gpu import launchers
    from tinydg.gpu.experimental import attention_gemm
    q, k1, v1, pos1, k2, v2, pos2, valid = draw_segments(seed, B, K, G, Tq, S1, d, pad)
    poison()
    visibility = Visibility(pos2, S1, causal, window, cupy.asarray(valid))
    got = attention_gemm.attention(*(cupy.asarray(a) for a in (q, k1, v1, k2, v2)), visibility, launchers,
                                   score_bytes=score_bytes)
    want = gemm_attention_oracle(q, k1, v1, pos1, k2, v2, pos2, pos2, causal, window, valid, 1.0)
    # scores summed in another order can put a probability on the other side of a bf16 rounding
    # boundary: one bf16 step (2^-8 of p) times a value of a few units
    assert_close(got, want, 2e-2, 1.5e-2, "gemm attention")


@KERNEL_EXAMPLES
@given(B=st.integers(1, 3), K=st.integers(1, 3), G=st.sampled_from([1, 2, 4, 8]), Tq=st.integers(1, 40),
       S1=st.integers(0, 300), d=st.sampled_from([8, 16, 40, 64, 256, 512]), causal=st.booleans(),
       window=st.sampled_from([0, 1, 4, 64, 1024]), pad=st.booleans(), chunk=st.sampled_from([None, 1, 7, 64]),
       bf16=st.booleans(), kernel=st.sampled_from(["auto", "scalar"]), seed=st.integers(0, 2**31))
def test_attention(B, K, G, Tq, S1, d, causal, window, pad, chunk, bf16, kernel, seed):
    """Cache segment of S1 keys then Tq new keys (the encoder when causal: prompts shorter and longer
    than the window; the decoder when not), padding on the left of some rows."""
    r = rng_for(seed)
    H = K * G
    q = r.standard_normal((B, H, Tq, d)).astype(np.float32)
    k1, v1 = (r.standard_normal((B, K, S1, d)).astype(np.float32) for _ in range(2))
    k2, v2 = (r.standard_normal((B, K, Tq, d)).astype(np.float32) for _ in range(2))
    start = int(r.integers(0, 5))  # positions before the cache segment that it no longer keeps
    pos1, pos2 = start, start + S1
    valid = np.ones((B, pos2 + Tq), dtype=bool)
    if pad:
        for b in range(B):
            valid[b, : int(r.integers(0, pos2 + Tq))] = False
    if bf16:
        k1, v1, k2, v2 = (to_bits(a) for a in (k1, v1, k2, v2))
    poison()
    got = kernels.attention(*(cupy.asarray(a) for a in (q, k1, v1)), pos1, cupy.asarray(k2), cupy.asarray(v2), pos2,
                            pos2, causal=causal, window=window, valid=cupy.asarray(valid), chunk=chunk, variant=kernel)
    want = twins.attention(q, k1, v1, pos1, k2, v2, pos2, pos2, causal=causal, window=window, valid=valid)
    assert_close(got, want, 1e-4, 1e-4, "attention")  # scores reach ~sqrt(d) = 22 at d = 512


@KERNEL_EXAMPLES
@given(M=st.integers(1, 300), K=st.sampled_from([1, 16, 40, 256, 1000]), N=st.sampled_from([1, 8, 33, 512]),
       bf16=st.booleans(), transpose=st.booleans(), seed=st.integers(0, 2**31))
def test_dense_products(M, K, N, bf16, transpose, seed):
    r = rng_for(seed)
    x = r.standard_normal((M, K)).astype(np.float32)
    w = r.standard_normal((N, K) if transpose else (K, N)).astype(np.float32)
    if bf16:
        w = to_bits(w)
    poison()
    product, twin = (linear, twins.linear) if transpose else (matmul, twins.matmul)
    got = product(cupy.asarray(x), cupy.asarray(w))
    want = twin(x, w)
    assert_close(got, want, 1e-4, 1e-4 * np.sqrt(K), "dense product")


# --- the whole model ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", fixture_names())
def test_float32_model_matches_the_reference(name):
    import tinydg
    folder = os.path.join(FIXTURES, name)
    rec = dict(np.load(os.path.join(folder, "reference.npz")))
    poison()
    compare(run_tinydg(tinydg.load(folder, backend="cupy"), rec), rec)  # logits within 1e-4, same routes


@pytest.mark.parametrize("name", fixture_names())
def test_bf16_model_stays_within_the_references_bf16_error(name):
    import tinydg
    folder = os.path.join(FIXTURES, name)
    rec = dict(np.load(os.path.join(folder, "reference.npz")))
    assert_within_bf16_error(run_tinydg(tinydg.load(folder, backend="cupy", dtype="bfloat16"), rec), rec, folder)


@pytest.mark.parametrize("name", SCENARIOS)
def test_generation_replays_the_reference_draws(name):
    """The reference's recorded draws, fed to the GPU model: the same tokens as the reference."""
    import tinydg
    from tinydg.rng import Replay
    model, data, draws, settings_ = load_scenario(name)
    replay = Replay(draws)
    out = run_scenario(tinydg.move(model, "cupy"), data, settings_, replay)
    np.testing.assert_array_equal(out.sequences, data["sequences"])
    assert replay.finished()


def test_generate_streams_on_the_gpu():
    import tinydg
    from tinydg.model import default_checkpoint
    from tinydg.chat_format import encode_prompt
    from tinydg.tokenizer import load_tokenizer
    folder = default_checkpoint()
    model = tinydg.load(folder)
    tok = load_tokenizer(folder)
    ids = np.array([encode_prompt(tok, [{"role": "user", "content": "sort 7 2 9 2 4 0 5"}])])
    steps = [e for e in tinydg.stream(model, ids, seed=0, backend="cupy") if isinstance(e, tinydg.Step)]
    assert steps and all(isinstance(s.draft, np.ndarray) for s in steps)
    out = tinydg.generate(model, ids, seed=0, backend="cupy")
    again = tinydg.generate(model, ids, seed=0, backend="cupy")
    np.testing.assert_array_equal(out.sequences, again.sequences)  # DeviceRNG: seeded, reproducible


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_a_cuda_graph_replays_the_eager_forward(dtype):
    """GraphedDenoise: the same logits as the eager forward, first step and self-conditioned, and a new
    capture when the cache changes."""
    import cupy

    import tinydg
    from tinydg.gpu.experimental.graph import GraphedDenoise
    model = tinydg.load(os.path.join(FIXTURES, "sliding_full_f32"), backend="cupy", dtype=dtype)
    V, C = model.text.vocab_size, model.config.canvas_length
    r = np.random.default_rng(0)
    ids = cupy.asarray(r.integers(0, V, size=(2, 9)))
    _, cache = tinydg.encode(model, ids)
    graphed = GraphedDenoise(model)
    sc = None
    for step in range(3):
        canvas = cupy.asarray(r.integers(0, V, size=(2, C)))
        want = tinydg.denoise(model, canvas, cache, sc)
        got = graphed(canvas, cache, sc)
        np.testing.assert_allclose(got.get(), want.get(), rtol=1e-5, atol=1e-5)
        sc = want * np.float32(0.7)
    assert graphed.captures == 2  # first step, then self-conditioned: replayed on the third
    _, longer = tinydg.encode(model, canvas, cache)
    canvas = cupy.asarray(r.integers(0, V, size=(2, C)))
    np.testing.assert_allclose(graphed(canvas, longer, sc).get(), tinydg.denoise(model, canvas, longer, sc).get(),
                               rtol=1e-5, atol=1e-5)
    assert graphed.captures == 3


def test_generation_with_cuda_graphs_makes_the_same_tokens():
    import tinydg
    from tinydg.chat_format import encode_prompt
    from tinydg.model import default_checkpoint
    from tinydg.rng import TorchCPUGenerator
    from tinydg.tokenizer import load_tokenizer
    folder = default_checkpoint()
    model = tinydg.load(folder, backend="cupy")
    tok = load_tokenizer(folder)
    ids = np.array([encode_prompt(tok, [{"role": "user", "content": "sort 9 1 8 2 7 3"}])])
    eager = tinydg.generate(model, ids, rng=TorchCPUGenerator(0))
    graphed = tinydg.generate(model, ids, rng=TorchCPUGenerator(0), cuda_graph=True)
    np.testing.assert_array_equal(graphed.sequences, eager.sequences)


def test_float8_model_on_the_gpu_sorts():
    """The embedded model with float8 experts on the GPU: the held-out problems of tests/test_embedded.py."""
    import tinydg
    from tinydg.model import default_checkpoint
    model = tinydg.load(default_checkpoint(), backend="cupy", dtype="float8")
    assert isinstance(model.weights["model.decoder.layers.0.experts.down_proj"], tinydg.fp8.Float8Rows)
    for digits in PROBLEMS:
        assert solve(model, digits), digits


def test_float8_needs_tensor_core_shapes():
    import tinydg
    from tinydg.errors import InputError
    with pytest.raises(InputError, match="multiples of 32"):
        tinydg.load(os.path.join(FIXTURES, "sliding_full_f32"), backend="cupy", dtype="float8")


@pytest.mark.parametrize("name", fixture_names())
def test_bf16_model_with_gemm_attention_stays_within_the_references_bf16_error(name):
    import tinydg
    folder = os.path.join(FIXTURES, name)
    rec = dict(np.load(os.path.join(folder, "reference.npz")))
    model = tinydg.load(folder, backend="cupy", dtype="bfloat16", kernels={"attention": "gemm"})
    assert_within_bf16_error(run_tinydg(model, rec), rec, folder)


@pytest.mark.parametrize("name", fixture_names())
def test_float32_model_with_fused_elementwise_matches_the_reference(name):
    import tinydg
    folder = os.path.join(FIXTURES, name)
    rec = dict(np.load(os.path.join(folder, "reference.npz")))
    compare(run_tinydg(tinydg.load(folder, backend="cupy", kernels={"fused": True}), rec), rec)


@pytest.mark.parametrize("name", SCENARIOS)
def test_generation_with_fused_kernels_replays_the_reference_draws(name):
    """The fused RMSNorm, RoPE, gelu, soft-capping and sampler pass, with the reference's recorded draws."""
    import tinydg
    from tinydg.rng import Replay
    model, data, draws, settings_ = load_scenario(name)
    replay = Replay(draws)
    out = run_scenario(tinydg.move(model, "cupy", kernels={"fused": True}), data, settings_, replay)
    np.testing.assert_array_equal(out.sequences, data["sequences"])


@pytest.mark.parametrize("name", fixture_names())
def test_bf16_model_on_every_new_path_stays_within_the_references_bf16_error(name):
    """cuBLAS attention, cuBLAS experts and the fused kernels together."""
    import tinydg
    from tinydg.gpu import Kernels
    folder = os.path.join(FIXTURES, name)
    rec = dict(np.load(os.path.join(folder, "reference.npz")))
    model = tinydg.load(folder, backend="cupy", dtype="bfloat16", kernels=Kernels("gemm", "cublas", fused=True))
    assert_within_bf16_error(run_tinydg(model, rec), rec, folder)
