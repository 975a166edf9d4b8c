"""Every CUDA launcher of the GPU backend in one namespace, with the same names as tinydg.gpu.twins
(their NumPy twins): the measured kernels (kernels.py), the cuBLAS products (blas.py) and the
kernels not yet run on a GPU (experimental/kernels.py). tinydg.gpu.ops builds the GPU operations
from this module, or from twins.py to run the same assembly on the CPU.
"""

from .blas import gemm_strided, linear, matmul  # noqa: F401
from .experimental.kernels import (apply_rope, expert_combine_rows, expert_gather_rows, experts_fp8,  # noqa: F401
                                   gelu_mul, masked_softmax, propose, quantize_rows, rms_norm, softcap)
from .kernels import attention, expert_groups, experts, router_topk, to_bf16, to_float32  # noqa: F401


def array_module():
    import cupy
    return cupy
