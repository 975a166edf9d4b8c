"""generate's settings and inputs, and encode's and denoise's: each wrong value is refused with a
tinydg error naming the argument; NumPy integers pass wherever Python ints do."""

import dataclasses
import json
import os
import shutil

import numpy as np
import pytest

import tinydg
from helpers import FIXTURES
from tinydg.errors import ConfigError, InputError, TinyDGError
from tinydg.generation import resolve_settings
from tinydg.gpu.ops import gpu_ops
from tinydg.rng import TorchCPUGenerator

F32 = os.path.join(FIXTURES, "sliding_full_f32")
IDS = np.array([[5, 6, 7], [8, 9, 10]])
RUN = dict(max_new_tokens=8, max_denoising_steps=2)  # one canvas of 8, two steps


@pytest.fixture(scope="module")
def model():
    return tinydg.load(F32)


def run(model, ids=IDS, **kwargs):
    return tinydg.generate(model, ids, **{"seed": 0, **RUN, **kwargs})


# --- settings -----------------------------------------------------------------------------------------

def test_numpy_integers_count_as_ints(model):
    plain = run(model, stability_threshold=1, eos_token_id=[3, 4], pad_token_id=0, seed=5)
    numpy = run(model, max_new_tokens=np.int64(8), max_denoising_steps=np.int32(2), stability_threshold=np.uint8(1),
                eos_token_id=np.array([3, 4]), pad_token_id=np.int16(0), seed=np.int64(5))
    np.testing.assert_array_equal(plain.sequences, numpy.sequences)
    g = resolve_settings(model, eos_token_id=np.int64(3), max_new_tokens=np.int64(8))
    assert g.eos_token_id == (3,) and type(g.eos_token_id[0]) is int and type(g.max_new_tokens) is int


@pytest.mark.parametrize("kwargs, name", [
    (dict(eos_token_id=128), "eos_token_id"), (dict(eos_token_id=[1, 500]), "eos_token_id"),
    (dict(eos_token_id=-1), "eos_token_id"), (dict(pad_token_id=128), "pad_token_id"),
    (dict(pad_token_id=-2), "pad_token_id"), (dict(pad_token_id=10**30), "pad_token_id"),
])
def test_eos_and_pad_ids_lie_in_the_vocabulary(model, kwargs, name):
    with pytest.raises(ConfigError, match=rf"`{name}` must hold token ids in \[0, 128\)"):
        run(model, **kwargs)


@pytest.mark.parametrize("eos", [1.5, "1", True, float("inf"), float("nan"), [1, None], [[1]], {1: 2}, object(),
                                 np.array([1.0]), [10**400], b"\x01"])
def test_eos_ids_that_are_not_integers_are_refused(model, eos):
    with pytest.raises(TinyDGError, match="eos_token_id"):
        run(model, eos_token_id=eos)


@pytest.mark.parametrize("pad", [1.0, "0", True, [0], np.float32(0)])
def test_pad_ids_that_are_not_integers_are_refused(model, pad):
    with pytest.raises(TinyDGError, match="pad_token_id"):
        run(model, pad_token_id=pad)


def test_a_pad_id_from_generation_config_outside_the_vocabulary_is_never_written(tmp_path):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(F32, ckpt)
    (ckpt / "generation_config.json").write_text(json.dumps({"pad_token_id": 500, "eos_token_id": [3]}))
    with pytest.raises(ConfigError, match="pad_token_id"):  # at load, or at the latest before generating
        run(tinydg.load(str(ckpt)))


def test_temperatures_that_round_to_zero_or_overflow_in_float32_are_refused(model):
    with pytest.raises(ConfigError, match="`t_min` 0.0 and `t_max` 1e-50 give float32 temperatures"):
        run(model, t_min=0.0, t_max=1e-50)
    with pytest.raises(ConfigError, match="t_max"):
        run(model, t_min=0.5, t_max=1e39)


@pytest.mark.parametrize("seed", [1.5, "3", True, [1], 2**64, -2**63 - 1, pytest.param(10**5000, id="10**5000")])
def test_seeds_that_are_not_integers_in_torchs_range_are_refused(model, seed):
    with pytest.raises(InputError, match="seed must be"):
        run(model, seed=seed)
    with pytest.raises(InputError, match="seed must be"):
        TorchCPUGenerator(seed)


