"""The GPU backend: the same model on CuPy arrays, with cuBLAS and CUDA RawKernels on the hot paths.

    model = tinydg.load(path, backend="cupy")                    # float32 weights on the GPU
    model = tinydg.load(path, backend="cupy", dtype="bfloat16")  # bf16 weights, float32 accumulation
    model = tinydg.move(model, "cupy")                           # a loaded model, moved

Nothing outside this package imports CuPy. Files: bf16.py (bf16 bits on the host), kernels.py and
cuda/ (the RawKernels and their launchers), blas.py (cuBLAS products), forward.py (the layer and
model pieces that use them), and DeviceRNG below (random draws made on the GPU).
"""

import numpy as np

from ..errors import InputError
from .bf16 import to_bf16_bits

DTYPES = ("float32", "bfloat16")


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


def uploader(dtype):
    """host float32 array -> device array: matrices (>= 2-D) as bf16 bits in bfloat16 mode, the rest float32."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    cupy = require()

    def upload(host):
        host = np.asarray(host, dtype=np.float32)
        if dtype == "bfloat16" and host.ndim >= 2:
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
