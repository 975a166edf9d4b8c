"""bfloat16 as raw 16-bit patterns (uint16), in NumPy: the one host codec of tinydg.

bfloat16 is the top half of a float32 (1 sign, 8 exponent, 7 mantissa bits). Checkpoints store bf16
weights as these bits, and the GPU backend keeps them so (CuPy has no bf16 dtype); kernels and cuBLAS
read them as bf16. The device twins of these two functions are the `f32_to_bf16` / `bf16_to_f32`
kernels (tinydg/gpu/cuda/convert.cu), which follow the same rules.

- Widening (bits -> float32) is exact for every pattern: shift the bits up 16 places.
- Narrowing (float32 -> bits) rounds to nearest, ties to even, like torch's `.to(torch.bfloat16)`;
  a value that rounds past the largest bf16 becomes an infinity, and infinities stay infinities.
- NaN: every NaN, whatever its sign and payload, becomes the canonical quiet NaN 0x7FC0, as torch's
  scalar conversion does (c10 `round_to_nearest_even`; its vectorized CPU loop writes 0xFFFF, also a
  NaN). Rounding the raw bits instead could carry a NaN into an infinity.
"""

import numpy as np

CANONICAL_NAN = np.uint16(0x7FC0)


def to_bits(x):
    """float32 array -> uint16 bf16 bits, same shape (round to nearest even; NaN -> 0x7FC0)."""
    u = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)  # no wrap-around when rounding
    rounded = ((u + np.uint64(0x7FFF) + ((u >> np.uint64(16)) & np.uint64(1))) >> np.uint64(16)).astype(np.uint16)
    nan = (u & np.uint64(0x7FFFFFFF)) > np.uint64(0x7F800000)
    return np.where(nan, CANONICAL_NAN, rounded)


def from_bits(bits):
    """uint16 bf16 bits -> float32, same shape (exact, NaN payloads included)."""
    bits = np.asarray(bits)
    if bits.dtype.kind != "u" or bits.dtype.itemsize != 2:
        raise TypeError(f"bf16 bits must be a uint16 array, got {bits.dtype}")
    wide = bits.astype(np.uint32)
    wide <<= np.uint32(16)  # in place: the result is the only new array (a 4-byte copy of the weight)
    return wide.view(np.float32)[()]  # [()]: a scalar for a 0-d input, the array itself otherwise


def round_to_bf16(x):
    """float32 -> the nearest bf16 value, as float32: what a bf16 product sees of x."""
    return from_bits(to_bits(x))
