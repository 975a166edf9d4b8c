"""Golden tests: tinydg against outputs the reference recorded for the tiny checkpoints in
weights/fixtures (made by weights/make_reference.py). No torch needed: logits within 1e-4
absolute, router choices equal, per-layer hidden states, the commit and the next block."""

import os

import numpy as np
import pytest

import tinydg
from helpers import FIXTURES, fixture_names
from helpers import compare, run_tinydg

NAMES = fixture_names()


def test_fixtures_are_present():
    assert set(NAMES) >= {"sliding_full_f32", "bf16_sharded", "hub_encoder_names", "long_prompt_multi"}


@pytest.mark.parametrize("name", NAMES)
def test_matches_recorded_reference(name):
    folder = os.path.join(FIXTURES, name)
    rec = dict(np.load(os.path.join(folder, "reference.npz")))
    model = tinydg.load(folder)
    compare(run_tinydg(model, rec), rec)  # strict: 1e-4 absolute on logits, exact router indices


@pytest.mark.parametrize("name", NAMES)
def test_ignoring_a_weight_breaks_parity(name):
    """The fixtures randomize every norm, scale and layer_scalar: dropping any one must show."""
    folder = os.path.join(FIXTURES, name)
    rec = dict(np.load(os.path.join(folder, "reference.npz")))
    for weight in ("model.encoder.language_model.layers.0.layer_scalar", "model.decoder.layers.0.router.scale",
                   "model.decoder.layers.0.post_feedforward_layernorm_2.weight",
                   "model.decoder.self_conditioning.pre_norm.weight", "model.decoder.layers.0.self_attn.k_norm.weight"):
        model = tinydg.load(folder)
        model.weights._arrays[weight] = np.ones_like(model.weights[weight])
        with pytest.raises(AssertionError):
            compare(run_tinydg(model, rec), rec)


def test_loading_is_lazy():
    model = tinydg.load(os.path.join(FIXTURES, "bf16_sharded"))
    assert model.weights.loaded() == 0  # nothing converted until used
    tinydg.encode(model, np.array([[3, 4, 5]]))
    assert 0 < model.weights.loaded() < len(model.weights)  # the encoder never needs self-conditioning
