"""The weight store's modes (`tinydg.load(..., weight_cache_bytes=...)`, tinydg.weights.Weights):
keep every converted float32 tensor (None), the first ones converted up to N bytes, or none (0).
Every mode computes bit for bit what the default computes; the bounded store keeps what fits in the
order of first use and never drops a kept tensor (checked against a list model of the rule); bad
values are InputErrors naming the argument; the command line's --weight-cache-gb reaches load;
benchmarks/weight_memory.py runs."""

import gc
import io
import os
import sys
import weakref

import numpy as np
import pytest
from hypothesis import given, strategies as st

import tinydg
from helpers import EMBEDDED, FIXTURES, PROBLEMS, ROOT, prompt_ids, run_tinydg
from tinydg import cli, weights as weights_module
from tinydg.errors import CheckpointError, InputError
from tinydg.gpu.ops import gpu_ops
from tinydg.ops import numpy_ops
from tinydg.tokenizer import load_tokenizer
from tinydg.weights import Weights, count_parameters

BF16 = os.path.join(FIXTURES, "bf16_sharded")
F32 = os.path.join(FIXTURES, "sliding_full_f32")


def float32_bytes(folder):
    """What the default mode keeps for `folder` once every tensor is converted."""
    model = tinydg.load(folder)
    return sum(model.weights[name].nbytes for name in model.weights)


