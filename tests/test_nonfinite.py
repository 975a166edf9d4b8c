"""Non-finite numbers: NaN or inf in a weight is refused when the weight is first converted; logits
that turn non-finite during generation stop it with an error naming the canvas and the step; and a
-inf logit (a banned token) is legal everywhere, probability 0, as in the reference."""

import dataclasses
import os
import shutil

import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

import tinydg
from helpers import FIXTURES
from tinydg import sampler
from tinydg.checkpoint import open_checkpoint
from tinydg.errors import CheckpointError, InputError
from tinydg.gpu.ops import gpu_ops
from tinydg.rng import TorchCPUGenerator
from tinydg.softcap import softcap
from tinydg.weights import Weights

F32 = os.path.join(FIXTURES, "sliding_full_f32")
EMBED = "model.decoder.embed_tokens.weight"
SC_DOWN = "model.decoder.self_conditioning.down_proj.weight"  # read by the decoder only
IDS = np.array([[5, 6, 7], [8, 9, 10]])


def damaged(tmp_path, name, value):
    """A copy of the float32 fixture whose tensor `name` has `value` at its first element."""
    ref = open_checkpoint(F32)[name]
    assert ref.dtype == "F32"
    dst = tmp_path / "ckpt"
    shutil.copytree(F32, dst)
    with open(dst / os.path.basename(ref.path), "r+b") as f:
        f.seek(ref.offset)
        f.write(np.float32(value).tobytes())
    return str(dst)


# --- weights ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_a_non_finite_weight_is_refused_naming_the_tensor(tmp_path, value):
    model = tinydg.load(damaged(tmp_path, EMBED, value))
    with pytest.raises(CheckpointError, match=rf"tensor {EMBED} in .*model.safetensors holds 1 NaN or inf"):
        tinydg.encode(model, IDS)


def test_the_check_runs_once_per_tensor_when_it_is_converted(tmp_path):
    model = tinydg.load(damaged(tmp_path, SC_DOWN, np.nan))
    _, cache = tinydg.encode(model, IDS)  # the encoder never reads the decoder's self-conditioning
    with pytest.raises(CheckpointError, match=SC_DOWN):
        tinydg.denoise(model, np.ones((2, 8), np.int64), cache)
    weights = Weights({"w": np.array([[1.0, 2.0], [3.0, np.inf]])})
    with pytest.raises(CheckpointError, match=r"tensor w holds 1 NaN or inf values \(the first at index \[1, 1\]"):
        weights["w"]
    assert Weights({"w": np.zeros((0, 3))})["w"].shape == (0, 3)


def test_the_gpu_path_checks_the_host_array_before_upload(tmp_path):
    model = tinydg.load(damaged(tmp_path, EMBED, np.nan))
    emulated = tinydg.move(model, ops=gpu_ops("bfloat16", emulate=True))
    with pytest.raises(CheckpointError, match=EMBED):
        tinydg.encode(emulated, IDS)


def test_check_finite_false_skips_the_check_and_moves_with_the_model(tmp_path):
    folder = damaged(tmp_path, SC_DOWN, np.nan)
    model = tinydg.load(folder, check_finite=False)
    assert not tinydg.move(model, "numpy").weights.check_finite
    _, cache = tinydg.encode(model, IDS)
    assert np.isnan(tinydg.denoise(model, np.ones((2, 8), np.int64), cache)).all()
    with pytest.raises(InputError, match="check_finite must be True or False"):
        tinydg.load(folder, check_finite="no")


# --- logits during generation -------------------------------------------------------------------------

def test_nan_weights_unchecked_stop_generation_at_the_first_step(tmp_path):
    model = tinydg.load(damaged(tmp_path, SC_DOWN, np.nan), check_finite=False)
    with pytest.raises(InputError, match=r"non-finite logits at canvas 0, step cur_step=3 .*row 0, position 0 "
                                         r"\(and 15 more\):"):
        tinydg.generate(model, IDS, 8, seed=0, max_denoising_steps=3)


def with_logits(model, change):
    """The model with change(logits, call) applied to the decoder's logits of every call (0, 1, ...)."""
    calls = []

    def capped(logits, cap):
        out = softcap(logits, cap)
        calls.append(None)
        return change(out, len(calls) - 1)
    return tinydg.move(model, ops=dataclasses.replace(model.ops, softcap=capped))


