"""Fuzzing generate's keyword arguments: one or two of them get any Python value (ints huge and
negative, NumPy scalars, floats with nan and inf, strings, lists, dicts, None, bools, arrays of odd
dtypes and shapes, caches of other models); generate either runs or raises a tinydg error, never
another exception, in bounded time and memory.

TINYDG_FUZZ_EXAMPLES=3000 python -m pytest -q tests/test_generate_fuzz.py runs a long search (the
suite runs a few hundred examples)."""

import dataclasses
import functools
import os
import time
import tracemalloc

import numpy as np
import pytest
from hypothesis import event, given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import tinydg
from helpers import FIXTURES
from tinydg.errors import TinyDGError
from tinydg.generation import SETTINGS, resolve_settings

EXAMPLES = int(os.environ.get("TINYDG_FUZZ_EXAMPLES", "200"))
MODEL = tinydg.load(os.path.join(FIXTURES, "sliding_full_f32"))  # V 128, C 8, 512 positions: ~5 ms a step
IDS = np.array([[5, 6, 7], [8, 9, 10]])
RUN = dict(max_new_tokens=8, max_denoising_steps=2, seed=0)  # what an argument not drawn is
MAX_STEPS = 40  # accepted settings that need more denoising steps are not run: accepting them is the test
MAX_SECONDS = 10.0  # per example, far above what one takes (a few ms to 0.2 s)
MAX_BYTES = 256 * 2**20  # traced peak per example

# --- any value ------------------------------------------------------------------------------------

numpy_scalars = hnp.arrays(hnp.scalar_dtypes(), ()).map(lambda a: a[()])
odd_arrays = hnp.arrays(hnp.scalar_dtypes() | hnp.byte_string_dtypes(max_len=3) | hnp.unicode_string_dtypes(max_len=3),
                        hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4))
object_arrays = hnp.arrays(object, hnp.array_shapes(max_dims=2, max_side=3),
                           elements=st.integers(-2**70, 2**70) | st.none() | st.text(max_size=2))
numbers = (st.integers() | st.integers(-2**70, 2**70)
           | st.sampled_from([0, 1, -1, 127, 128, 2**31, 2**63, 2**64, 10**40, 10**5000])
           | st.floats() | st.sampled_from([float("nan"), float("inf"), -float("inf"), -0.0, 5e-324, 1e300])
           | st.complex_numbers() | numpy_scalars)
anything = st.one_of(
    st.none(), st.booleans(), numbers, st.text(max_size=5), st.binary(max_size=4),
    st.lists(numbers, max_size=4), st.lists(st.lists(st.integers(-2, 130), max_size=4), max_size=3),
    st.dictionaries(st.text(max_size=3), numbers, max_size=2), st.tuples(numbers, numbers),
    odd_arrays, object_arrays, st.just(object()),
)

# --- values near the valid ones, so that the search also reaches the sampler -----------------------

small_ints = st.integers(-3, 12) | st.builds(lambda dtype, v: dtype.type(v), hnp.integer_dtypes(), st.integers(0, 12))


def id_arrays(B, T):
    shape = st.tuples(B, T)
    ints = st.builds(lambda a, dtype: a.astype(dtype), hnp.arrays(np.int64, shape, elements=st.integers(-1, 130)),
                     hnp.integer_dtypes())  # -1 and 130 wrap around in the small dtypes: ids in and out of range
    ragged = st.lists(st.lists(st.integers(-2, 2**65), min_size=1, max_size=4), min_size=1, max_size=3)
    return ints | ragged | hnp.arrays(hnp.scalar_dtypes(), shape)


masks = hnp.arrays(st.sampled_from([bool, np.int64, np.float32, np.uint8]),
                   st.sampled_from([(2, 3), (2, 6), (1, 3), (3,), (2, 3, 1)]),
                   elements=st.sampled_from([0, 1, 1, 1])) | hnp.arrays(np.float64, (2, 3))


