"""BLAS threads during generation (tinydg.threads): small models multiply on one BLAS thread inside each
forward pass and sampler step, and only there; None leaves BLAS alone; an int sets the count."""

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

import tinydg
from helpers import EMBEDDED, PROBLEMS, prompt_ids
from tinydg.errors import InputError
from tinydg.threads import SMALL_HIDDEN, blas_threads_for
from tinydg.tokenizer import load_tokenizer


def blas_count():
    return max(lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas")


def model_with(backend, hidden):
    return SimpleNamespace(backend=backend, text=SimpleNamespace(hidden_size=hidden))


def test_auto_is_one_thread_for_small_numpy_models_only():
    assert blas_threads_for(model_with("numpy", 128)) == 1
    assert blas_threads_for(model_with("numpy", SMALL_HIDDEN)) == 1
    assert blas_threads_for(model_with("numpy", SMALL_HIDDEN + 1)) is None
    assert blas_threads_for(model_with("cupy", 128)) is None
    assert blas_threads_for(model_with("numpy", 128), None) is None
    assert blas_threads_for(model_with("numpy", 4096), np.int64(3)) == 3


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "one", [1]])
def test_bad_values_are_refused_naming_the_argument(value):
    with pytest.raises(InputError, match="blas_threads"):
        blas_threads_for(model_with("numpy", 128), value)


def counting_model(seen):
    """The embedded model with a linear op that records the BLAS thread count it runs under."""
    model = tinydg.load(EMBEDDED)
    linear = model.ops.linear

    def recording(x, w):
        seen.append(blas_count())
        return linear(x, w)

    return tinydg.move(model, ops=dataclasses.replace(model.ops, linear=recording))


@pytest.mark.parametrize("setting, start, inside", [("auto", None, 1), (None, None, "as before"), (2, 1, 2)])
def test_the_limit_holds_inside_the_steps_only(setting, start, inside):
    """start: the BLAS thread count the caller runs with (None: as loaded, 2 or more), chosen so that
    each case differs from what "auto" or an ignored setting would give."""
    if blas_count() < 2:
        pytest.skip("needs a BLAS started with 2 threads or more")
    with threadpool_limits(limits=start, user_api="blas"):
        before = blas_count()
        seen, between = [], []
        model = counting_model(seen)
        ids = prompt_ids(load_tokenizer(EMBEDDED), PROBLEMS[0])
        for _ in tinydg.stream(model, ids, seed=0, blas_threads=setting):
            between.append(blas_count())  # the caller's code between steps runs as BLAS was
        assert seen and set(seen) == {before if inside == "as before" else inside}
        assert set(between) == {before} and blas_count() == before


def test_the_thread_count_does_not_change_the_tokens():
    ids = prompt_ids(load_tokenizer(EMBEDDED), PROBLEMS[-1])
    model = tinydg.load(EMBEDDED)
    outs = [tinydg.generate(model, ids, seed=3, blas_threads=t) for t in ("auto", None, 2)]
    for out in outs[1:]:
        np.testing.assert_array_equal(out.sequences, outs[0].sequences)
    with pytest.raises(InputError, match="blas_threads"):
        tinydg.generate(model, ids, seed=3, blas_threads=0)
