"""FP8 weight-only quantization of the experts: float8 e4m3 codes with one float32 scale per row.

The experts are 90 % of DiffusionGemma's weights, and a decoder forward must read every one of them:
stored in one byte instead of two, they halve what a forward moves. Only the storage changes;
products still accumulate in float32 (on the GPU: the codes are widened to bf16 inside the expert
kernels, exactly, and the row scale multiplies each output).

float8 e4m3fn (the OCP "E4M3" format): 1 sign bit, 4 exponent bits (bias 7), 3 mantissa bits, no
infinities; 0x7f / 0xff are NaN, the largest finite value is 448.

    normal     (e > 0):  (-1)^s * 2^(e - 7) * (1 + m / 8)
    subnormal  (e = 0):  (-1)^s * 2^-6 * (m / 8)

Per row r of a matrix W [..., rows, k] (one output feature of one expert):

    scale[r] = max_k |W[r, k]| / 448            (1 for an all-zero row)
    code[r, k] = e4m3(W[r, k] / scale[r])       round to nearest, ties to even; saturating at +-448
    W[r, k] ~= value(code[r, k]) * scale[r]

A relative rounding error of at most 2^-4 per weight, 16 times bf16's 2^-8.
"""

from typing import NamedTuple

import numpy as np

from .errors import CheckpointError

E4M3_MAX = np.float32(448.0)
SMALLEST_NORMAL = np.float32(2.0 ** -6)


class Float8Rows(NamedTuple):
    """A quantized weight: codes [..., rows, k] uint8 (e4m3fn) and scales [..., rows] float32.
    The arrays are NumPy or CuPy; shape and nbytes describe the weight they stand for."""

    codes: object
    scales: object

    @property
    def shape(self):
        return tuple(self.codes.shape)

    @property
    def ndim(self):
        return self.codes.ndim

    @property
    def nbytes(self):
        return int(self.codes.nbytes) + int(self.scales.nbytes)


def e4m3_values():
    """The 256 values of e4m3fn, indexed by code (float32; NaN at 0x7f and 0xff)."""
    code = np.arange(256)
    s, e, m = code >> 7, (code >> 3) & 15, code & 7
    magnitude = np.where(e == 0, (m / 8) * 2.0 ** -6, (1 + m / 8) * 2.0 ** (e - 7))
    values = np.where(s == 1, -magnitude, magnitude).astype(np.float32)
    values[[0x7F, 0xFF]] = np.nan
    return values


VALUES = e4m3_values()


def encode(x):
    """float32 -> e4m3fn codes (uint8): round to nearest, ties to even, |x| saturating at 448.
    The same steps as the `f32_to_e4m3_rows` kernel: subnormals on a fixed grid of 2^-9, normals by
    rounding the float32 mantissa from 23 bits to 3."""
    x = np.asarray(x, dtype=np.float32)
    sign = ((x.view(np.uint32) >> np.uint32(24)) & np.uint32(0x80)).astype(np.uint8)
    a = np.minimum(np.abs(x), E4M3_MAX)
    sub = np.rint(a * np.float32(512.0)).astype(np.uint32)              # subnormal: m = a / 2^-9 (rint: ties to even)
    u = a.view(np.uint32)
    u = u + np.uint32(0x7FFFF) + ((u >> np.uint32(20)) & np.uint32(1))  # normal: drop 20 mantissa bits, ties to even
    exponent = (u >> np.uint32(23)).astype(np.int64) - 127 + 7
    normal = (np.clip(exponent, 0, 15).astype(np.uint32) << np.uint32(3)) | ((u >> np.uint32(20)) & np.uint32(7))
    code = np.where(a < SMALLEST_NORMAL, sub, normal).astype(np.uint8)
    return code | sign


def decode(codes):
    """e4m3fn codes -> float32 (exact)."""
    return VALUES[np.asarray(codes, dtype=np.uint8)]


def row_scales(w):
    """w [..., rows, k] float32 -> scales [..., rows]: max |w| over the row / 448 (1 where the row is 0)."""
    amax = np.max(np.abs(np.asarray(w, dtype=np.float32)), axis=-1)
    if not np.all(np.isfinite(amax)):  # max carries a NaN or an infinity through
        raise CheckpointError("cannot quantize to float8: the weight holds NaN or infinite values")
    return np.where(amax > 0, amax / E4M3_MAX, np.float32(1.0)).astype(np.float32)


def quantize_rows(w):
    """w [..., rows, k] float32 -> Float8Rows(codes [..., rows, k] uint8, scales [..., rows] float32)."""
    w = np.asarray(w, dtype=np.float32)
    scales = row_scales(w)
    return Float8Rows(encode(w / scales[..., None]), scales)


def quantize_experts(host):
    """The float8 mode's rule on the host: 3-D weights (the experts' gate_up_proj [E, 2I, D] and
    down_proj [E, D, I], the only 3-D weights) quantized and dequantized back to float32, so that the
    NumPy path computes with exactly the weights the GPU's float8 mode stores; the rest unchanged."""
    host = np.asarray(host, dtype=np.float32)
    return dequantize(quantize_rows(host)) if host.ndim == 3 else host


def dequantize(q):
    """Float8Rows -> the float32 weight it stands for: value(code) * scale, row by row."""
    return decode(q.codes) * q.scales[..., None]
