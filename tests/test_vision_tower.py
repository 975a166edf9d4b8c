"""The vision tower and projector (tinydg/vision.py, tinydg/vision_rope.py) against the live reference:
hypothesis draws a tiny vision config and images, the reference builds a random model (standardization
buffers drawn too: the reference initializes them to constants) and runs `get_image_features` on the
processor's padded patches; tinydg loads the saved files and runs only each image's own patches. The
soft tokens, before and after the projector, must agree within 1e-4. Deliberately wrong variants (the
axes swapped, a 1 + w norm, the text embedding scale) must fail that comparison."""

import dataclasses
import re
import tempfile

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import tinydg
import tinydg.vision as vision_module
from tinydg import norms
from tinydg.errors import InputError
from tinydg.image_processor import pad_patches, process_image
from tinydg.vision import image_features, vision_tower
from tinydg.vision_rope import axial_tables

pytestmark = pytest.mark.reference
torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
from tinydg.tools import reference as ref  # noqa: E402

BUDGET = 70  # max_soft_tokens: the smallest budget the reference processor accepts
ATOL = 1e-4


def tiny_vision(**change):
    """A tiny vision_config: patch 4, 2 x 2 pooling (the reference's pooler is broken at 1), standardized."""
    return {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
            "num_key_value_heads": 2, "head_dim": 8, "patch_size": 4, "pooling_kernel_size": 2,
            "position_embedding_size": 256, "standardize": True,
            "rope_parameters": {"rope_theta": 100.0, "rope_type": "default"}, **change}


@st.composite
def vision_configs(draw):
    heads = draw(st.sampled_from([1, 2, 4]))
    return tiny_vision(
        hidden_size=draw(st.sampled_from([8, 16, 24])),
        intermediate_size=draw(st.sampled_from([8, 32])),
        num_hidden_layers=draw(st.integers(1, 3)),
        num_attention_heads=heads,
        num_key_value_heads=draw(st.sampled_from([k for k in (1, 2, 4) if heads % k == 0])),
        head_dim=draw(st.sampled_from([4, 8, 12])),
        patch_size=draw(st.sampled_from([2, 4])),
        pooling_kernel_size=draw(st.sampled_from([2, 3])),
        standardize=draw(st.booleans()),
        rope_parameters={"rope_theta": draw(st.sampled_from([100.0, 10.0])), "rope_type": "default"},
    )


def random_image(rng, height, width):
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def processed(images, vision):
    """Each image through tinydg's processor (equal to the reference's: tests/test_image_processor.py)."""
    return [process_image(im, patch_size=vision["patch_size"], pooling_kernel_size=vision["pooling_kernel_size"],
                          max_soft_tokens=BUDGET) for im in images]


def reference_features(model, images, vision):
    """The reference's (tower, projected) soft tokens of a batch of images, on the padded layout."""
    padded = [pad_patches(p.pixel_values, p.positions, BUDGET * vision["pooling_kernel_size"] ** 2) for p in images]
    return ref.image_features(model, np.stack([a for a, _ in padded]), np.stack([b for _, b in padded]))


def ours(model, images):
    """tinydg's (tower, projected) soft tokens, image by image, concatenated as the reference returns them."""
    towers = [vision_tower(model, p.pixel_values, p.positions) for p in images]
    projected = [image_features(model, p.pixel_values, p.positions) for p in images]
    return np.concatenate(towers), np.concatenate(projected)


class Checkpoint:
    """A random reference model with this vision_config, saved and loaded back by tinydg."""

    def __init__(self, vision, seed):
        self.vision = vision
        self.reference = ref.build_model(ref.tiny_config(vision_config=vision), seed)
        ref.randomize_vision_buffers(self.reference, seed + 1)
        self._folder = tempfile.TemporaryDirectory()
        ref.save(self.reference, self._folder.name)
        self.model = tinydg.load(self._folder.name)

    def close(self):
        self._folder.cleanup()


@pytest.fixture(scope="module")
def checkpoint():
    c = Checkpoint(tiny_vision(), seed=3)
    yield c
    c.close()


@pytest.fixture(scope="module")
def landscape(checkpoint):
    """A 37 x 53 image (padded to the budget in the reference) and the reference's soft tokens of it."""
    images = processed([random_image(np.random.default_rng(0), 37, 53)], checkpoint.vision)
    return images, reference_features(checkpoint.reference, images, checkpoint.vision)


# --- parity ---------------------------------------------------------------------------------------------

@settings(max_examples=25)
@given(vision_configs(), st.lists(st.tuples(st.integers(1, 90), st.integers(1, 90)), min_size=1, max_size=2),
       st.integers(0, 2**16))
def test_soft_tokens_match_reference(vision, sizes, seed):
    rng = np.random.default_rng(seed)
    c = Checkpoint(vision, seed)
    try:
        images = processed([random_image(rng, h, w) for h, w in sizes], vision)
        tower_ref, projected_ref = reference_features(c.reference, images, vision)
        tower, projected = ours(c.model, images)
    finally:
        c.close()
    assert tower.shape == (sum(p.num_soft_tokens for p in images), vision["hidden_size"])
    assert projected.shape == (tower.shape[0], 32) and projected.dtype == np.float32  # the tiny text width
    np.testing.assert_allclose(tower, tower_ref, rtol=0, atol=ATOL * max(1.0, np.abs(tower_ref).max()))
    np.testing.assert_allclose(projected, projected_ref, rtol=0, atol=ATOL)


