"""Checks that need the real DiffusionGemma checkpoint (~50 GB, bf16, sharded). They run wherever
the environment variable TINYDG_REAL_WEIGHTS names a folder holding it, and skip elsewhere."""

import os

import numpy as np
import pytest

import tinydg
from tinydg.weights import count_parameters

REAL = os.environ.get("TINYDG_REAL_WEIGHTS")
pytestmark = pytest.mark.skipif(not REAL, reason="set TINYDG_REAL_WEIGHTS to the real checkpoint folder")


def test_real_checkpoint_opens_lazily_with_every_tensor_named():
    model = tinydg.load(REAL)  # checks every name and shape against config.json; reads no tensor data
    assert model.weights.loaded() == 0
    total, active = count_parameters(model.text)
    assert 25.2e9 <= total < 25.3e9 and 3.8e9 <= active < 3.9e9
    E = model.weights["model.decoder.embed_tokens.weight"]
    assert E.shape == (262_144, 2816) and E.dtype == np.float32 and np.isfinite(E[:16]).all()
