"""Dense matrix products on the GPU through cuBLAS, for float32 and bfloat16 weights.

    linear(x, w) = x @ w.T      x [..., K] float32, w [N, K]   (torch.nn.Linear's layout)
    matmul(x, w) = x @ w        x [M, K] float32,   w [K, N]   (the self-conditioning  probs @ E)

float32 weights: CuPy's 2-D matmul (cuBLAS sgemm, full float32). bf16 weights (uint16 bits): the
activations are rounded to bf16 and one cublasGemmEx call multiplies bf16 x bf16 on the tensor cores
with float32 accumulation and a float32 result. Never a >= 3-D bf16 `cupy.matmul` (that path
accumulates in bf16): everything here is flattened to 2-D first.
"""

import numpy as np

from . import kernels

CUDA_R_32F, CUDA_R_16BF = 0, 14  # cudaDataType
CUBLAS_COMPUTE_32F = 68
CUBLAS_GEMM_DEFAULT = -1
CUBLAS_OP_N, CUBLAS_OP_T = 0, 1
_ONE = np.ones(1, dtype=np.float32)  # alpha and beta live on the host (pointer mode host)
_ZERO = np.zeros(1, dtype=np.float32)


def gemm_bf16(x_bits, w_bits, transpose_w):
    """x_bits [M, K] bf16; w_bits [N, K] (transpose_w) or [K, N] bf16 -> [M, N] float32 = x @ w(.T).

    cuBLAS is column-major: a row-major [M, N] result is a column-major N x M matrix, so we ask for
    Y^T = op(W) X^T, with X^T read straight from the row-major x (leading dimension K)."""
    import cupy
    from cupy.cuda import cublas, device
    x_bits, w_bits = cupy.ascontiguousarray(x_bits), cupy.ascontiguousarray(w_bits)
    M, K = x_bits.shape
    N = w_bits.shape[0] if transpose_w else w_bits.shape[1]
    if (w_bits.shape[1] if transpose_w else w_bits.shape[0]) != K:
        raise ValueError(f"inner dimensions differ: x {tuple(x_bits.shape)}, w {tuple(w_bits.shape)}, "
                         f"transpose_w={transpose_w}")
    y = cupy.empty((M, N), dtype=cupy.float32)
    if M == 0 or N == 0:
        return y
    if K == 0:
        y.fill(0)
        return y
    handle = device.get_cublas_handle()
    # CuPy's handle keeps whatever stream it was last given: launch on CuPy's current stream, where the
    # kernels around this product go (and where a CUDA graph is being captured)
    cublas.setStream(handle, cupy.cuda.get_current_stream().ptr)
    mode = cublas.getPointerMode(handle)
    cublas.setPointerMode(handle, cublas.CUBLAS_POINTER_MODE_HOST)
    try:
        cublas.gemmEx(handle, CUBLAS_OP_T if transpose_w else CUBLAS_OP_N, CUBLAS_OP_N, N, M, K,
                      _ONE.ctypes.data, w_bits.data.ptr, CUDA_R_16BF, K if transpose_w else N,
                      x_bits.data.ptr, CUDA_R_16BF, K,
                      _ZERO.ctypes.data, y.data.ptr, CUDA_R_32F, N, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT)
    finally:
        cublas.setPointerMode(handle, mode)
    return y


def _product(x, w, transpose_w):
    import cupy
    lead, K = x.shape[:-1], x.shape[-1]
    x2 = cupy.ascontiguousarray(x.reshape(-1, K), dtype=cupy.float32)
    if w.dtype == cupy.float32:
        y = x2 @ (w.T if transpose_w else w)
    elif w.dtype == cupy.uint16:
        y = gemm_bf16(kernels.to_bf16(x2), w, transpose_w)
    else:
        raise TypeError(f"weights must be float32 or bf16 bits (uint16), got {w.dtype}")
    return y.reshape(*lead, y.shape[-1])


def linear(x, w):
    """x [..., K] float32; w [N, K] -> [..., N] float32 (x @ w.T)."""
    return _product(x, w, True)


def matmul(x, w):
    """x [..., K] float32; w [K, N] -> [..., N] float32 (x @ w)."""
    return _product(x, w, False)