def test_negative_and_numpy_seeds_are_torchs(model):
    torch_rng = run(model, seed=None, rng=TorchCPUGenerator(-3))
    np.testing.assert_array_equal(run(model, seed=-3).sequences, torch_rng.sequences)
    np.testing.assert_array_equal(run(model, seed=np.uint64(2**64 - 1)).sequences, run(model, seed=2**64 - 1).sequences)


def test_backend_and_cuda_graph_types(model):
    with pytest.raises(InputError, match="backend must be"):
        run(model, backend=np.array(["numpy"]))
    with pytest.raises(InputError, match="cuda_graph True or False"):
        run(model, cuda_graph=np.array([0, 1]))


# --- attention masks ----------------------------------------------------------------------------------

@pytest.mark.parametrize("mask", [[[1, 2, 1], [1, 1, 1]], [[1, -1, 1], [1, 1, 1]], [[0.5, 1, 1], [1, 1, 1]],
                                  [[np.nan, 1, 1], [1, 1, 1]], [["1", "1", "1"], ["1", "1", "1"]],
                                  np.array([[1, 1, 1], [1, 1, None]], dtype=object)])
def test_attention_masks_hold_only_zeros_and_ones(model, mask):
    with pytest.raises(InputError, match="attention_mask must hold only 0"):
        run(model, attention_mask=mask)
    with pytest.raises(InputError, match="attention_mask must hold only 0"):
        tinydg.encode(model, IDS, attention_mask=mask)


def test_bool_int_and_float_masks_agree(model):
    mask = np.array([[0, 1, 1], [1, 1, 1]])
    outs = [run(model, attention_mask=m).sequences for m in (mask, mask.astype(bool), mask.astype(np.float32))]
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], outs[2])


def test_every_row_needs_a_real_token(model):
    mask = np.array([[1, 1, 1], [0, 0, 0]])
    with pytest.raises(InputError, match="attention_mask row 1 has no real token"):
        run(model, attention_mask=mask)
    with pytest.raises(InputError, match="attention_mask row 1 has no real token"):
        tinydg.encode(model, IDS, attention_mask=mask)
    _, cache = tinydg.encode(model, IDS)  # a row of padding after cached real tokens still has them
    tinydg.encode(model, IDS, cache, attention_mask=mask)


def test_ragged_masks_are_refused(model):
    with pytest.raises(InputError, match="attention_mask must be an array"):
        run(model, attention_mask=[[1, 1, 1], [1, 1]])


# --- token ids ------------------------------------------------------------------------------------------

BAD_IDS = [
    (np.array([[1.0, 2.0]]), "must hold integer token ids"),
    ([["a", "b"]], "must hold integer token ids"),
    ([[1, 2**64]], "must hold integer token ids"),  # past int64: NumPy makes it an object array
    ([[1, 2**63]], "must hold integer token ids"),  # NumPy mixes int64 and uint64 into float64
    (np.array([[1, 2**63]], np.uint64), "holds token id 9223372036854775808, outside the vocabulary"),
    ([[1, 2], [3]], "must be an array"),
    ([1, 2, 3], "must be 2-D"),
    (np.zeros((1, 0), np.int64), "is empty"),
    ([[1, 128]], "holds token id 128, outside the vocabulary"),
    ([[True, False]], "must hold integer token ids"),
    ({"ids": 1}, "must be"),
]


@pytest.mark.parametrize("ids, message", BAD_IDS)
def test_generate_refuses_ids_as_encode_does(model, ids, message):
    with pytest.raises(InputError, match="input_ids " + message):
        run(model, ids)
    with pytest.raises(InputError, match="input_ids " + message):
        tinydg.encode(model, ids)


@pytest.mark.parametrize("ids, message", BAD_IDS)
def test_decoder_input_ids_likewise(model, ids, message):
    with pytest.raises(InputError, match="decoder_input_ids " + message):
        run(model, IDS[:1], decoder_input_ids=ids)


def test_lists_of_ids_are_arrays(model):
    np.testing.assert_array_equal(run(model, IDS.tolist()).sequences, run(model, IDS).sequences)


# --- caches -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cache(model):
    return tinydg.encode(model, IDS)[1]


