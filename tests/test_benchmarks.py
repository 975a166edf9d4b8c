"""The GPU benchmark scripts' CPU paths: benchmarks/gpu_vs_transformers.py shares transformers'
weights with tinydg and compares the two; on the CPU it runs a tiny config through NumPy."""

import os
import sys

import pytest

from conftest import ROOT


@pytest.mark.reference
def test_side_by_side_shares_the_weights_and_agrees(reference):
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        import gpu_vs_transformers
    finally:
        sys.path.pop(0)
    results = gpu_vs_transformers.run(prompt=12, repeats=1, device="cpu", tiny=True)
    assert results["tinydg"]["decoder_forward_ms"] > 0
    default = results["transformers"]["default"]
    assert "error" not in default
    assert default["max_abs_logit_diff_vs_tinydg"] < 1e-4  # the same weights, the same numbers
    for label, row in results["transformers"].items():
        assert "error" in row or row["max_abs_logit_diff_vs_tinydg"] < 1e-4, label
