"""Properties of the sampler and of generate that hold for any input (no torch needed)."""

import os

import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

import tinydg
from tinydg import sampler
from tinydg.errors import ConfigError, InputError
from tinydg.generation import finalize_canvas, generate, stream
from tinydg.rng import TorchCPUGenerator

from helpers import FIXTURES

entropies = hnp.arrays(np.float32, st.tuples(st.integers(1, 3), st.integers(1, 40)),
                       elements=st.floats(0, 12, width=32))


@given(entropies, st.floats(1e-3, 50))
def test_accepted_set_holds_the_lowest_entropy_and_the_bound(H, bound):
    accepted = sampler.accept(H, bound)
    for h, a in zip(H, accepted):
        assert a[np.argmin(h)]
        chosen = np.sort(h[a])
        # every accepted position: the accepted entropies below it sum to at most the bound
        assert np.float32(chosen[:-1].astype(np.float64).sum()) <= np.float32(bound) * (1 + 1e-6)
        # and it is a prefix of the ascending order: nothing rejected is below anything accepted
        if (~a).any():
            assert h[~a].min() >= chosen.max()


@given(entropies, st.floats(1e-3, 50))
def test_accept_scatters_like_put_along_axis(H, bound):
    order = np.argsort(H, axis=-1, kind="stable")
    sorted_h = np.take_along_axis(H, order, axis=-1)
    before = np.cumsum(sorted_h, axis=-1, dtype=np.float64).astype(np.float32) - sorted_h
    expected = np.zeros(H.shape, dtype=bool)
    np.put_along_axis(expected, order, before <= np.float32(bound), axis=-1)
    np.testing.assert_array_equal(sampler.accept(H, bound), expected)


def test_initial_canvas_is_int64_on_the_given_namespace():
    canvas = sampler.initialize_canvas(TorchCPUGenerator(0), 2, 5, 100, xp=np)
    assert isinstance(canvas, np.ndarray) and canvas.dtype == np.int64 and canvas.shape == (2, 5)
    np.testing.assert_array_equal(canvas, sampler.initialize_canvas(TorchCPUGenerator(0), 2, 5, 100))


@given(st.integers(1, 3), st.integers(1, 20), st.integers(2, 5000), st.integers(0, 2**32 - 1))
def test_renoise_keeps_accepted_and_draws_in_range(B, C, V, seed):
    rng = np.random.default_rng(seed)
    canvas = rng.integers(0, V, size=(B, C))
    accepted = rng.random((B, C)) < 0.5
    out = sampler.renoise(canvas, accepted, TorchCPUGenerator(seed), V)
    assert out.shape == (B, C) and out.min() >= 0 and out.max() < V
    np.testing.assert_array_equal(out[accepted], canvas[accepted])


@given(st.integers(1, 200), st.floats(0, 2), st.floats(0.01, 3))
def test_temperature_endpoints(N, t_min, span):
    t_max = t_min + span
    assert sampler.temperature(N, N, t_min, t_max) == pytest.approx(t_max, rel=1e-6)
    assert sampler.temperature(1, N, t_min, t_max) == pytest.approx(t_min + (t_max - t_min) / N, rel=1e-6)
    temps = [sampler.temperature(s, N, t_min, t_max) for s in range(N, 0, -1)]
    assert all(a >= b for a, b in zip(temps, temps[1:])) and all(t.dtype == np.float32 for t in temps)


@given(st.integers(1, 20), st.floats(0, 2), st.floats(0.01, 3))
def test_temperature_rounds_like_torch(N, t_min, span):
    torch = pytest.importorskip("torch")
    from transformers.models.diffusion_gemma.generation_diffusion_gemma import LinearTemperatureScheduleLogitsProcessor
    proc = LinearTemperatureScheduleLogitsProcessor(t_min, t_min + span, N)
    for s in range(1, N + 1):
        got = proc(None, torch.ones(1), cur_step=torch.tensor(s, dtype=torch.int32))
        assert np.float32(1) / sampler.temperature(s, N, t_min, t_min + span) == got.numpy()[0]


def test_race_draws_categorical_frequencies():
    p = np.array([[0.5, 0.3, 0.2, 0.0]], dtype=np.float32)
    rng = np.random.default_rng(0)
    wins = np.array([sampler.race(p, rng.exponential(size=(1, 4)).astype(np.float32))[0] for _ in range(20000)])
    np.testing.assert_allclose(np.bincount(wins, minlength=4) / len(wins), p[0], atol=0.015)


def test_entropy_matches_the_definition():
    x = np.random.default_rng(1).normal(size=(5, 30)).astype(np.float32) * 4
    p, H = sampler.softmax_and_entropy(x)
    q = np.exp(x - x.max(-1, keepdims=True))
    q /= q.sum(-1, keepdims=True)
    np.testing.assert_allclose(H, -(q * np.log(q)).sum(-1), rtol=1e-5)
    np.testing.assert_allclose(p, q, rtol=1e-5)


@given(st.integers(1, 300), st.integers(0, 2**32 - 1))
def test_chunked_proposal_equals_one_pass(rows, seed):
    x = np.random.default_rng(seed).normal(size=(1, rows, 17)).astype(np.float32)
    proposal, draft, H = sampler.propose(x, TorchCPUGenerator(seed))
    E = TorchCPUGenerator(seed).exponential(size=(1, rows, 17))
    p, H1 = sampler.softmax_and_entropy(x[0])
    np.testing.assert_array_equal(proposal[0], np.argmax(p / E[0], -1))
    np.testing.assert_array_equal(draft[0], np.argmax(x[0], -1))
    np.testing.assert_array_equal(H[0], H1)


