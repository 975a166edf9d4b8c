"""The GPU backend: the same model on CuPy arrays, with cuBLAS and CUDA RawKernels on the hot paths.

    model = tinydg.load(path, backend="cupy")                    # float32 weights on the GPU
    model = tinydg.load(path, backend="cupy", dtype="bfloat16")  # bf16 weights, float32 accumulation
    model = tinydg.load(path, backend="cupy", dtype="float8")    # experts in float8 e4m3 (tinydg.fp8), rest bf16
    model = tinydg.load(path, backend="cupy", kernels=Kernels(attention="gemm"))  # an experimental path
    model = tinydg.move(model, "cupy")                           # a loaded model, moved

The model is assembled by tinydg/layer.py and tinydg/model.py, as on NumPy; this package only fills
its operations (tinydg.ops) with GPU ones. Nothing outside it imports CuPy. Files: ops.py (the GPU
operations and the Kernels options), kernels.py and cuda/ (the RawKernels that have run on a GPU,
and their launchers), blas.py (cuBLAS products), launchers.py (every launcher in one namespace),
twins.py (their NumPy twins), experimental/ (paths built and tested on the CPU, not yet run on a
GPU), compile_check.py (NVRTC for CI), and DeviceRNG below (random draws made on the GPU).
"""

from ..errors import InputError
from .ops import DTYPES, Kernels, gpu_ops  # noqa: F401


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