@functools.lru_cache(maxsize=None)
def cache(kind):
    """A cache that fits MODEL and IDS, or one that does not (another model's, batch, dtype, fields)."""
    fits = tinydg.encode(MODEL, IDS)[1]
    other = {"hub_encoder_names": "other heads", "bf16_sharded": "more layers"}
    for folder, name in other.items():
        if kind == name:
            return tinydg.encode(tinydg.load(os.path.join(FIXTURES, folder)), IDS)[1]
    return {
        "fits": fits,
        "one row": tinydg.encode(MODEL, IDS[:1])[1],
        "float64 keys": dataclasses.replace(fits, keys=tuple(k.astype(np.float64) for k in fits.keys)),
        "length off": dataclasses.replace(fits, length=fits.length + 1),
        "no valid": dataclasses.replace(fits, valid=None),
        "keys as lists": dataclasses.replace(fits, keys=tuple(k.tolist() for k in fits.keys)),
    }[kind]


caches = st.sampled_from(["fits", "one row", "float64 keys", "length off", "no valid", "keys as lists",
                          "other heads", "more layers"]).map(cache)

temperatures = st.floats(0, 3) | st.sampled_from([1e-50, 1e39, -0.5])
NEAR = {
    "max_new_tokens": small_ints | st.integers(1, 600),
    "max_denoising_steps": small_ints,
    "entropy_bound": st.floats(0, 10),
    "t_min": temperatures,
    "t_max": temperatures,
    "stability_threshold": small_ints,
    "confidence_threshold": st.floats(0, 5),
    "eos_token_id": st.integers(-1, 130) | st.lists(st.integers(-1, 130), max_size=3),
    "pad_token_id": st.integers(-1, 130),
    "seed": st.integers(-2**64, 2**65),
    "attention_mask": masks,
    "decoder_input_ids": id_arrays(st.integers(1, 3), st.sampled_from([7, 8])),
    "cache": caches,
    "input_ids": id_arrays(st.integers(1, 3), st.integers(0, 5)),
}


@st.composite
def arguments(draw):
    names = draw(st.lists(st.sampled_from(sorted(NEAR)), min_size=1, max_size=2, unique=True))
    return {name: draw(anything if draw(st.integers(0, 3)) == 0 else NEAR[name]) for name in names}


# --- the property ---------------------------------------------------------------------------------

def denoising_steps(g):
    """How many decoder forwards generate may run with settings g (0 when its canvases cannot fit)."""
    C = MODEL.config.canvas_length
    canvases = -(-g.max_new_tokens // C)
    return canvases * g.max_denoising_steps if canvases * C < MODEL.text.max_position_embeddings else 0


def attempt(kwargs):
    """'ran', 'refused' (a tinydg error) or 'accepted, not run' (valid settings too slow to run here)."""
    kwargs = {**RUN, **kwargs}
    ids = kwargs.pop("input_ids", IDS)
    try:
        g = resolve_settings(MODEL, **{k: kwargs.get(k) for k in SETTINGS})
    except TinyDGError:
        g = None
    if g is not None and denoising_steps(g) > MAX_STEPS:
        return "accepted, not run"
    try:
        tinydg.generate(MODEL, ids, **kwargs)
    except TinyDGError:
        return "refused"
    return "ran"


@settings(max_examples=EXAMPLES)
@given(arguments())
def test_generate_runs_or_raises_a_tinydg_error(kwargs):
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with np.errstate(all="ignore"):  # NumPy's warnings on the way to a refusal are not the point here
            outcome = attempt(kwargs)
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    event(f"{outcome}: {', '.join(sorted(kwargs))}")
    assert seconds < MAX_SECONDS and peak < MAX_BYTES, (seconds, peak)


@pytest.mark.parametrize("kwargs", [
    dict(max_new_tokens=10**5000), dict(max_new_tokens=2**63), dict(seed=10**5000), dict(eos_token_id=[10**5000]),
    dict(input_ids=[[1, 10**5000]]), dict(attention_mask=np.array([[1, 1, 1], [1, 1, 10**30]], dtype=object)),
    dict(max_denoising_steps=2**80, max_new_tokens=8), dict(stability_threshold=10**12),
])
def test_huge_integers_are_refused_or_cheap(kwargs):
    assert attempt(kwargs) in ("refused", "accepted, not run")
