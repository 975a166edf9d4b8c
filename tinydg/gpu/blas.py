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


def gemm_strided(transa, transb, m, n, k, alpha, A, a_off, lda, stride_a, B, b_off, ldb, stride_b,
                 beta, C, c_off, ldc, stride_c, batch):
    """cublasGemmStridedBatchedEx as cuBLAS defines it (column-major), bf16 A and B (uint16 bits), float32 C,
    float32 accumulation: for p < batch, C_p = alpha op(A_p) op(B_p) + beta C_p, where X_p is the matrix
    at element offset x_off + p * stride_x with leading dimension ldx. op is the transpose when
    trans is True. Offsets and strides count elements. Twin: tinydg.gpu.twins.gemm_strided."""
    import cupy
    from cupy.cuda import cublas, device
    if A.dtype != cupy.uint16 or B.dtype != cupy.uint16 or C.dtype != cupy.float32:
        raise TypeError(f"gemm_strided takes bf16 bits A, B and float32 C; got {A.dtype}, {B.dtype}, {C.dtype}")
    if not (A.flags.c_contiguous and B.flags.c_contiguous and C.flags.c_contiguous):
        raise ValueError("gemm_strided addresses its operands by offset: they must be contiguous")
    if batch == 0 or m == 0 or n == 0:
        return
    alpha_, beta_ = np.array([alpha], dtype=np.float32), np.array([beta], dtype=np.float32)
    handle = device.get_cublas_handle()
    cublas.setStream(handle, cupy.cuda.get_current_stream().ptr)
    mode = cublas.getPointerMode(handle)
    cublas.setPointerMode(handle, cublas.CUBLAS_POINTER_MODE_HOST)
    try:
        cublas.gemmStridedBatchedEx(
            handle, CUBLAS_OP_T if transa else CUBLAS_OP_N, CUBLAS_OP_T if transb else CUBLAS_OP_N, m, n, k,
            alpha_.ctypes.data, A.data.ptr + 2 * a_off, CUDA_R_16BF, lda, stride_a,
            B.data.ptr + 2 * b_off, CUDA_R_16BF, ldb, stride_b,
            beta_.ctypes.data, C.data.ptr + 4 * c_off, CUDA_R_32F, ldc, stride_c, batch,
            CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT)
    finally:
        cublas.setPointerMode(handle, mode)
