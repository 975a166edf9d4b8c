"""Antialiased bicubic resampling of uint8 images, equal bit for bit to Pillow's
`Image.resize((width, height), Image.BICUBIC)`: the resize of Gemma 4's image processor (the PIL
backend of transformers' `Gemma4ImageProcessorPil`).

The math (Pillow's separable resampler, `libImaging/Resample.c`), one axis at a time, from n input
samples to m output samples:

    scale   s = n / m                         (> 1 shrinks)
    stretch f = max(s, 1)                     (shrinking widens the filter: antialiasing)
    output i reads the input around its centre c_i = (i + 1/2) * s,
        taps j = first_i .. stop_i - 1, first_i = max(int(c_i - 2f + 1/2), 0),
                                        stop_i  = min(int(c_i + 2f + 1/2), n)
        w_ij  = K((j - c_i + 1/2) / f)        K: Keys' cubic with a = -1/2, support 2
        w_ij <- w_ij / sum_j w_ij             (each row sums to 1; at the borders too)
        k_ij  = w_ij * 2^22 rounded half away from zero    (22-bit fixed point)
    y_i = clip((2^21 + sum_j k_ij x_j) >> 22, 0, 255)        (round to nearest, then to uint8)

    K(x) = 1.5|x|^3 - 2.5|x|^2 + 1            for |x| < 1
         = -0.5 (|x|^3 - 5|x|^2 + 8|x| - 4)   for 1 <= |x| < 2,   0 beyond.

Each pass rounds to uint8 before the next, so the order of the passes shows in the pixels (a level
or so, here and there). Pillow 13 runs the vertical pass first when the height shrinks by more than
twice as many pixels as the width, H - h > 2 (W - w) with h < H, and the horizontal pass first
otherwise (Pillow pull request #9549, "If height is scaled down significantly more than width,
resize vertically first"; Pillow 12 and older always start with the horizontal pass). The rule
was found by experiment against Pillow 13.0 and is tested in tests/test_image_processor.py. A side
whose size does not change gets no pass; a same-size resize is a copy.

Channels are resampled independently. Pillow's `Image.resize` does the same for the modes L, La,
RGB, RGBX, RGBa and CMYK, but premultiplies the colour by alpha for RGBA and LA (and divides after);
`resize_bicubic` does not, and the image processor resizes RGB only.

Pillow accumulates in int32, which never overflows here (sum_j |k_ij| <= 1.27 * 2^22, times 255,
is below 2^31); NumPy's int64 gives the same integers. The float64 steps (the centres, K, the
normalizing sum, taken tap by tap in Pillow's order) are Pillow's operations in Pillow's order, so
the fixed-point coefficients are the same integers.

Letters: n input samples, m output samples, T taps per output (up to 4 max(n/m, 1) + 2).
"""

import numpy as np

from .errors import InputError, is_int, shown

PRECISION_BITS = 22  # Pillow's fixed point: 32 bits - 8 for the pixel - 2 for the filter's overshoot
SUPPORT = 2.0  # the cubic's half-width, in input samples (before stretching)


def cubic(x):
    """Keys' cubic convolution kernel with a = -0.5, float64, elementwise (Horner form, as in Pillow)."""
    a = -0.5
    x = np.abs(x)
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0  # |x| < 1
    far = (((x - 5.0) * x + 8.0) * x - 4.0) * a  # 1 <= |x| < 2
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


def filter_taps(in_size, out_size):
    """The resampling matrix of one axis, in Pillow's fixed point: first [m] int64, the first input
    sample of each output, and weights [m, T] int64, k_ij for j = first_i + t (0 past each row's taps)."""
    scale = in_size / out_size
    stretch = max(scale, 1.0)
    support = SUPPORT * stretch
    centers = (np.arange(out_size) + 0.5) * scale  # [m]
    first = np.maximum((centers - support + 0.5).astype(np.int64), 0)  # int() truncates, like C
    stop = np.minimum((centers + support + 0.5).astype(np.int64), in_size)
    count = stop - first  # [m] taps per output
    t = np.arange(count.max())  # [T]
    inside = t[None, :] < count[:, None]  # [m, T]
    w = np.where(inside, cubic(((first[:, None] + t[None, :]) - centers[:, None] + 0.5) * (1.0 / stretch)), 0.0)
    total = np.zeros(out_size)
    for column in w.T:  # sum tap by tap, in Pillow's order (np.sum would pair them up)
        total = total + column
    w = w / np.where(total != 0.0, total, 1.0)[:, None]
    fixed = np.trunc(w * (1 << PRECISION_BITS) + np.where(w < 0, -0.5, 0.5))  # half away from zero
    return first, fixed.astype(np.int64)  # [m], [m, T]


def resample_axis(image, out_size, axis):
    """One pass: image uint8 with n samples along `axis` -> out_size samples along it, uint8."""
    n = image.shape[axis]
    first, weights = filter_taps(n, out_size)  # [m], [m, T]
    shape = [1] * image.ndim
    shape[axis] = out_size  # weights broadcast along the other axes
    acc = np.full(image.shape[:axis] + (out_size,) + image.shape[axis + 1:], 1 << (PRECISION_BITS - 1), np.int64)
    for t in range(weights.shape[1]):  # one tap at a time: memory stays at the output's size
        source = np.minimum(first + t, n - 1)  # [m] past a row's taps the weight is 0; any valid index does
        acc += weights[:, t].reshape(shape) * np.take(image, source, axis=axis)
    return np.clip(acc >> PRECISION_BITS, 0, 255).astype(np.uint8)


def resize_bicubic(image, height, width):
    """image [H, W] or [H, W, C] uint8 -> [height, width] or [height, width, C] uint8, equal to
    Pillow's `Image.fromarray(image).resize((width, height), Image.BICUBIC)` (see the module docstring)."""
    check_image(image)
    for name, value in (("height", height), ("width", width)):
        if not is_int(value) or value < 1:
            raise InputError(f"resize_bicubic: {name} must be an integer >= 1, got {shown(value)}")
    out = image
    for axis in pass_order(image.shape[0], image.shape[1], height, width):
        size = int(height) if axis == 0 else int(width)
        if size != out.shape[axis]:  # an unchanged side gets no pass
            out = resample_axis(out, size, axis)
    return image.copy() if out is image else out


def pass_order(in_height, in_width, height, width):
    """The axes in Pillow 13's order: (0, 1) = vertical first when the height shrinks by more than
    twice as many pixels as the width, else (1, 0) = horizontal first."""
    if height < in_height and in_height - height > 2 * (in_width - width):
        return (0, 1)
    return (1, 0)


def check_image(image):
    """Raises InputError unless image is a [H, W] or [H, W, C] uint8 array with H, W, C >= 1."""
    if not isinstance(image, np.ndarray):
        raise InputError(f"image must be a NumPy array, got {type(image).__name__}")
    if image.ndim not in (2, 3):
        raise InputError(f"image must be [height, width] or [height, width, channels], got shape {image.shape}")
    if image.dtype != np.uint8:
        raise InputError(f"image must hold uint8 pixels (0..255), got {image.dtype}")
    if 0 in image.shape:
        raise InputError(f"image must not be empty, got shape {image.shape}")
