"""The image processor (tinydg/image_processor.py) and its resampler (tinydg/resample.py): the resize
equals Pillow's BICUBIC bit for bit, and the whole pipeline equals transformers'
`Gemma4ImageProcessorPil` exactly (pixel values, positions, soft-token counts)."""

import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinydg.errors import InputError
from tinydg.image_processor import (SUPPORTED_SOFT_TOKENS, num_soft_tokens, pad_patches, patch_positions, patchify,
                                    process_image, rescale, target_size, to_rgb)
from tinydg.resample import pass_order, resample_axis, resize_bicubic

MODES = {1: "L", 2: "La", 3: "RGB", 4: "RGBa"}  # Pillow modes that resample each channel on its own
SMALL = dict(patch_size=4, pooling_kernel_size=2)  # a tiny geometry: sides multiples of 8 px, at most 4 B patches


def pillow():
    """PIL.Image, at least Pillow 13 (the pass order of its resize changed in 13)."""
    pytest.importorskip("PIL", minversion="13")
    from PIL import Image
    return Image


def pillow_resize(image, height, width, mode=None):
    """Pillow's BICUBIC resize of a uint8 [H, W, C] array, as a [height, width, C] array."""
    Image = pillow()
    channels = image.shape[2]
    im = Image.frombytes(mode or MODES[channels], (image.shape[1], image.shape[0]), image.tobytes())
    return np.asarray(im.resize((width, height), Image.BICUBIC)).reshape(height, width, channels)


def random_image(seed, height, width, channels):
    """[height, width, channels] uint8: noise (the cubic overshoots it, so the clipping is exercised)
    mixed with a ramp (smooth runs, where the rounding is close to ties)."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
    ramp = (np.add.outer(np.arange(height) * 7, np.arange(width) * 3) % 256).astype(np.uint8)
    return np.where(rng.random((height, width, 1)) < 0.5, noise, ramp[:, :, None])


def reference_processor(max_soft_tokens, patch_size, pooling_kernel_size):
    """transformers' Gemma4ImageProcessorPil (the PIL backend: the torchvision one resizes differently)."""
    pytest.importorskip("transformers")
    pillow()
    from transformers.models.gemma4.image_processing_pil_gemma4 import Gemma4ImageProcessorPil
    return Gemma4ImageProcessorPil(patch_size=patch_size, pooling_kernel_size=pooling_kernel_size,
                                   max_soft_tokens=max_soft_tokens)


def assert_equals_reference(image, ref_image, max_soft_tokens, patch_size=16, pooling_kernel_size=3, **kwargs):
    """process_image(image) + pad_patches == the reference processor on ref_image, value for value."""
    geometry = dict(patch_size=patch_size, pooling_kernel_size=pooling_kernel_size)
    ref = reference_processor(max_soft_tokens, **geometry)(ref_image, return_tensors="np", **kwargs)
    ours = process_image(image, max_soft_tokens=max_soft_tokens, **geometry)
    pixels, positions = pad_patches(ours.pixel_values, ours.positions, max_soft_tokens * pooling_kernel_size**2)
    assert pixels.dtype == ref["pixel_values"].dtype == np.float32
    np.testing.assert_array_equal(pixels, ref["pixel_values"][0])
    np.testing.assert_array_equal(positions, ref["image_position_ids"][0])
    assert positions.dtype == ref["image_position_ids"].dtype
    assert ours.num_soft_tokens == list(ref["num_soft_tokens_per_image"])[0]
    assert num_soft_tokens(*to_rgb(image).shape[:2], max_soft_tokens=max_soft_tokens, **geometry) \
        == ours.num_soft_tokens


# ---- the resampler against Pillow ----------------------------------------------------------------------

