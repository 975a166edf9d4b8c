"""Generation against the live reference (needs the `reference` extra), over drawn configurations.

1. The sampler, step by step: the reference's own inputs to every step (its temperature-scaled
   logits, its canvas, its draws) go through tinydg's sampler functions, which must make exactly
   the reference's choices: proposal, draft, accepted set, renoised canvas, stop.
2. Whole generations: same seed, same tokens, unless the reference itself is not robust to
   float32-sized noise on that run (then the two may legitimately part ways).
3. A cache reused across calls (multi-turn) continues exactly like the reference's.
"""

import os

import numpy as np
import pytest
from hypothesis import event, given, settings, strategies as st

import tinydg
from tinydg import sampler
from tinydg.generation import generate
from tinydg.rng import Replay

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
from transformers.models.diffusion_gemma import generation_diffusion_gemma as G  # noqa: E402

from tinydg.tools import reference as ref  # noqa: E402
from tinydg.tools.reference_generate import recording_draws, run_generate, survives_noise  # noqa: E402

CONFIGS = [
    dict(canvas_length=8),
    dict(canvas_length=6, sliding_window=4, vocab_size=96),
    dict(canvas_length=5, layer_types=["sliding_attention", "sliding_attention", "full_attention"], num_experts=4),
]
_models = {}


def models(i, tmp_root):
    """(reference model, tinydg model) for CONFIGS[i], built once per session."""
    if i not in _models:
        folder = os.path.join(tmp_root, f"gen{i}")
        ref.save(ref.build_model(ref.tiny_config(**CONFIGS[i]), seed=10 + i), folder)
        _models[i] = (ref.load_float32(folder, attn_implementation="sdpa"), tinydg.load(folder))
    return _models[i]


@pytest.fixture(scope="module")
def tmp_root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("generation"))


@st.composite
def runs(draw):
    i = draw(st.integers(0, len(CONFIGS) - 1))
    B = draw(st.integers(1, 3))
    T = draw(st.integers(1, 7))
    pads = [draw(st.integers(0, T - 1)) for _ in range(B)]
    t_min = draw(st.sampled_from([0.2, 0.4, 1.0]))
    setting = dict(
        max_new_tokens=draw(st.integers(1, 14)),
        max_denoising_steps=draw(st.integers(1, 8)),
        entropy_bound=draw(st.sampled_from([0.1, 1.0, 3.0, 8.0])),
        t_min=t_min, t_max=t_min + draw(st.sampled_from([0.3, 0.8])),
        stability_threshold=draw(st.integers(0, 2)),
        confidence_threshold=draw(st.sampled_from([0.005, 1.0, 2.5])),
    )
    if draw(st.booleans()):
        setting["eos_token_id"] = draw(st.lists(st.integers(0, 95), min_size=1, max_size=8, unique=True))
        setting["pad_token_id"] = draw(st.integers(0, 95))
    return i, B, T, pads, setting, draw(st.integers(0, 2**31 - 1))


def prompt(seed, B, T, pads, vocab):
    ids = np.random.default_rng(seed).integers(0, vocab, size=(B, T))
    mask = np.ones((B, T), dtype=np.int64)
    for row, p in enumerate(pads):
        mask[row, :p] = 0
    return ids, mask


class StepRecorder:
    """Patches the reference's sampler to keep every step's inputs and decisions."""

    def __init__(self):
        self.steps = []

    def __enter__(self):
        self._accept, self._renoise = G.EntropyBoundSampler.accept_canvas, G.EntropyBoundSampler.renoise_canvas
        self._stop = G.StableAndConfidentStoppingCriteria.__call__
        rec = self

        def accept(sampler_self, current, proposal, logits, cur_step):
            out = rec._accept(sampler_self, current, proposal, logits, cur_step)
            rec.steps.append(dict(current=current.numpy().copy(), proposal=proposal.numpy().copy(),
                                  processed=logits.numpy().copy(), accepted=sampler_self.accepted_token_mask.numpy()))
            return out

        def renoise(sampler_self, accepted_canvas, cur_step):
            out = rec._renoise(sampler_self, accepted_canvas, cur_step)
            rec.steps[-1]["renoised"] = out.numpy().copy()
            return out

        def stop(crit_self, argmax_canvas, logits, **kwargs):
            out = rec._stop(crit_self, argmax_canvas, logits, **kwargs)
            rec.steps[-1].update(stop=out.numpy().copy(), stop_draft=argmax_canvas.numpy().copy())
            return out

        G.EntropyBoundSampler.accept_canvas, G.EntropyBoundSampler.renoise_canvas = accept, renoise
        G.StableAndConfidentStoppingCriteria.__call__ = stop
        return self

    def __exit__(self, *exc):
        G.EntropyBoundSampler.accept_canvas, G.EntropyBoundSampler.renoise_canvas = self._accept, self._renoise
        G.StableAndConfidentStoppingCriteria.__call__ = self._stop


