"""bfloat16 as raw 16-bit patterns, in NumPy: the host twins of the `f32_to_bf16` / `bf16_to_f32` kernels.

bfloat16 is the top half of a float32 (1 sign, 8 exponent, 7 mantissa bits). The GPU backend keeps
bf16 weights as uint16 arrays of those bits, so it needs no bf16 dtype in CuPy; kernels and cuBLAS
read them as bf16. Rounding is to nearest, ties to even, like torch's `.to(torch.bfloat16)`.
"""

import numpy as np


def to_bf16_bits(x):
    """float32 array -> uint16 bf16 bits (round to nearest even; NaN stays NaN)."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = ((u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)).astype(np.uint16)
    nan = (u & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    return np.where(nan, np.uint16(0x7FC0), rounded)


def from_bf16_bits(b):
    """uint16 bf16 bits -> float32 (exact)."""
    return (np.asarray(b, dtype=np.uint16).astype(np.uint32) << np.uint32(16)).view(np.float32)