@settings(max_examples=300)
@given(height=st.integers(1, 48), width=st.integers(1, 48), new_height=st.integers(1, 72),
       new_width=st.integers(1, 72), channels=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_resize_equals_pillow(height, width, new_height, new_width, channels, seed):
    image = random_image(seed, height, width, channels)
    np.testing.assert_array_equal(resize_bicubic(image, new_height, new_width),
                                  pillow_resize(image, new_height, new_width))


@settings(max_examples=20)
@given(height=st.integers(100, 600), width=st.integers(100, 600), scale=st.floats(0.1, 1.5),
       aspect=st.floats(0.5, 2.0), seed=st.integers(0, 2**16))
def test_resize_equals_pillow_on_larger_images(height, width, scale, aspect, seed):
    new_height, new_width = max(1, round(height * scale)), max(1, round(width * scale * aspect))
    image = random_image(seed, height, width, 3)
    np.testing.assert_array_equal(resize_bicubic(image, new_height, new_width),
                                  pillow_resize(image, new_height, new_width))


@pytest.mark.parametrize("mode", ["CMYK", "RGBX"])
def test_resize_equals_pillow_in_other_four_channel_modes(mode):
    image = random_image(0, 23, 31, 4)
    np.testing.assert_array_equal(resize_bicubic(image, 40, 9), pillow_resize(image, 40, 9, mode))


@pytest.mark.parametrize("size, new_size, first", [
    ((40, 40), (1, 30), (0, 1)),  # the height shrinks by 39 > 2 * 10 pixels: vertical first
    ((40, 40), (20, 31), (0, 1)),  # 20 > 2 * 9
    ((40, 40), (20, 30), (1, 0)),  # 20 = 2 * 10, a tie: horizontal first
    ((40, 40), (20, 29), (1, 0)),  # 20 < 2 * 11
    ((30, 50), (5, 38), (0, 1)),  # 25 > 2 * 12
    ((30, 50), (5, 37), (1, 0)),  # 25 < 2 * 13
    ((20, 30), (10, 45), (0, 1)),  # height shrinks, width grows: always vertical first
    ((20, 30), (40, 80), (1, 0)),  # height grows: always horizontal first
])
def test_pass_order_is_pillow_13s(size, new_size, first):
    """Each pass rounds to uint8, so the order shows in the pixels: for these sizes the two orders
    differ, and Pillow 13 picks vertical first iff H - h > 2 (W - w) with h < H."""
    image = random_image(1, *size, 1)
    assert pass_order(*size, *new_size) == first
    one_way = resample_axis(resample_axis(image, new_size[first[0]], first[0]), new_size[first[1]], first[1])
    other = resample_axis(resample_axis(image, new_size[first[1]], first[1]), new_size[first[0]], first[0])
    assert not np.array_equal(one_way, other)
    np.testing.assert_array_equal(resize_bicubic(image, *new_size), pillow_resize(image, *new_size))
    np.testing.assert_array_equal(one_way, pillow_resize(image, *new_size))


def test_resize_to_the_same_size_is_a_copy():
    image = random_image(2, 7, 5, 3)
    out = resize_bicubic(image, 7, 5)
    assert out is not image and np.array_equal(out, image)


def test_channels_are_resized_independently():
    image = random_image(2, 7, 5, 3)
    for c in range(3):
        np.testing.assert_array_equal(resize_bicubic(image, 3, 9)[:, :, c], resize_bicubic(image[:, :, c], 3, 9))


# ---- the size rule against the reference function ------------------------------------------------------

def sides():
    return st.one_of(st.integers(1, 64), st.integers(1, 5000), st.sampled_from([1, 2, 17, 34, 1080, 1920, 10**6]))


@pytest.mark.reference
@settings(max_examples=400)
@given(height=sides(), width=sides(), patch_size=st.integers(1, 16), pooling_kernel_size=st.integers(1, 4),
       max_soft_tokens=st.one_of(st.sampled_from(SUPPORTED_SOFT_TOKENS), st.integers(1, 5)))
def test_target_size_equals_the_reference_rule(height, width, patch_size, pooling_kernel_size, max_soft_tokens):
    pytest.importorskip("transformers")
    from transformers.models.gemma4.image_processing_pil_gemma4 import get_aspect_ratio_preserving_size
    try:
        want = get_aspect_ratio_preserving_size(height, width, patch_size, max_soft_tokens * pooling_kernel_size**2,
                                                pooling_kernel_size)
    except ValueError as e:
        with pytest.raises(InputError, match="0 x 0" if "0 x 0" in str(e) else "exceed"):
            target_size(height, width, patch_size=patch_size, pooling_kernel_size=pooling_kernel_size,
                        max_soft_tokens=max_soft_tokens)
        return
    got = target_size(height, width, patch_size=patch_size, pooling_kernel_size=pooling_kernel_size,
                      max_soft_tokens=max_soft_tokens)
    assert got == want
    side = patch_size * pooling_kernel_size
    assert got[0] % side == 0 and got[1] % side == 0
    assert got[0] * got[1] <= max_soft_tokens * side**2


@pytest.mark.parametrize("size, resized, tokens", [  # the checkpoint's geometry (p 16, k 3, 280 tokens)
    ((512, 512), (768, 768), 256), ((64, 64), (768, 768), 256), ((1, 1), (768, 768), 256),
    ((1080, 1920), (576, 1056), 264), ((768, 1024), (672, 912), 266), ((720, 896), (720, 864), 270),
    ((300, 1200), (384, 1584), 264), ((10, 4000), (48, 13440), 280), ((4000, 10), (13440, 48), 280),
])
def test_target_size_examples(size, resized, tokens):
    """Squares give 256 tokens, not 280: 280 is the budget, and the sides round down to 48 pixels."""
    assert target_size(*size, patch_size=16, pooling_kernel_size=3, max_soft_tokens=280) == resized
    assert num_soft_tokens(*size) == tokens


def test_a_budget_of_one_token_can_round_to_nothing():
    with pytest.raises(InputError, match="17 x 17 pixels rounds to 0 x 0"):
        target_size(17, 17, patch_size=16, pooling_kernel_size=3, max_soft_tokens=1)


# ---- the whole processor against Gemma4ImageProcessorPil ------------------------------------------------

@pytest.mark.reference
@settings(max_examples=30)
@given(height=st.one_of(st.integers(1, 120), st.integers(1, 600)), width=st.one_of(st.integers(1, 120),
       st.integers(1, 600)), max_soft_tokens=st.sampled_from(SUPPORTED_SOFT_TOKENS[:3]),
       kind=st.sampled_from(["rgb", "grey", "grey3d", "rgba"]), seed=st.integers(0, 2**16))
def test_process_image_equals_the_reference(height, width, max_soft_tokens, kind, seed):
    channels = {"rgb": 3, "grey": 1, "grey3d": 1, "rgba": 4}[kind]
    image = random_image(seed, height, width, channels)
    if kind == "rgba":  # opaque, transparent and half-transparent pixels
        image[:, :, 3] = np.random.default_rng(seed).choice([0, 255, 128, 1, 77], (height, width))
    ours = image[:, :, 0] if kind == "grey" else image  # the reference takes no [H, W] array: give it [H, W, 1]
    assert_equals_reference(ours, image, max_soft_tokens, **SMALL, input_data_format="channels_last")


@pytest.mark.reference
@pytest.mark.parametrize("size, max_soft_tokens", [
    ((480, 640), 280), ((1000, 1000), 280), ((50, 700), 70), ((900, 300), 140), ((3, 2000), 280),
    ((3000, 500), 280),  # tall and shrinking: Pillow 13 resizes the height first
])
def test_process_image_equals_the_reference_at_the_checkpoints_geometry(size, max_soft_tokens):
    image = random_image(sum(size), *size, 3)
    assert_equals_reference(image, image, max_soft_tokens, input_data_format="channels_last")


@pytest.mark.reference
@settings(max_examples=8)
@given(height=st.integers(1, 1200), width=st.integers(1, 1200), max_soft_tokens=st.sampled_from(SUPPORTED_SOFT_TOKENS),
       seed=st.integers(0, 2**16))
def test_process_image_equals_the_reference_at_every_budget(height, width, max_soft_tokens, seed):
    image = random_image(seed, height, width, 3)
    assert_equals_reference(image, image, max_soft_tokens, input_data_format="channels_last")


@pytest.mark.reference
@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA", "P", "P+transparency", "I;16", "CMYK"])
def test_pil_images_equal_the_reference(mode):
    Image = pillow()
    base = Image.frombytes("RGBA", (37, 29), random_image(3, 29, 37, 4).tobytes())
    if mode == "P+transparency":
        image = base.convert("RGB").convert("P")
        image.info["transparency"] = 5
    elif mode == "I;16":
        image = base.convert("L").convert("I;16")
    else:
        image = base.convert(mode)
    assert_equals_reference(image, image, 70, **SMALL)


@pytest.mark.reference
def test_a_file_path_equals_the_reference(tmp_path):
    """A path is read like the reference reads one: EXIF orientation applied, alpha dropped."""
    Image = pillow()
    path = tmp_path / "photo.png"
    image = Image.frombytes("RGBA", (40, 25), random_image(4, 25, 40, 4).tobytes())
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to show upright
    image.save(path, exif=exif)
    assert to_rgb(path).shape == (40, 25, 3)
    assert_equals_reference(str(path), str(path), 70, **SMALL)
    assert_equals_reference(path, str(path), 70, **SMALL)


def test_rgba_arrays_are_composited_on_white():
    pixels = np.array([[[10, 20, 30, 0], [10, 20, 30, 255], [0, 100, 255, 128]]], dtype=np.uint8)
    np.testing.assert_array_equal(to_rgb(pixels), [[[255, 255, 255], [10, 20, 30], [127, 177, 255]]])


def test_rescale_is_x_over_255_in_float32():
    x = np.arange(256, dtype=np.uint8)
    np.testing.assert_array_equal(rescale(x), (x.astype(np.float64) * (1 / 255)).astype(np.float32))
    np.testing.assert_array_equal(rescale(x), [np.float32(v) / np.float32(255) for v in range(256)])


@settings(max_examples=25)
@given(rows=st.integers(1, 6), cols=st.integers(1, 6), patch_size=st.integers(1, 5), seed=st.integers(0, 99))
def test_patches_and_positions_point_at_the_same_pixels(rows, cols, patch_size, seed):
    image = random_image(seed, rows * patch_size, cols * patch_size, 3)
    patches, positions = patchify(image, patch_size), patch_positions(rows, cols)
    assert patches.shape == (rows * cols, patch_size * patch_size * 3) and positions.shape == (rows * cols, 2)
    for patch, (x, y) in zip(patches, positions):
        block = image[y * patch_size:(y + 1) * patch_size, x * patch_size:(x + 1) * patch_size]  # [p, p, 3]
        np.testing.assert_array_equal(patch, block.reshape(-1))  # (row, col, RGB) order


def test_process_image_output():
    out = process_image(random_image(5, 30, 50, 3), max_soft_tokens=70, **SMALL)
    assert out.pixel_values.shape == (len(out.positions), 48) and out.pixel_values.dtype == np.float32
    assert out.positions.dtype == np.int64 and out.num_soft_tokens * 4 == len(out.positions)
    pixels, positions = pad_patches(out.pixel_values, out.positions, 280)
    assert pixels.shape == (280, 48) and (positions[len(out.positions):] == -1).all()


# ---- errors ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("image, match", [
    (np.zeros(5, np.uint8), "height, width"),
    (np.zeros((2, 3, 3, 1), np.uint8), "height, width"),
    (np.zeros((4, 4, 3), np.float32), "uint8"),
    (np.zeros((4, 4, 3), np.int64), "uint8"),
    (np.zeros((4, 4), bool), "uint8"),
    (np.zeros((0, 4, 3), np.uint8), "empty"),
    (np.zeros((4, 0), np.uint8), "empty"),
    (np.zeros((4, 4, 2), np.uint8), "1 .grey., 3 .RGB. or 4 .RGBA. channels"),
    (np.zeros((4, 4, 5), np.uint8), "channels"),
    ([[0, 1], [2, 3]], "NumPy array"),
    (None, "NumPy array"),
])
def test_bad_images_are_refused(image, match):
    with pytest.raises(InputError, match=match):
        process_image(image)