def test_stopping_is_per_row_and_needs_history():
    draft = np.array([[1, 2], [3, 4]])
    low, high = np.full((2, 2), 1e-4, np.float32), np.array([[1e-4, 1e-4], [5, 5]], np.float32)
    stop, hist = sampler.stable_and_confident(None, draft, low, 1, 0.005)
    assert not stop.any()  # nothing to be stable against yet
    stop, hist = sampler.stable_and_confident(hist, draft, high, 1, 0.005)
    assert stop.tolist() == [True, False]  # row 1 is stable but not confident
    stop, _ = sampler.stable_and_confident(hist, draft + [[0, 0], [0, 1]], low, 1, 0.005)
    assert stop.tolist() == [True, False]  # row 1 confident but its draft changed
    stop, _ = sampler.stable_and_confident(None, draft, low, 0, 0.005)
    assert stop.all()  # threshold 0: confidence alone


@given(hnp.arrays(np.int64, st.tuples(st.integers(1, 4), st.integers(1, 12)), elements=st.integers(0, 9)),
       st.lists(st.integers(0, 9), min_size=1, max_size=3), st.integers(0, 9))
def test_tokens_after_eos_are_pad(canvas, eos, pad):
    C = canvas.shape[1]
    seq = np.concatenate([np.full((len(canvas), 2), 5), canvas], axis=1)
    before = np.zeros(len(canvas), dtype=bool)
    out, finished = finalize_canvas(seq, before, C, eos, pad, max_length=10**6)
    for row in range(len(canvas)):
        hits = np.flatnonzero(np.isin(canvas[row], eos))
        assert finished[row] == bool(len(hits))
        if len(hits):
            assert (out[row, 2 + hits[0] + 1:] == pad).all() and out[row, 2 + hits[0]] == canvas[row, hits[0]]
        else:
            np.testing.assert_array_equal(out[row, 2:], canvas[row])
    # a finished row's next canvas is all pad
    out2, _ = finalize_canvas(np.concatenate([out, canvas], axis=1), finished, C, eos, pad, max_length=10**6)
    assert (out2[finished, -C:] == pad).all()


@pytest.fixture(scope="module")
def model():
    return tinydg.load(os.path.join(FIXTURES, "sliding_full_f32"))


def test_stream_yields_every_step_and_canvas(model):
    ids = np.array([[5, 6, 7]])
    events = list(stream(model, ids, 12, seed=0, max_denoising_steps=3))
    C = model.config.canvas_length
    steps = [e for e in events if isinstance(e, tinydg.Step)]
    canvases = [e for e in events if isinstance(e, tinydg.Canvas)]
    assert len(canvases) == 2 and [s.cur_step for s in steps[:3]] == [3, 2, 1]
    out = generate(model, ids, 12, seed=0, max_denoising_steps=3)
    np.testing.assert_array_equal(np.concatenate([c.tokens for c in canvases], axis=1), out.sequences[:, 3:])
    assert out.sequences.shape == (1, 3 + 2 * C)
    assert out.steps_per_canvas.shape == (2, 1) and len(out.accepted_per_step) == 2
    assert steps[0].draft.shape == steps[0].accepted.shape == steps[0].entropy.shape == (1, C)
    assert all(isinstance(a, np.ndarray) for a in (steps[0].canvas, canvases[0].tokens, out.sequences))


@pytest.mark.parametrize("kwargs, message", [
    (dict(t_min=0.8, t_max=0.4), "t_max"), (dict(entropy_bound=0.0), "entropy_bound"),
    (dict(entropy_bound=-1.0), "entropy_bound"), (dict(max_denoising_steps=0), "max_denoising_steps"),
    (dict(max_new_tokens=-3), "max_new_tokens"), (dict(stability_threshold=-1), "stability_threshold"),
    (dict(confidence_threshold=0.0), "confidence_threshold"), (dict(t_min=-0.1), "t_min"),
    (dict(decoder_input_ids=np.zeros((1, 3), np.int64)), "decoder_input_ids"),
    (dict(decoder_input_ids=np.full((1, 8), 10**6, np.int64)),
     "decoder_input_ids holds token id 1000000, outside the vocabulary"),
    (dict(attention_mask=np.ones((1, 4))), "attention_mask"),
    (dict(seed=1, rng=np.random.default_rng()), "seed or rng"),
    (dict(rng=object()), "rng"),
])
def test_impossible_settings_are_refused(model, kwargs, message):
    kwargs = {"max_new_tokens": 8, **kwargs}
    with pytest.raises((ConfigError, InputError), match=message):
        generate(model, np.array([[5, 6, 7]]), **kwargs)


def test_prompt_past_the_context_is_refused(model):
    limit = model.text.max_position_embeddings
    with pytest.raises(InputError, match="max_position_embeddings"):
        generate(model, np.full((1, limit - 4), 5), 8, seed=0)


def test_numpy_generator_is_accepted(model):
    out = generate(model, np.array([[5, 6, 7]]), 8, rng=np.random.default_rng(3), max_denoising_steps=2)
    assert out.sequences.shape == (1, 3 + model.config.canvas_length)