def keys_replaced(cache, layer, array):
    keys = list(cache.keys)
    keys[layer] = array
    return dataclasses.replace(cache, keys=tuple(keys))


@pytest.mark.parametrize("make, message", [
    (lambda c: {"keys": c.keys}, "cache must be a tinydg.KVCache .*got dict"),
    (lambda c: (c.keys, c.values), "cache must be a tinydg.KVCache .*got tuple"),
    (lambda c: dataclasses.replace(c, keys=c.keys[:1]),
     r"cache.keys must hold one array per layer of this model \(2\), got 1"),
    (lambda c: dataclasses.replace(c, values=None), r"cache.values must hold one array per layer .* got NoneType"),
    (lambda c: keys_replaced(c, 1, c.keys[1].astype(np.float64)),
     r"cache.keys\[1\] holds float64, but this model's cache holds float32"),
    (lambda c: keys_replaced(c, 0, c.keys[0][:, :1]),
     r"cache.keys\[0\] has shape \(2, 1, 3, 16\), but layer 0 of this model keeps \(2, 2, 3, 16\)"),
    (lambda c: keys_replaced(c, 0, c.keys[0].tolist()), r"cache.keys\[0\] must be a numpy array .*got list"),
    (lambda c: dataclasses.replace(c, length=4),
     r"cache.valid must be a numpy bool array \[batch, 4\] \(cache.length\)"),
    (lambda c: dataclasses.replace(c, length=True), "cache.length must be an integer >= 0, got True"),
    (lambda c: dataclasses.replace(c, length=10**5000),
     r"cache.valid must be .*\[batch, int value too large to print\]"),
    (lambda c: dataclasses.replace(c, valid=c.valid.astype(int)), "cache.valid must be a numpy bool array"),
    (lambda c: dataclasses.replace(c, valid=None), "cache.valid must be .* got NoneType"),
])
def test_a_cache_that_is_not_this_models_is_refused(model, cache, make, message):
    bad = make(cache)
    with pytest.raises(InputError, match=message):
        run(model, cache=bad)
    with pytest.raises(InputError, match=message):
        tinydg.encode(model, IDS, bad)
    with pytest.raises(InputError, match=message):
        tinydg.denoise(model, np.ones((2, 8), np.int64), bad)


def test_caches_of_other_models_and_batches_are_refused(model, cache):
    other = tinydg.encode(tinydg.load(os.path.join(FIXTURES, "hub_encoder_names")), IDS)[1]
    with pytest.raises(InputError, match=r"cache.keys\[0\] has shape \(2, 4, 3, 8\), but layer 0 of this model keeps "
                                         r"\(2, 2, 3, 16\) \[batch, KV heads, positions, head dim\]"):
        run(model, cache=other)
    deeper = tinydg.encode(tinydg.load(os.path.join(FIXTURES, "bf16_sharded")), IDS)[1]
    with pytest.raises(InputError, match=r"per layer of this model \(2\), got 3 layers"):
        run(model, cache=deeper)
    with pytest.raises(InputError, match="input_ids has batch size 1 but the cache holds 2 rows"):
        run(model, IDS[:1], cache=cache)
    bf16 = tinydg.move(model, ops=gpu_ops("bfloat16", emulate=True))  # its cache holds bf16 bits
    with pytest.raises(InputError, match=r"cache.keys\[0\] holds float32, but this model's cache holds uint16"):
        run(bf16, cache=cache)


def test_a_cache_that_fits_continues(model, cache):
    out = run(model, IDS, cache=cache)
    assert out.sequences.shape == (2, 3 + 8) and out.cache.length == 6


def test_self_conditioning_logits_must_be_floats_of_the_canvas_shape(model, cache):
    canvas = np.ones((2, 8), np.int64)
    for bad in ([[["a"]]], np.zeros((2, 8, 128), np.int64), np.zeros((2, 8, 5), np.float32), {"logits": 1}):
        with pytest.raises(InputError, match="self_conditioning_logits must"):
            tinydg.denoise(model, canvas, cache, bad)
    as_list = tinydg.denoise(model, canvas, cache, np.zeros((2, 8, 128)).tolist())
    np.testing.assert_allclose(as_list, tinydg.denoise(model, canvas, cache, np.zeros((2, 8, 128), np.float32)))