@pytest.mark.parametrize("kwargs, match", [
    (dict(max_soft_tokens=100), "max_soft_tokens must be one of"),
    (dict(max_soft_tokens=0), "max_soft_tokens"),
    (dict(max_soft_tokens="280"), "max_soft_tokens"),
    (dict(max_soft_tokens=280.0), "max_soft_tokens"),
    (dict(max_soft_tokens=True), "max_soft_tokens"),
    (dict(patch_size=0), "patch_size must be an integer >= 1"),
    (dict(patch_size=16.0), "patch_size"),
    (dict(pooling_kernel_size=-1), "pooling_kernel_size"),
])
def test_bad_settings_are_refused(kwargs, match):
    with pytest.raises(InputError, match=match):
        process_image(np.zeros((8, 8, 3), np.uint8), **kwargs)


def test_other_bad_arguments_are_refused():
    with pytest.raises(InputError, match="height must be an integer >= 1"):
        resize_bicubic(np.zeros((4, 4), np.uint8), 0, 3)
    with pytest.raises(InputError, match="width"):
        resize_bicubic(np.zeros((4, 4), np.uint8), 3, 2.5)
    with pytest.raises(InputError, match="width must be an integer >= 1"):
        target_size(10, 0, patch_size=16, pooling_kernel_size=3, max_soft_tokens=280)
    with pytest.raises(InputError, match="does not split into 4 x 4 patches"):
        patchify(np.zeros((8, 6, 3), np.uint8), 4)
    with pytest.raises(InputError, match="max_patches must be an integer >= the image's 4 patches"):
        pad_patches(np.zeros((4, 48), np.float32), np.zeros((4, 2), np.int64), 3)


def test_bad_files_are_refused(tmp_path):
    pillow()
    with pytest.raises(InputError, match="missing.png.* cannot be read"):
        process_image(str(tmp_path / "missing.png"))
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(InputError, match="notes.txt.* cannot be read"):
        process_image(tmp_path / "notes.txt")


def test_a_file_needs_pillow(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "PIL", None)  # import PIL now raises ImportError
    with pytest.raises(InputError, match="needs Pillow"):
        process_image(tmp_path / "photo.png")
    assert process_image(np.zeros((8, 8, 3), np.uint8)).num_soft_tokens == 256  # arrays need no Pillow
