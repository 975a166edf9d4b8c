"""The GPU backend: the same model on CuPy arrays, with cuBLAS and CUDA RawKernels on the hot paths.

    model = tinydg.load(path, backend="cupy")                    # float32 weights on the GPU
    model = tinydg.load(path, backend="cupy", dtype="bfloat16")  # bf16 weights, float32 accumulation
    model = tinydg.load(path, backend="cupy", dtype="float8")     # experts in float8 e4m3 (tinydg.fp8), rest bf16
    model = tinydg.move(model, "cupy")                           # a loaded model, moved

Nothing outside this package imports CuPy. Files: bf16.py (bf16 bits on the host), kernels.py and
cuda/ (the RawKernels and their launchers), blas.py (cuBLAS products), forward.py (the layer and
model pieces that use them), and DeviceRNG below (random draws made on the GPU).
"""

import numpy as np

from ..errors import InputError
from .bf16 import to_bf16_bits

DTYPES = ("float32", "bfloat16", "float8")
FLOAT8_MULTIPLE = 32  # the float8 expert kernels run on the tensor cores only: D and I multiples of 32


def available() -> bool:
    """True when CuPy imports and sees a CUDA device."""
    try:
        import cupy
        return bool(cupy.cuda.is_available())
    except Exception:  # not installed, no driver, no device
        return False


def require():
    """The cupy module, or a clear error when the GPU backend cannot run here."""
    try:
        import cupy
    except ImportError as e:
        raise InputError("the cupy backend needs CuPy: pip install 'tinydg[gpu]' (cupy-cuda13x)") from e
    if not available():
        raise InputError("the cupy backend needs a CUDA GPU, and CuPy sees none")
    return cupy


def check_float8_shapes(text):
    """The float8 mode's expert kernels need hidden_size and moe_intermediate_size multiples of 32."""
    D, I = text.hidden_size, text.moe_intermediate_size
    if D % FLOAT8_MULTIPLE or I % FLOAT8_MULTIPLE:
        raise InputError(f"dtype 'float8' on the GPU needs hidden_size and moe_intermediate_size to be multiples "
                         f"of {FLOAT8_MULTIPLE} (its expert kernels are tensor-core only); this model has "
                         f"{D} and {I}: use 'bfloat16'")


def uploader(dtype):
    """host float32 array -> device array. float32 mode: as it is. bfloat16 mode: matrices (>= 2-D)
    as bf16 bits, the rest float32. float8 mode: the experts (the only 3-D weights) quantized on the
    device to tinydg.fp8.Float8Rows, other matrices as bf16 bits, the rest float32."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    cupy = require()

    def upload(host):
        host = np.asarray(host, dtype=np.float32)
        if dtype == "float8" and host.ndim == 3:
            from .kernels import quantize_rows
            return quantize_rows(cupy.asarray(host))
        if dtype in ("bfloat16", "float8") and host.ndim >= 2:
            return cupy.asarray(to_bf16_bits(host))
        return cupy.asarray(host)
    return upload


class DeviceRNG:
    """Random draws made on the GPU (CuPy's generator), in the sampler's protocol:
    `integers(high, size)` int64 in [0, high) and `exponential(size)` float32 Exponential(1).
    Seeded and reproducible on one machine, but not torch's stream: to reproduce transformers'
    generations on the GPU, pass `rng=tinydg.rng.TorchCPUGenerator(seed)` instead (its draws are
    made on the host and copied over)."""

    def __init__(self, seed):
        cupy = require()
        self._state = cupy.random.RandomState(int(seed) % 2**63)

    def integers(self, high, size):
        import cupy
        return self._state.randint(0, high, size=size, dtype=cupy.int64)

    def exponential(self, size):
        import cupy
        return self._state.standard_exponential(size=size, dtype=cupy.float32)
