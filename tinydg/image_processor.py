"""Gemma 4's image processor: pixels -> the patches and patch positions the vision tower reads, and
the number of soft tokens the image takes in the prompt. It equals transformers'
`Gemma4ImageProcessorPil` (`models/gemma4/image_processing_pil_gemma4.py`) value for value.

    image [H, W, C] uint8 -> RGB [H, W, 3]                  (grey repeated, alpha composited on white)
      -> resized [H', W', 3] uint8                          (aspect kept, H' and W' multiples of k p)
      -> [0, 1] float32                                     (x / 255; no mean or std)
      -> patches [N, p p 3], positions [N, 2] = (x, y)      (N = H' W' / p^2, row-major)
      -> soft tokens N / k^2                                (the tower pools k x k patches into one)

Letters: H, W image height and width in pixels; p patch_size; k pooling_kernel_size; N patches.
The checkpoint's processor_config.json: p = 16, k = 3, max_soft_tokens = 280 (so at most 2520
patches of 16 x 16 pixels, and sides that are multiples of 48 pixels).

Padding: the reference pads every image to max_soft_tokens k^2 patches (pixels 0, positions
(-1, -1)) so that images of different sizes stack into one batch. `process_image` returns only the
image's own N patches: the vision tower masks the padding as keys and drops it before pooling, so
its output does not depend on it. `pad_patches` rebuilds the reference's layout.
"""

import math
import os
import sys
from typing import NamedTuple

import numpy as np

from .errors import InputError, is_int, shown
from .resample import check_image, resize_bicubic

SUPPORTED_SOFT_TOKENS = (70, 140, 280, 560, 1120)  # the budgets the reference processor accepts


class ProcessedImage(NamedTuple):
    pixel_values: np.ndarray  # [N, p * p * 3] float32 in [0, 1], each patch (row, col, RGB)
    positions: np.ndarray  # [N, 2] int64, (x, y) = (column, row) of each patch, row-major
    num_soft_tokens: int  # N / k^2: the image's <|image|> placeholders in the prompt


