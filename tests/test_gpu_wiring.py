"""The GPU forward pass (tinydg.gpu.forward) on the CPU: its kernels and cuBLAS products replaced by
their NumPy twins (tinydg.gpu.twins), so its wiring is tested without a GPU: key segments and their
positions, causal and sliding windows, padding, the cache, router and experts, bf16 weights.
On a GPU, tests/test_gpu.py runs the same forward with the real kernels."""

import os

import numpy as np
import pytest

from conftest import FIXTURES, fixture_names
from parity import assert_within_bf16_error, compare, laid_out_like_the_gpu, run_tinydg
from tinydg.gpu import forward, twins

NAMES = fixture_names()


@pytest.mark.parametrize("name", NAMES)
def test_float32_wiring_matches_the_reference(twin_forward, name):
    folder = os.path.join(FIXTURES, name)
    rec = dict(np.load(os.path.join(folder, "reference.npz")))
    compare(run_tinydg(laid_out_like_the_gpu(folder, "float32"), rec), rec)


@pytest.mark.parametrize("name", NAMES)
def test_bf16_wiring_stays_within_the_references_own_bf16_error(twin_forward, name):
    folder = os.path.join(FIXTURES, name)
    rec = dict(np.load(os.path.join(folder, "reference.npz")))
    assert_within_bf16_error(run_tinydg(laid_out_like_the_gpu(folder, "bfloat16"), rec), rec, folder)


def test_bf16_bound_catches_a_wrong_weight(twin_forward):
    folder = os.path.join(FIXTURES, "sliding_full_f32")
    rec = dict(np.load(os.path.join(folder, "reference.npz")))
    model = laid_out_like_the_gpu(folder, "bfloat16")
    model.weights._arrays["model.decoder.layers.1.post_feedforward_layernorm.weight"] = np.ones(32, dtype=np.float32)
    with pytest.raises(AssertionError):
        assert_within_bf16_error(run_tinydg(model, rec), rec, folder)


def test_an_ignored_weight_breaks_the_wiring(twin_forward):
    folder = os.path.join(FIXTURES, "bf16_sharded")
    rec = dict(np.load(os.path.join(folder, "reference.npz")))
    model = laid_out_like_the_gpu(folder, "float32")
    model.weights._arrays["model.decoder.layers.1.router.per_expert_scale"] = np.ones(8, dtype=np.float32)
    with pytest.raises(AssertionError):
        compare(run_tinydg(model, rec), rec)


@pytest.mark.parametrize("name", NAMES)
def test_bf16_wiring_with_gemm_attention_stays_within_the_references_own_bf16_error(twin_forward, monkeypatch, name):
    """The GEMM attention (tinydg.gpu.attention_gemm, cuBLAS emulated on NumPy) inside the whole forward:
    prompts with padding, the sliding window, the cache and canvas segments, the commit."""
    from types import SimpleNamespace

    from tinydg.gpu import attention_gemm
    gemm = lambda *a, kernel=None, chunk=None, **k: attention_gemm.attention(*a, ops=attention_gemm.HOST, **k)
    launchers = {n: getattr(twins, n) for n in dir(twins) if not n.startswith("_")}
    monkeypatch.setattr(forward, "kernels", SimpleNamespace(**{**launchers, "attention": gemm}))
    folder = os.path.join(FIXTURES, name)
    rec = dict(np.load(os.path.join(folder, "reference.npz")))
    assert_within_bf16_error(run_tinydg(laid_out_like_the_gpu(folder, "bfloat16"), rec), rec, folder)


@pytest.mark.parametrize("name", NAMES)
def test_bf16_wiring_with_cublas_experts_stays_within_the_references_own_bf16_error(twin_forward, monkeypatch, name):
    """The cuBLAS experts (tinydg.gpu.experts_gemm, cuBLAS emulated on NumPy) inside the whole forward."""
    from types import SimpleNamespace

    from tinydg.gpu import experts_gemm
    cublas = lambda x, idx, w, gu, dn, kernel=None: experts_gemm.experts(x, idx, w, gu, dn, ops=experts_gemm.host_ops())
    launchers = {n: getattr(twins, n) for n in dir(twins) if not n.startswith("_")}
    monkeypatch.setattr(forward, "kernels", SimpleNamespace(**{**launchers, "experts": cublas}))
    folder = os.path.join(FIXTURES, name)
    rec = dict(np.load(os.path.join(folder, "reference.npz")))
    assert_within_bf16_error(run_tinydg(laid_out_like_the_gpu(folder, "bfloat16"), rec), rec, folder)