def test_shapes_that_fill_or_strain_the_budget(checkpoint):
    """No padding at all (14 x 20 patches fill 70 tokens of 2 x 2), a tiny image upscaled, and an
    extreme ratio (a strip one soft token high), against the reference."""
    rng = np.random.default_rng(1)
    images = processed([random_image(rng, 56, 80), random_image(rng, 3, 2), random_image(rng, 4, 300)],
                       checkpoint.vision)
    assert len(images[0].pixel_values) == BUDGET * 4
    tower_ref, projected_ref = reference_features(checkpoint.reference, images, checkpoint.vision)
    tower, projected = ours(checkpoint.model, images)
    np.testing.assert_allclose(tower, tower_ref, rtol=0, atol=ATOL * np.abs(tower_ref).max())
    np.testing.assert_allclose(projected, projected_ref, rtol=0, atol=ATOL)


def test_patch_order_does_not_matter(checkpoint, landscape):
    """Attention sees every patch and pooling goes by position, so shuffled patches give the same tokens."""
    (image,), (_, projected_ref) = landscape
    order = np.random.default_rng(2).permutation(len(image.positions))
    shuffled = image_features(checkpoint.model, image.pixel_values[order], image.positions[order])
    np.testing.assert_allclose(shuffled, projected_ref, rtol=0, atol=ATOL)


# --- the test can fail: wrong variants are caught -------------------------------------------------------

def one_plus_w_norm(x, weight=None, eps=1e-6):
    """Gemma 1-3's RMSNorm, scaled by 1 + w: wrong for Gemma 4."""
    return norms.rms_norm(x, None if weight is None else 1 + weight, eps)


def swapped_axes(positions, freqs):
    """The first half of each head turned by the row y and the second by the column x: wrong."""
    by_x, by_y = axial_tables(positions, freqs)
    return by_y, by_x


@pytest.mark.parametrize("variant", ["swapped axes", "1 + w norms", "text embedding scale", "right"])
def test_wrong_variants_fail(checkpoint, landscape, monkeypatch, variant):
    (image,), (_, projected_ref) = landscape
    model = checkpoint.model
    if variant == "swapped axes":
        monkeypatch.setattr(vision_module, "axial_tables", swapped_axes)
    if variant == "1 + w norms":
        model = dataclasses.replace(model, ops=dataclasses.replace(model.ops, rms_norm=one_plus_w_norm))
    projected = image_features(model, image.pixel_values, image.positions)
    if variant == "text embedding scale":
        projected = projected * np.float32(model.text.hidden_size ** 0.5)
    error = np.abs(projected - projected_ref).max()
    assert (error <= ATOL) == (variant == "right"), f"{variant}: max |error| {error:.3g}"


# --- the same assembly on the GPU's operations (emulated on NumPy) ---------------------------------------

@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_gpu_operations(checkpoint, landscape, dtype):
    """The tower through tinydg.gpu.ops.gpu_ops, every kernel replaced by its NumPy twin: float32 equals
    the reference; bfloat16 (weights and attention keys in bf16) stays within bf16's error."""
    from tinydg.gpu.ops import gpu_ops
    (image,), (_, projected_ref) = landscape
    model = tinydg.move(checkpoint.model, ops=gpu_ops(dtype, emulate=True))
    projected = image_features(model, image.pixel_values, image.positions)
    atol = ATOL if dtype == "float32" else 0.02 * np.abs(projected_ref).max()
    np.testing.assert_allclose(projected, projected_ref, rtol=0, atol=atol)


# --- bad input: tinydg's own errors, naming the argument ---------------------------------------------------

def test_bad_input_is_refused(checkpoint, landscape):
    (image,), _ = landscape
    model, pixels, positions = checkpoint.model, image.pixel_values, image.positions
    padded, padded_positions = pad_patches(pixels, positions, len(pixels) + 4)
    cases = [
        ((pixels[:, :-1], positions), "pixel_values must be numbers of shape"),
        ((pixels[:-1], positions[:-1]), "positive multiple of 4"),
        ((np.full_like(pixels, np.nan), positions), "NaN"),
        ((pixels, positions.astype(np.float32)), "positions must be integers"),
        ((pixels, positions[:-4]), "positions must be integers of shape"),
        ((padded, padded_positions), "without the reference's (-1, -1) padding"),
        ((pixels, positions + 256), "outside the position table [0, 256)"),
        ((pixels, np.zeros_like(positions)), "do not tile a grid of 2 x 2 cells"),
        ((pixels[:4], positions[:4] + [[0, 0], [1, 0], [0, 1], [3, 1]]), "do not tile"),
        (("not pixels", positions), "pixel_values must be"),
    ]
    for args, message in cases:
        with pytest.raises(InputError, match=re.escape(message)):
            image_features(model, *args)
    text_only = dataclasses.replace(model, config=dataclasses.replace(model.config, vision_config=None))
    with pytest.raises(InputError, match="no vision tower"):
        image_features(text_only, pixels, positions)