def process_image(image, *, patch_size=16, pooling_kernel_size=3, max_soft_tokens=280):
    """image (see `to_rgb`) -> ProcessedImage(pixel_values [N, p p 3], positions [N, 2], num_soft_tokens),
    the reference's outputs without its padding (`pad_patches` adds it)."""
    check_positive(patch_size=patch_size, pooling_kernel_size=pooling_kernel_size)
    check_budget(max_soft_tokens)
    rgb = to_rgb(image)  # [H, W, 3]
    height, width = target_size(*rgb.shape[:2], patch_size=patch_size, pooling_kernel_size=pooling_kernel_size,
                                max_soft_tokens=max_soft_tokens)
    resized = resize_bicubic(rgb, height, width)  # [H', W', 3] (a copy when the size is already right)
    patches = patchify(rescale(resized), patch_size)  # [N, p p 3]
    positions = patch_positions(height // patch_size, width // patch_size)  # [N, 2]
    return ProcessedImage(patches, positions, len(patches) // pooling_kernel_size**2)


def check_budget(max_soft_tokens):
    """An InputError unless max_soft_tokens is one of the budgets the reference processor accepts."""
    if not is_int(max_soft_tokens) or max_soft_tokens not in SUPPORTED_SOFT_TOKENS:
        raise InputError(f"max_soft_tokens must be one of {SUPPORTED_SOFT_TOKENS}, got {shown(max_soft_tokens)}")


def num_soft_tokens(height, width, *, patch_size=16, pooling_kernel_size=3, max_soft_tokens=280):
    """The soft tokens of an image of height x width pixels, without processing it: (H' / p)(W' / p) / k^2."""
    new_height, new_width = target_size(height, width, patch_size=patch_size,
                                        pooling_kernel_size=pooling_kernel_size, max_soft_tokens=max_soft_tokens)
    return (new_height // patch_size) * (new_width // patch_size) // pooling_kernel_size**2


# ---- size: the aspect-preserving rule ----------------------------------------------------------------

def target_size(height, width, *, patch_size, pooling_kernel_size, max_soft_tokens):
    """The size (H', W') an image of height x width pixels is resized to: the largest sides that are
    multiples of s = k p and keep the aspect ratio, within the budget of B = max_soft_tokens k^2
    patches, i.e. B p^2 pixels (`get_aspect_ratio_preserving_size` in the reference):

        f  = sqrt(B p^2 / (H W))                  scales the area to the budget (up or down)
        H' = floor(f H / s) s,   W' = floor(f W / s) s

    A very wide image whose H' rounds to 0 becomes one strip of tokens: H' = s,
    W' = min(floor(W / H) s, max_soft_tokens s) (a very tall one likewise). Like the reference, this
    raises when both sides round to 0 or when H' W' exceeds the budget. With the processor's budgets
    (>= 70 soft tokens) neither happens: both sides reach 0 only below about one token (at
    max_soft_tokens=1, f H / s of a 17 x 17 image is 0.999...), and H' W' <= f^2 H W = B p^2 since
    floors only shrink (float rounding would have to err by ~1/B to break it). Any budget >= 1 is
    accepted here; `process_image` insists on the supported ones.
    """
    check_positive(height=height, width=width, patch_size=patch_size, pooling_kernel_size=pooling_kernel_size,
                   max_soft_tokens=max_soft_tokens)
    side = pooling_kernel_size * patch_size
    budget = max_soft_tokens * pooling_kernel_size**2 * patch_size**2  # pixels
    factor = math.sqrt(budget / (height * width))
    new_height = math.floor(factor * height / side) * side
    new_width = math.floor(factor * width / side) * side
    if new_height == 0 and new_width == 0:
        raise InputError(f"an image of {height} x {width} pixels rounds to 0 x 0 at max_soft_tokens={max_soft_tokens}: "
                         f"both sides fall under pooling_kernel_size * patch_size = {side} pixels")
    longest = max_soft_tokens * side  # a strip one soft token high
    if new_height == 0:
        new_height, new_width = side, min(math.floor(width / height) * side, longest)
    elif new_width == 0:
        new_height, new_width = min(math.floor(height / width) * side, longest), side
    if new_height * new_width > budget:
        raise InputError(f"an image of {height} x {width} pixels resized to {new_height} x {new_width} would "
                         f"exceed max_soft_tokens={max_soft_tokens} ({budget // patch_size**2} patches)")
    return new_height, new_width


# ---- pixels: RGB, [0, 1], patches ----------------------------------------------------------------------

def to_rgb(image):
    """image -> [H, W, 3] uint8 RGB. Accepts a NumPy uint8 array [H, W] (grey), [H, W, 1] (grey),
    [H, W, 3] (RGB) or [H, W, 4] (RGBA: composited on white, round(a/255 c + (1 - a/255) 255), as
    the reference does for arrays); a PIL image (any mode Pillow converts; one with alpha or a
    transparent colour is composited on white by Pillow, as the reference does); or a file path
    (needs Pillow: see `read_image`). Arrays are always channels-last: the reference guesses the
    channel axis (a [3, W, 3] array is channels-first to it) unless told `input_data_format`."""
    if isinstance(image, (str, os.PathLike)):
        return read_image(image)
    pil = sys.modules.get("PIL.Image")  # a PIL image can only exist if Pillow is already imported
    if pil is not None and isinstance(image, pil.Image):
        return pil_to_rgb(image)
    check_image(image)
    if image.ndim == 2:
        image = image[:, :, None]  # [H, W, 1]
    channels = image.shape[2]
    if channels == 1:
        return np.repeat(image, 3, axis=2)
    if channels == 3:
        return image
    if channels == 4:
        return composite_on_white(image)
    raise InputError(f"image must have 1 (grey), 3 (RGB) or 4 (RGBA) channels, got shape {image.shape}")


def composite_on_white(rgba):
    """[H, W, 4] uint8 -> [H, W, 3] uint8: the colour over a white background, alpha a in 0..255,
    rounded half to even (float64, in the reference's order of operations)."""
    alpha = rgba[:, :, 3:] / 255  # [H, W, 1]
    return np.round(alpha * rgba[:, :, :3] + (1 - alpha) * 255).astype(np.uint8)


def pil_to_rgb(image):
    """A PIL image -> [H, W, 3] uint8, converted by Pillow; transparency composited on white."""
    from PIL import Image
    try:
        if "A" in image.getbands() or image.info.get("transparency") is not None:
            white = Image.new("RGBA", image.size, (255, 255, 255, 255))
            image = Image.alpha_composite(white, image.convert("RGBA"))
        rgb = np.array(image.convert("RGB"))
    except (ValueError, OSError) as e:
        raise InputError(f"image: Pillow cannot convert this {image.mode!r} image to RGB ({e})") from None
    if 0 in rgb.shape:
        raise InputError(f"image must not be empty, got a {image.width} x {image.height} PIL image")
    return rgb


def read_image(path):
    """An image file -> [H, W, 3] uint8, read as the reference reads a path (`load_image`): Pillow
    opens it, turns it upright by its EXIF orientation, and converts it to RGB. Alpha is dropped here,
    not composited (the reference does the same for paths)."""
    try:
        from PIL import Image, ImageOps
    except ImportError:
        raise InputError(f"reading the image file {shown(os.fspath(path))} needs Pillow "
                         "(pip install 'tinydg[image]'); or pass the pixels as a NumPy array") from None
    try:
        with Image.open(path) as opened:
            rgb = np.array(ImageOps.exif_transpose(opened).convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise InputError(f"image file {shown(os.fspath(path))} cannot be read: {e}") from None
    if 0 in rgb.shape:
        raise InputError(f"image file {shown(os.fspath(path))} holds an empty image, shape {rgb.shape}")
    return rgb


def rescale(image):
    """uint8 -> float32 x / 255, correctly rounded (the reference's float64 x * (1/255) rounds to the
    same float32 for every x; torchvision's float32 x * (1/255) is 1 ulp off for 126 of the 256)."""
    return image.astype(np.float32) / np.float32(255)


def patchify(image, patch_size):
    """[H, W, C] -> [(H/p)(W/p), p p C]: patches in row-major order, the values of each in (row in the
    patch, column in the patch, channel) order (the reference's `convert_image_to_patches`)."""
    height, width, channels = image.shape
    if height % patch_size or width % patch_size:
        raise InputError(f"patchify: a {height} x {width} image does not split into "
                         f"{patch_size} x {patch_size} patches")
    rows, cols = height // patch_size, width // patch_size
    grid = image.reshape(rows, patch_size, cols, patch_size, channels)  # [rows, p, cols, p, C]
    grid = grid.transpose(0, 2, 1, 3, 4)  # [rows, cols, p, p, C]
    return grid.reshape(rows * cols, patch_size * patch_size * channels)


def patch_positions(rows, cols):
    """[rows * cols, 2] int64: the (x, y) = (column, row) of each patch, row-major, as `patchify` orders them."""
    y, x = np.divmod(np.arange(rows * cols, dtype=np.int64), cols)
    return np.stack([x, y], axis=1)


def pad_patches(pixel_values, positions, max_patches):
    """The reference's padded layout: [N, D], [N, 2] -> [max_patches, D] (zeros after the image's
    patches), [max_patches, 2] (positions (-1, -1) there). max_patches = max_soft_tokens k^2."""
    count = len(pixel_values)
    if not is_int(max_patches) or max_patches < count:
        raise InputError(f"max_patches must be an integer >= the image's {count} patches, got {shown(max_patches)}")
    padded = np.zeros((max_patches, pixel_values.shape[1]), dtype=pixel_values.dtype)
    padded[:count] = pixel_values
    padded_positions = np.full((max_patches, 2), -1, dtype=positions.dtype)
    padded_positions[:count] = positions
    return padded, padded_positions


def check_positive(**values):
    """Raises InputError naming the first argument that is not an integer >= 1."""
    for name, value in values.items():
        if not is_int(value) or value < 1:
            raise InputError(f"{name} must be an integer >= 1, got {shown(value)}")
