"""The GPU assembly on the CPU: tinydg.gpu.ops.gpu_ops(..., emulate=True) fills the model's operations
with the NumPy twins of its kernels and cuBLAS products (tinydg.gpu.twins), so the GPU path's wiring is
tested without a GPU: key segments and their positions, causal and sliding windows, padding, the cache,
router and experts, bf16 weights, and each experimental path. On a GPU, tests/test_gpu.py runs the
same assembly with the real kernels."""

import os

import numpy as np
import pytest

from helpers import FIXTURES, fixture_names
from helpers import assert_within_bf16_error, compare, on_emulated_gpu, run_tinydg
from tinydg.gpu import Kernels

NAMES = fixture_names()


def recording(name):
    folder = os.path.join(FIXTURES, name)
    return folder, dict(np.load(os.path.join(folder, "reference.npz")))


@pytest.mark.parametrize("name", NAMES)
def test_float32_wiring_matches_the_reference(name):
    folder, rec = recording(name)
    compare(run_tinydg(on_emulated_gpu(folder, "float32"), rec), rec)


@pytest.mark.parametrize("name", NAMES)
def test_bf16_wiring_stays_within_the_references_own_bf16_error(name):
    folder, rec = recording(name)
    assert_within_bf16_error(run_tinydg(on_emulated_gpu(folder, "bfloat16"), rec), rec, folder)


def test_bf16_bound_catches_a_wrong_weight():
    folder, rec = recording("sliding_full_f32")
    model = on_emulated_gpu(folder, "bfloat16")
    model.weights._arrays["model.decoder.layers.1.post_feedforward_layernorm.weight"] = np.ones(32, dtype=np.float32)
    with pytest.raises(AssertionError):
        assert_within_bf16_error(run_tinydg(model, rec), rec, folder)


def test_an_ignored_weight_breaks_the_wiring():
    folder, rec = recording("bf16_sharded")
    model = on_emulated_gpu(folder, "float32")
    model.weights._arrays["model.decoder.layers.1.router.per_expert_scale"] = np.ones(8, dtype=np.float32)
    with pytest.raises(AssertionError):
        compare(run_tinydg(model, rec), rec)


@pytest.mark.parametrize("name", NAMES)
def test_bf16_wiring_with_gemm_attention_stays_within_the_references_own_bf16_error(name):
    """The GEMM attention (tinydg.gpu.experimental.attention_gemm, cuBLAS emulated on NumPy) inside the
    whole forward: prompts with padding, the sliding window, the cache and canvas segments, the commit."""
    folder, rec = recording(name)
    model = on_emulated_gpu(folder, "bfloat16", Kernels(attention="gemm"))
    assert_within_bf16_error(run_tinydg(model, rec), rec, folder)


@pytest.mark.parametrize("name", NAMES)
def test_bf16_wiring_with_cublas_experts_stays_within_the_references_own_bf16_error(name):
    """The cuBLAS experts (tinydg.gpu.experimental.experts_gemm, cuBLAS emulated on NumPy) inside the
    whole forward."""
    folder, rec = recording(name)
    model = on_emulated_gpu(folder, "bfloat16", {"experts": "cublas"})
    assert_within_bf16_error(run_tinydg(model, rec), rec, folder)


def test_the_kernel_choice_is_in_the_models_repr():
    folder, _ = recording("sliding_full_f32")
    model = on_emulated_gpu(folder, "bfloat16", Kernels(attention="gemm", fused=True))
    assert "attention=gemm" in repr(model) and "experts=grouped" in repr(model) and "fused=on" in repr(model)
    assert model.ops.attend.__name__ == "attend_gemm"
    assert on_emulated_gpu(folder, "bfloat16").ops.attend.__name__ == "attend_rows"
