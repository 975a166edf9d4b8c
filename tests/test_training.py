"""The training objective: tinydg.tools.embedded.training (NumPy, forward only) computes the same
losses as the torch code that trained the embedded model (tinydg.tools.embedded.train), on the same
batch and noise."""

import importlib
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinydg
from helpers import ROOT
from tinydg.tokenizer import load_tokenizer
from tinydg.tools.embedded import data, training

DEMO = os.path.join(ROOT, "weights", "demo")


def trainer():
    """The training script (it imports torch: for the tests that need the reference extra)."""
    return importlib.import_module("tinydg.tools.embedded.train")


def test_corruption_follows_t():
    rng = np.random.default_rng(0)
    targets = np.zeros((4000, 32), dtype=np.int64)
    noise = training.draw_noise(rng, 4000, 32, 370)
    noisy = training.corrupt(targets, noise)
    changed = noise.u < noise.t[:, None]
    assert (noisy[~changed] == 0).all() and (noisy[changed] == noise.fresh[changed]).all()
    assert 1e-3 <= noise.t.min() and noise.t.max() < 1
    # the corrupted fraction tracks t: on average half the canvas, and per example close to t
    assert abs(changed.mean() - 0.5) < 0.02
    assert np.corrcoef(changed.mean(1), noise.t)[0, 1] > 0.9
    assert abs(noise.sc.mean() - 0.5) < 0.03


def test_cross_entropy_is_log_vocab_for_flat_logits():
    assert training.cross_entropy(np.zeros((3, 5, 7)), np.zeros((3, 5), dtype=int)) == pytest.approx(np.log(7))


@pytest.mark.reference
@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 2**20))
def test_numpy_losses_equal_the_torch_losses(seed):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from tinydg.tools import reference
    train = trainer()
    tokenizer = load_tokenizer(DEMO)  # the demo's tokenizer is the training one; its canvas is shorter
    rng = np.random.default_rng(seed)
    C = tinydg.load(DEMO).config.canvas_length
    prompt_ids, valid, targets = next(data.batches(tokenizer, rng, 4, C, pool=2))  # conversations
    noise = training.draw_noise(rng, *targets.shape, tokenizer.vocab_size)
    torch_model = reference.load_float32(DEMO)
    diffusion, encoder = (x.item() for x in train.torch_losses(torch_model, prompt_ids, valid, targets, noise))
    ours = training.losses(tinydg.load(DEMO), prompt_ids, valid, targets, noise)
    assert ours == pytest.approx((diffusion, encoder), rel=1e-4)


@pytest.mark.reference
def test_the_loss_sees_self_conditioning(reference):
    """Turning self-conditioning on for every example changes the loss: pass 2 really reads pass 1."""
    tokenizer = load_tokenizer(DEMO)
    model = tinydg.load(DEMO)
    C = model.config.canvas_length
    prompt_ids, valid, targets = next(data.batches(tokenizer, np.random.default_rng(1), 4, C, pool=1))
    noise = training.draw_noise(np.random.default_rng(2), *targets.shape, tokenizer.vocab_size)
    on = training.Noise(noise.t, noise.u, noise.fresh, np.ones(4, dtype=bool))
    off = training.Noise(noise.t, noise.u, noise.fresh, np.zeros(4, dtype=bool))
    assert training.losses(model, prompt_ids, valid, targets, on)[0] != \
        training.losses(model, prompt_ids, valid, targets, off)[0]
