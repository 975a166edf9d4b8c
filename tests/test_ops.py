"""The operations a model holds (tinydg.ops): on NumPy the readable functions themselves; on the GPU
a table built from explicit options, refused with a clear error when the options cannot run; one
assembly in layer.py / model.py that calls nothing but them."""

import dataclasses
import os

import numpy as np
import pytest

import tinydg
from helpers import FIXTURES, run_tinydg
from tinydg import attention, moe, norms, sampler, softcap
from tinydg.errors import InputError
from tinydg.gpu import Kernels
from tinydg.gpu.ops import gpu_ops

FOLDER = os.path.join(FIXTURES, "sliding_full_f32")


def test_the_numpy_ops_are_the_readable_functions():
    ops = tinydg.load(FOLDER).ops
    assert (ops.attend, ops.experts, ops.route, ops.rms_norm, ops.softcap, ops.propose) == (
        attention.attend, moe.experts, moe.route, norms.rms_norm, softcap.softcap, sampler.propose)
    assert repr(tinydg.load(FOLDER)) == f"Model(path={FOLDER!r}, ops=Ops(numpy, float32))"


def test_every_operation_of_a_forward_goes_through_the_ops():
    """Count the calls of each operation in one encode and one denoise: a piece of the assembly that
    bypassed model.ops would leave its operation uncalled."""
    model = tinydg.load(FOLDER)
    calls = {}

    def counted(name, fn):
        def wrapper(*args, **kwargs):
            calls[name] = calls.get(name, 0) + 1
            return fn(*args, **kwargs)
        return wrapper

    fields = ("embedding", "linear", "matmul", "rms_norm", "rope", "gelu_mul", "to_cache", "attend", "route",
              "experts", "softcap")
    counting = dataclasses.replace(model, ops=dataclasses.replace(
        model.ops, **{f: counted(f, getattr(model.ops, f)) for f in fields}))
    rec = dict(np.load(os.path.join(FOLDER, "reference.npz")))
    run_tinydg(counting, rec)  # encode; denoise without and with self-conditioning; commit; denoise
    forwards, L = 5, model.text.num_hidden_layers
    assert calls["attend"] == calls["route"] == calls["experts"] == forwards * L
    assert calls["to_cache"] == 2 * forwards * L  # keys and values
    assert calls["rope"] == 2 * forwards * L  # queries and keys
    assert calls["embedding"] == forwards and calls["softcap"] == 3  # the LM head of each denoise
    assert calls["matmul"] >= 1 and set(calls) == set(fields)  # probs @ E: the self-conditioned denoise


def test_kernel_options_are_checked():
    with pytest.raises(InputError, match="Kernels.attention"):
        Kernels(attention="flash")
    with pytest.raises(InputError, match="Kernels.experts"):
        Kernels(experts="loop")
    with pytest.raises(InputError, match="unknown kernel options"):
        Kernels.of({"atention": "gemm"})
    with pytest.raises(InputError, match="needs bf16 keys"):
        gpu_ops("float32", Kernels(attention="gemm"), emulate=True)
    with pytest.raises(InputError, match="needs dtype 'bfloat16'"):
        gpu_ops("float8", {"experts": "cublas"}, emulate=True)
    with pytest.raises(InputError, match="dtype must be one of"):
        gpu_ops("float16", emulate=True)
    assert Kernels.of(None) == Kernels() == Kernels.of({"attention": "rows"})


def test_choices_that_do_not_fit_the_backend_are_refused():
    model = tinydg.load(FOLDER)
    with pytest.raises(InputError, match="need backend='cupy'"):
        tinydg.load(FOLDER, kernels=Kernels())
    with pytest.raises(InputError, match="not both"):
        tinydg.move(model, "numpy", ops=model.ops)
    with pytest.raises(InputError, match="tinydg.ops.Ops"):
        tinydg.move(model, ops="numpy")
    with pytest.raises(InputError, match="backend must be one of"):
        tinydg.move(model, "tpu")