@pytest.fixture(scope="module")
def model():
    return tinydg.load(F32)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_logits_turning_non_finite_later_name_canvas_and_step(model, value):
    def spoil(logits, call):
        if call == 4:  # canvas 1 (3 steps each, no early stop), its second step
            logits[1, 2, 7] = value
        return logits
    with np.errstate(invalid="ignore"), \
            pytest.raises(InputError, match="non-finite logits at canvas 1, step cur_step=2 .*row 1, position 2:"):
        tinydg.generate(with_logits(model, spoil), IDS, 16, seed=0, max_denoising_steps=3, stability_threshold=3)


def test_a_position_with_every_token_banned_is_refused(model):
    def ban_all(logits, call):
        logits[0, 5] = -np.inf
        return logits
    with np.errstate(invalid="ignore"), pytest.raises(InputError, match=r"row 0, position 5: .* -inf for every token"):
        tinydg.generate(with_logits(model, ban_all), IDS, 8, seed=0, max_denoising_steps=2)


def test_banned_tokens_are_legal_and_never_generated(model):
    banned = np.arange(0, model.text.vocab_size, 2)  # every even id

    def ban(logits, call):
        logits[..., banned] = -np.inf
        return logits
    run = tinydg.stream(with_logits(model, ban), IDS, 16, seed=1, max_denoising_steps=4, stability_threshold=4)
    events = list(run)  # no row stops early: every accepted position of a step holds its proposal
    steps = [e for e in events if isinstance(e, tinydg.Step)]
    assert all(np.isfinite(s.entropy).all() for s in steps)
    assert not np.isin(np.stack([s.draft for s in steps]), banned).any()
    proposals = [s.canvas[s.accepted] for s in steps]  # accepted positions hold the sampled proposal
    assert not np.isin(np.concatenate(proposals), banned).any()


# --- the sampler with -inf logits ---------------------------------------------------------------------

def old_softmax_and_entropy(x):
    """softmax_and_entropy before -inf logits were handled: 0 * -inf = NaN."""
    peak = np.max(x, axis=-1, keepdims=True)
    e = np.exp(x - peak)
    total = np.sum(e, axis=-1, keepdims=True)
    log_p = x - (peak + np.log(total))
    return e / total, -np.sum(log_p * (e / total), axis=-1)


rows = hnp.arrays(np.float32, st.tuples(st.integers(1, 6), st.integers(1, 300)),
                  elements=st.floats(width=32, allow_nan=False, allow_infinity=False) | st.floats(-80, 80, width=32))


@given(rows)
def test_finite_rows_are_unchanged_bit_for_bit(x):
    with np.errstate(over="ignore", invalid="ignore"):
        p_old, h_old = old_softmax_and_entropy(x)
    p, h = sampler.softmax_and_entropy(x)
    np.testing.assert_array_equal(p, p_old)
    assert np.isfinite(h).all()
    kept = ~np.isnan(h_old)  # the old form was NaN only where x - max(x) overflowed to -inf (p = 0)
    assert np.array_equal(h[kept].view(np.uint32), h_old[kept].view(np.uint32))


@given(hnp.arrays(np.float32, st.tuples(st.integers(1, 5), st.integers(2, 64)), elements=st.floats(-20, 20, width=32)),
       st.data())
def test_entropy_with_minus_inf_matches_torch_categorical(x, data):
    torch = pytest.importorskip("torch")
    banned = data.draw(hnp.arrays(bool, x.shape))
    banned[:, 0] = False  # every row keeps a token
    x = np.where(banned, np.float32(-np.inf), x)
    p, h = sampler.softmax_and_entropy(x)
    want = torch.distributions.Categorical(logits=torch.from_numpy(x)).entropy().numpy()
    np.testing.assert_allclose(h, want, rtol=1e-5, atol=1e-5)  # float32 rounding of log(sum) near p = 1
    assert (p[banned] == 0).all()


def test_rows_without_a_distribution_have_nan_entropy():
    x = np.zeros((4, 5), np.float32)
    x[0, 1], x[1, 2], x[2] = np.nan, np.inf, -np.inf
    with np.errstate(invalid="ignore"):
        _, h = sampler.softmax_and_entropy(x)
    assert np.isnan(h[:3]).all() and h[3] == pytest.approx(np.log(5))


def test_a_banned_token_is_never_proposed():
    x = np.random.default_rng(0).normal(size=(1, 40, 9)).astype(np.float32)
    x[..., :8] = np.where(np.arange(8) % 2 == 0, -np.inf, x[..., :8])  # even ids below 8 banned
    proposal, draft, h = sampler.propose(x, TorchCPUGenerator(0))
    assert not np.isin(proposal, [0, 2, 4, 6]).any() and not np.isin(draft, [0, 2, 4, 6]).any()
    assert np.isfinite(h).all()