@settings(max_examples=25)
@given(runs())
def test_sampler_makes_the_references_choices_on_its_inputs(tmp_root, run):
    i, B, T, pads, setting, seed = run
    rm, tm = models(i, tmp_root)
    V = tm.text.vocab_size
    setting.pop("eos_token_id", None), setting.pop("pad_token_id", None)
    ids, mask = prompt(seed, B, T, pads, V)
    with StepRecorder() as rec:
        _, draws = run_generate(rm, ids, seed, attention_mask=mask, **setting)
    # draws: per canvas one integers, then per step exponential + integers
    kinds = iter(draws)
    history, stopped = None, np.zeros(B, dtype=bool)
    for step in rec.steps:
        kind, first = next(kinds)
        if kind == "integers":  # a new canvas starts
            history, stopped = None, np.zeros(B, dtype=bool)
            kind, first = next(kinds)
        replay = Replay([(kind, first), next(kinds)])
        proposal, draft, entropy = sampler.propose(step["processed"].copy(), replay)
        np.testing.assert_array_equal(proposal, step["proposal"])
        accepted = sampler.accept(entropy, setting["entropy_bound"])
        np.testing.assert_array_equal(accepted, step["accepted"])
        renoised = sampler.renoise(np.where(accepted, proposal, step["current"]), accepted, replay, V)
        np.testing.assert_array_equal(renoised, step["renoised"])
        assert replay.finished()
        draft = np.where(stopped[:, None], step["stop_draft"], draft)  # frozen rows keep their draft
        np.testing.assert_array_equal(draft, step["stop_draft"])
        stop, history = sampler.stable_and_confident(history, draft, entropy, setting["stability_threshold"],
                                                     setting["confidence_threshold"])
        np.testing.assert_array_equal(stop | stopped, step["stop"] | stopped)
        stopped |= step["stop"]


@settings(max_examples=20)
@given(runs())
def test_same_seed_same_tokens_as_the_reference(tmp_root, run):
    i, B, T, pads, setting, seed = run
    rm, tm = models(i, tmp_root)
    ids, mask = prompt(seed, B, T, pads, tm.text.vocab_size)
    expected, draws = run_generate(rm, ids, seed, attention_mask=mask, **setting)
    replay = Replay(draws)
    out = generate(tm, ids, rng=replay, attention_mask=mask, **setting)
    if not np.array_equal(out.sequences, expected["sequences"]):
        rerun = lambda: run_generate(rm, ids, seed, attention_mask=mask, **setting)[0]["sequences"]  # noqa: E731
        assert not survives_noise(rerun, expected["sequences"]), "tokens differ on a run that is robust to rounding"
        event("diverged on a run that is not robust to rounding")
        return
    event("identical tokens")
    assert replay.finished()
    np.testing.assert_allclose(out.tokens_per_forward, expected["tokens_per_forward"], rtol=1e-6)
    seeded = generate(tm, ids, seed=seed, attention_mask=mask, **setting)
    np.testing.assert_array_equal(seeded.sequences, expected["sequences"])


def test_multi_turn_continues_from_the_cache_like_the_reference(tmp_root):
    rm, tm = models(0, tmp_root)
    setting = dict(max_new_tokens=8, max_denoising_steps=3, entropy_bound=1.0, t_min=1.0, t_max=1.5)
    ids, mask = prompt(5, 2, 6, [0, 2], tm.text.vocab_size)
    first, _ = run_generate(rm, ids, 5, attention_mask=mask, **setting)
    ours = generate(tm, ids, seed=5, attention_mask=mask, **setting)
    np.testing.assert_array_equal(ours.sequences, first["sequences"])
    assert ours.cache.length == first["past_key_values"].get_seq_length()

    # turn two: the last canvas (not yet encoded) and the next user tokens, continuing the cache
    C = tm.config.canvas_length
    follow = np.concatenate([ours.sequences[:, -C:], np.full((2, 3), 7)], axis=1)
    full_mask = np.concatenate([mask, np.ones((2, ours.sequences.shape[1] - 6 + 3), dtype=np.int64)], axis=1)
    second, _ = run_generate(rm, follow, 6, attention_mask=full_mask, past_key_values=first["past_key_values"],
                             **setting)
    again = generate(tm, follow, seed=6, attention_mask=full_mask, cache=ours.cache, **setting)
    np.testing.assert_array_equal(again.sequences, second["sequences"])
    # the same answer as encoding the whole history from scratch
    history = np.concatenate([ours.sequences, np.full((2, 3), 7)], axis=1)
    scratch = generate(tm, history, seed=6, attention_mask=full_mask, **setting)
    np.testing.assert_array_equal(scratch.sequences[:, history.shape[1]:], again.sequences[:, follow.shape[1]:])


def test_recorder_restores_torch(tmp_root):
    before = (torch.randint, torch.multinomial)
    with recording_draws() as draws:
        torch.randint(0, 5, (2,))
    assert (torch.randint, torch.multinomial) == before and draws[0][0] == "integers"