def modes(folder):
    """0, a bound that holds about a quarter of the converted weights, and None."""
    return [0, float32_bytes(folder) // 4, None]


class Counted:
    """A tensor that counts its conversions (what a checkpoint's TensorRef.load does)."""

    def __init__(self, array):
        self.array, self.loads = np.asarray(array, dtype=np.float32), 0
        self.shape = self.array.shape

    def load(self):
        self.loads += 1
        return self.array.copy()


# --- every mode computes what the default computes ---------------------------------------------------

@pytest.mark.parametrize("folder", [BF16, F32])
def test_encode_and_denoise_are_bit_identical_in_every_mode(folder):
    """Bit for bit what the same ops compute with every weight kept (a bound keeps the experts in the
    checkpoint's layout, where BLAS may sum in another order than from moe.expert_layout)."""
    rec = dict(np.load(os.path.join(folder, "reference.npz")))
    for bound in modes(folder):
        same_ops = tinydg.load(folder, ops=numpy_ops("float32", expert_layout=bound is None))
        want = run_tinydg(same_ops, rec)
        model = tinydg.load(folder, weight_cache_bytes=bound)
        got = run_tinydg(model, rec)  # encode, denoise with and without self-conditioning, commit, next block
        for key in want:
            np.testing.assert_array_equal(got[key], want[key], err_msg=f"{key}, weight_cache_bytes={bound}")
        if bound == 0:
            assert model.weights.loaded() == 0
        elif bound is not None:
            assert 0 < model.weights.kept_bytes() <= bound and model.weights.loaded() < len(model.weights)


def test_generate_is_bit_identical_in_every_mode():
    ids = prompt_ids(load_tokenizer(EMBEDDED), PROBLEMS[-1])
    for bound in modes(EMBEDDED):
        same_ops = tinydg.load(EMBEDDED, ops=numpy_ops("float32", expert_layout=bound is None))
        want = tinydg.generate(same_ops, ids, max_new_tokens=64, seed=0)
        out = tinydg.generate(tinydg.load(EMBEDDED, weight_cache_bytes=bound), ids, max_new_tokens=64, seed=0)
        np.testing.assert_array_equal(out.sequences, want.sequences)
        np.testing.assert_array_equal(out.steps_per_canvas, want.steps_per_canvas)
        np.testing.assert_array_equal(out.tokens_per_forward, want.tokens_per_forward)


def test_with_no_store_nothing_outlives_its_use():
    """weight_cache_bytes=0: once a call returns, no converted weight is alive anywhere (no cache in the
    runtime, no output that is a view of a weight); each tensor is converted again at every use."""
    model = tinydg.load(BF16, weight_cache_bytes=0)
    made, upload = [], model.weights._to_device

    def recorded(host, name):
        array = upload(host, name)
        made.append(weakref.ref(array))
        return array

    model.weights._to_device = recorded
    ids = np.array([[3, 4, 5, 6]])
    _, cache = tinydg.encode(model, ids)
    logits = tinydg.denoise(model, np.ones((1, model.config.canvas_length), np.int64), cache)
    tinydg.denoise(model, np.ones((1, model.config.canvas_length), np.int64), cache, logits)
    tinydg.generate(model, ids, max_new_tokens=8, seed=0)
    gc.collect()
    assert len(made) > 2 * len(model.weights)  # converted again, not kept
    assert all(ref() is None for ref in made)
    assert model.weights.loaded() == 0 and model.weights.kept_bytes() == 0


# --- the store ------------------------------------------------------------------------------------------

def keep_first_model(sizes, bound, accesses):
    """Which accesses convert, for a store that keeps each tensor converted while it fits in `bound`
    bytes and never drops one: (converts, the names kept in the order they were kept)."""
    kept, converts = [], []
    for name in accesses:
        converts.append(name not in kept)
        if name not in kept and sum(sizes[k] for k in kept) + sizes[name] <= bound:
            kept.append(name)
    return converts, kept


@given(sizes=st.lists(st.integers(0, 12), min_size=1, max_size=5), share=st.floats(0, 1.2),
       accesses=st.lists(st.integers(0, 4), min_size=5, max_size=40))
def test_the_bounded_store_keeps_what_fits_first(sizes, share, accesses):
    tensors = {f"w{i}": Counted(np.full((n, 1), i)) for i, n in enumerate(sizes)}  # n float32: 4n bytes
    accesses = [f"w{i % len(sizes)}" for i in accesses]
    bound = int(share * 4 * sum(sizes))  # room for some of the tensors, or all
    weights = Weights(tensors, cache_bytes=bound)
    converts, kept = keep_first_model({name: 4 * len(t.array) for name, t in tensors.items()}, bound, accesses)
    loads = 0
    for name, convert in zip(accesses, converts):
        np.testing.assert_array_equal(weights[name], tensors[name].array)
        loads += convert
        assert sum(t.loads for t in tensors.values()) == loads, f"{name} should{'' if convert else ' not'} convert"
        assert weights.kept_bytes() <= bound
    assert weights.loaded() == len(kept)
    assert weights.kept_bytes() == sum(4 * len(tensors[name].array) for name in kept)


def test_a_cyclic_pass_converts_only_what_is_not_kept():
    """A forward reads the weights in the same order each time: with room for two of three, the first
    two stay and only the third is converted again on each pass (an LRU would convert all three)."""
    tensors = {name: Counted(np.ones(100)) for name in "abc"}  # 400 bytes each
    weights = Weights(tensors, cache_bytes=1000)
    for _ in range(3):
        for name in "abc":
            weights[name]
    assert [t.loads for t in tensors.values()] == [1, 1, 3]
    assert weights.loaded() == 2 and weights.kept_bytes() == 800


def test_a_tensor_larger_than_the_bound_is_used_and_not_kept():
    tensors = {"small": Counted(np.ones(10)), "large": Counted(np.ones(1000))}
    weights = Weights(tensors, cache_bytes=1000)
    weights["small"]
    np.testing.assert_array_equal(weights["large"], 1)
    weights["large"]
    assert tensors["large"].loads == 2 and weights.loaded() == 1  # and the small one stays
    weights["small"]
    assert tensors["small"].loads == 1


def test_none_keeps_every_tensor_and_zero_keeps_none():
    tensors = {name: Counted(np.ones(100)) for name in "ab"}
    kept, none = Weights(tensors), Weights(tensors, cache_bytes=0)
    for name in "abab":
        kept[name]
    assert kept.loaded() == 2 and kept.kept_bytes() == 800 and [t.loads for t in tensors.values()] == [1, 1]
    for name in "abab":
        none[name]
    assert none.loaded() == 0 and none.kept_bytes() == 0 and [t.loads for t in tensors.values()] == [3, 3]


def test_the_finite_check_runs_once_per_tensor(monkeypatch):
    checked = []
    check = weights_module.check_finite
    monkeypatch.setattr(weights_module, "check_finite", lambda name, *args: checked.append(name) or check(name, *args))
    weights = Weights({"w": Counted(np.ones(3)), "bad": Counted([1.0, np.nan])}, cache_bytes=0)
    for _ in range(3):
        weights["w"]
    assert checked == ["w"]
    for _ in range(2):  # a damaged tensor is refused at every use, never remembered as checked
        with pytest.raises(CheckpointError, match="tensor bad holds 1 NaN"):
            weights["bad"]


# --- load, move, repr ----------------------------------------------------------------------------------

def test_the_mode_is_chosen_at_load_and_at_move_and_shown():
    model = tinydg.load(F32, weight_cache_bytes=np.int64(4096))
    assert model.weights.cache_bytes == 4096 and type(model.weights.cache_bytes) is int
    assert repr(model) == (f"Model(path={F32!r}, ops=Ops(numpy, float32, experts in the checkpoint's layout), "
                           "weight_cache_bytes=4096)")
    assert tinydg.move(model, "numpy").weights.cache_bytes is None  # move keeps all unless told
    assert tinydg.move(model, "numpy", "float8", weight_cache_bytes=0).weights.cache_bytes == 0
    assert repr(tinydg.load(F32)) == f"Model(path={F32!r}, ops=Ops(numpy, float32))"


def test_experts_are_laid_out_anew_only_when_kept():
    """Keeping every weight, the experts get moe.expert_layout (each w[e].T contiguous); converted at
    every use, they keep the checkpoint's layout (a layout copy per use would cost more than it saves)."""
    name = "model.decoder.layers.0.experts.gate_up_proj"
    kept, bounded = tinydg.load(F32), tinydg.load(F32, weight_cache_bytes=0)
    assert kept.weights[name][0].T.flags.c_contiguous
    assert bounded.weights[name].flags.c_contiguous
    np.testing.assert_array_equal(kept.weights[name], bounded.weights[name])


@pytest.mark.parametrize("value", [True, False, -1, 1.5, 1e9, "1000", [1], np.float64(8)])
def test_bad_values_are_refused_naming_the_argument(value):
    with pytest.raises(InputError, match=r"weight_cache_bytes must be None \(keep every weight\) or an int >= 0"):
        tinydg.load(F32, weight_cache_bytes=value)


def test_the_gpu_backend_keeps_its_own_copy():
    with pytest.raises(InputError, match="weight_cache_bytes is for the numpy backend"):
        tinydg.load(F32, backend="cupy", weight_cache_bytes=0)
    with pytest.raises(InputError, match="weight_cache_bytes is for the numpy backend"):
        tinydg.move(tinydg.load(F32), ops=gpu_ops("bfloat16", emulate=True), weight_cache_bytes=10)
    assert tinydg.move(tinydg.load(F32, weight_cache_bytes=0), ops=gpu_ops("bfloat16", emulate=True)).weights


# --- the command line -----------------------------------------------------------------------------------

def run_cli(monkeypatch, *argv):
    """(exit status, stdout, the weight_cache_bytes that load got)."""
    got = []
    load = cli.load
    monkeypatch.setattr(cli, "load", lambda *a, **k: got.append(k.get("weight_cache_bytes", "absent")) or load(*a, **k))
    out = io.StringIO()
    code = cli.main(["--weights", EMBEDDED, "--seed", "0", *argv, "sort 7 2 9 2 4"], stdin=io.StringIO(),
                    stdout=out)
    return code, out.getvalue(), got


def test_the_command_line_flag_reaches_load(monkeypatch):
    code, default, got = run_cli(monkeypatch)
    assert code == 0 and got == [None]
    code, text, got = run_cli(monkeypatch, "--weight-cache-gb", "0.0005")
    assert code == 0 and got == [500_000] and text == default
    code, text, got = run_cli(monkeypatch, "--weight-cache-gb", "0")
    assert code == 0 and got == [0] and text == default


@pytest.mark.parametrize("argv, message", [
    (["--weight-cache-gb", "-1"], "--weight-cache-gb must be a number of gigabytes >= 0"),
    (["--weight-cache-gb", "nan"], "--weight-cache-gb must be a number of gigabytes >= 0"),
    (["--weight-cache-gb", "1", "--backend", "cupy"], "weight_cache_bytes is for the numpy backend"),
])
def test_command_line_refusals_are_one_line_and_status_2(capsys, monkeypatch, argv, message):
    code, _, _ = run_cli(monkeypatch, *argv)
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1


# --- benchmarks/weight_memory.py ------------------------------------------------------------------------

def test_the_memory_benchmark_runs_on_a_tiny_checkpoint(tmp_path):
    """Its checkpoint writer and its per-mode child processes, at a size that takes seconds."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        import weight_memory
    finally:
        sys.path.pop(0)
    tiny = dict(weight_memory.TEXT, vocab_size=512, hidden_size=64, intermediate_size=48, num_attention_heads=2,
                num_key_value_heads=1, head_dim=16, global_head_dim=32, num_global_key_value_heads=1, num_experts=8,
                top_k_experts=2, moe_intermediate_size=16)
    text = weight_memory.write_checkpoint(str(tmp_path), tiny)
    assert len([f for f in os.listdir(tmp_path) if f.endswith(".safetensors")]) >= 1
    model = tinydg.load(str(tmp_path))
    assert [spec.is_sliding for spec in model.text.layers] == [True] * 5 + [False]
    norm, embedding = (model.weights[f"model.decoder.{name}.weight"] for name in ("layers.0.input_layernorm", "embed_tokens"))
    assert abs(float(norm.mean()) - 1) < 0.05 and abs(float(embedding.std()) - 0.02) < 0.002
    results = weight_memory.run(str(tmp_path), [None, 20_000, 0], repeats=1)
    assert results[None]["kept"] == 4 * count_parameters(text)[0]
    assert 0 < results[20_000]["kept"] <= 20_000 and results[0]["kept"] == 0
    assert all(r["peak"] >= r["after"] > 0 and r["encode"] > 0 and r["denoise"] > 0 for r in results.values())
    assert weight_memory.table(results, 1e6).count("\n") == 4
