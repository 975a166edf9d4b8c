"""Images in the prompt (tinydg/image_prompt.py, the image runs of tinydg.attention.Visibility) against the
live reference's `generate` path: the processor's placeholders expanded, the projected soft tokens in the
encoder's input embeddings, and each image's placeholders attending to each other on every layer (the
mask `generate` builds from mm_token_type_ids). Encoder hidden states, the cache and the decoder's logits
must agree within 1e-4; whole generations give the same tokens from the same seed; a chat continued from
the cache keeps the image. Deliberately wrong variants (plain causal attention, features scaled like
token embeddings) must fail the comparison. And the errors a user can cause."""

import dataclasses
import json
import os
import re
import tempfile

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import tinydg
import tinydg.image_prompt as image_prompt
import tinydg.model as model_module
from tinydg.attention import Visibility, attend, attention, visible
from tinydg.errors import InputError
from tinydg.image_processor import pad_patches, process_image
from tinydg.image_prompt import expand_images, placeholder_runs

from helpers import compare, run_tinydg

pytestmark = pytest.mark.reference
torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
from tinydg.tools import reference as ref  # noqa: E402
from tinydg.tools.reference_generate import run_generate, survives_noise  # noqa: E402

BUDGET = 70  # max_soft_tokens: the smallest budget the reference's processor accepts
BOI, IMAGE, EOI = 120, 121, 122  # the tiny model's image token ids, inside its vocabulary of 128
VISION = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
          "num_key_value_heads": 2, "head_dim": 8, "patch_size": 4, "pooling_kernel_size": 2,
          "position_embedding_size": 256, "standardize": True,
          "rope_parameters": {"rope_theta": 100.0, "rope_type": "default"}}
# a sliding window far shorter than an image's run (64 to 70 placeholders), so that the run must reach past it
TEXT = dict(canvas_length=6, sliding_window=4, layer_types=["sliding_attention", "full_attention", "sliding_attention",
                                                             "full_attention"])


@pytest.fixture(scope="module")
def checkpoint():
    """(reference model, tinydg model, the reference loaded with SDPA attention for `generate`, whose eager
    decoder mask breaks on left padding) of one random tiny checkpoint with a vision tower, image budget 70."""
    config = {**ref.tiny_config(vision_config=VISION, **TEXT), "boi_token_id": BOI, "image_token_id": IMAGE,
              "eoi_token_id": EOI}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the reference's tiny products run far slower on threads that share a busy CPU
    reference = ref.build_model(config, seed=7)
    ref.randomize_vision_buffers(reference, 8)
    with tempfile.TemporaryDirectory() as folder:
        ref.save(reference, folder)
        with open(os.path.join(folder, "processor_config.json"), "w") as f:
            json.dump({"image_processor": {"max_soft_tokens": BUDGET}}, f)
        yield reference, tinydg.load(folder), ref.load_float32(folder, attn_implementation="sdpa")
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def models(checkpoint):
    return checkpoint[:2]


def random_image(seed, height, width):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def padded_patches(images):
    """The reference's pixel_values and image_position_ids: each image padded to the budget's patches."""
    out = [pad_patches(*process_image(im, patch_size=4, pooling_kernel_size=2, max_soft_tokens=BUDGET)[:2],
                       BUDGET * 4) for im in images]
    return np.stack([p for p, _ in out]), np.stack([q for _, q in out])


def text(seed, n):
    """n random text ids, none of them an image token."""
    return list(np.random.default_rng(seed).integers(3, BOI, n))


def batch(rows):
    """Left-pad rows of ids into (ids [B, T], attention_mask [B, T])."""
    T = max(len(r) for r in rows)
    ids = np.array([[0] * (T - len(r)) + list(r) for r in rows], dtype=np.int64)
    mask = np.array([[0] * (T - len(r)) + [1] * len(r) for r in rows], dtype=np.int64)
    return ids, mask


def record_both(models, rows, images, seed=0):
    """The reference's generate-path recording and tinydg's numbers for the same prompt and images."""
    reference, model = models
    ids, mask = batch(rows)
    rng = np.random.default_rng(seed)
    canvas, next_canvas = (rng.integers(0, 128, (len(rows), 6)) for _ in range(2))
    rec = ref.record(reference, ids, mask, canvas, next_canvas, images=padded_patches(images) if images else None)
    return run_tinydg(model, rec, images=images or None), rec


SQUARE, WIDE, TALL = random_image(1, 40, 40), random_image(2, 37, 53), random_image(3, 30, 11)


# --- parity with the reference's generate path ------------------------------------------------------------------

def test_one_image(models):
    _, model = models
    prompt = expand_images(model, text(1, 5) + [IMAGE] + text(2, 4), [WIDE])
    assert placeholder_runs(np.array([prompt]), IMAGE)[0][2] - placeholder_runs(np.array([prompt]), IMAGE)[0][1] > 4
    ours, rec = record_both(models, [prompt], [WIDE])
    compare(ours, rec)


def test_two_images_in_one_row(models):
    _, model = models
    prompt = expand_images(model, text(3, 2) + [IMAGE] + text(4, 3) + [IMAGE] + text(5, 2), [SQUARE, TALL])
    ours, rec = record_both(models, [prompt], [SQUARE, TALL])
    compare(ours, rec)


def test_left_padded_batch_with_a_row_without_images(models):
    """Row 0: text only, left-padded; row 1: two images; row 2: one image. Images fill runs row by row."""
    _, model = models
    rows = [text(6, 9),
            expand_images(model, [IMAGE] + text(7, 3) + [IMAGE], [TALL, SQUARE]),
            expand_images(model, text(8, 6) + [IMAGE] + text(9, 1), [WIDE])]
    ours, rec = record_both(models, rows, [TALL, SQUARE, WIDE])
    compare(ours, rec)


def test_same_seed_same_tokens_as_the_references_generate(checkpoint):
    _, model, reference = checkpoint
    setting = dict(max_new_tokens=12, max_denoising_steps=5, entropy_bound=1.0, t_min=0.4, t_max=1.0)
    rows = [expand_images(model, text(10, 3) + [IMAGE] + text(11, 2), [WIDE]), text(12, 7)]
    ids, mask = batch(rows)
    pixels, positions = (torch.as_tensor(a) for a in padded_patches([WIDE]))
    image_kwargs = dict(pixel_values=pixels.float(), image_position_ids=positions.long(),
                        mm_token_type_ids=ref.mm_token_type_ids(reference, torch.as_tensor(ids), torch.as_tensor(mask)))

    def reference_run(seed):
        return run_generate(reference, ids, seed, attention_mask=mask, **image_kwargs, **setting)[0]

    identical = 0
    for seed in (0, 1):
        expected = reference_run(seed)
        out = tinydg.generate(model, ids, seed=seed, attention_mask=mask, images=[WIDE], **setting)
        if not np.array_equal(out.sequences, expected["sequences"]):
            assert not survives_noise(lambda: reference_run(seed)["sequences"], expected["sequences"]), \
                f"seed {seed}: tokens differ on a run that is robust to rounding"
            continue
        identical += 1
        assert out.cache.length == expected["past_key_values"].get_seq_length()
        np.testing.assert_allclose(out.tokens_per_forward, expected["tokens_per_forward"], rtol=1e-6)
    assert identical, "no run to compare: every one diverged under rounding noise"
    # the stream makes the same run, and without the image a different one
    run = tinydg.stream(model, ids, seed=0, attention_mask=mask, images=[WIDE], **setting)
    while True:
        try:
            next(run)
        except StopIteration as done:
            streamed = done.value
            break
    np.testing.assert_array_equal(streamed.sequences, tinydg.generate(model, ids, seed=0, attention_mask=mask,
                                                                      images=[WIDE], **setting).sequences)
    blind = tinydg.generate(model, ids, seed=0, attention_mask=mask, **setting)
    assert not np.array_equal(blind.sequences, streamed.sequences)


def test_a_continued_chat_keeps_the_image_in_the_cache(checkpoint):
    """Turn two reads the image only from the cache (no images passed), like the reference's second call."""
    _, model, reference = checkpoint
    setting = dict(max_new_tokens=6, max_denoising_steps=4, entropy_bound=1.0, t_min=1.0, t_max=1.5)
    ids = np.array([expand_images(model, text(13, 2) + [IMAGE] + text(14, 3), [SQUARE])])
    pixels, positions = padded_patches([SQUARE])
    first, _ = run_generate(reference, ids, 3, pixel_values=torch.as_tensor(pixels),
                            image_position_ids=torch.as_tensor(positions),
                            mm_token_type_ids=ref.mm_token_type_ids(reference, torch.as_tensor(ids),
                                                                    torch.ones(ids.shape)), **setting)
    ours = tinydg.generate(model, ids, seed=3, images=[SQUARE], **setting)
    np.testing.assert_array_equal(ours.sequences, first["sequences"])
    follow = np.concatenate([ours.sequences[:, -6:], [text(15, 3)]], axis=1)
    second, _ = run_generate(reference, follow, 4, past_key_values=first["past_key_values"], **setting)
    again = tinydg.generate(model, follow, seed=4, cache=ours.cache, **setting)
    np.testing.assert_array_equal(again.sequences, second["sequences"])
    # without the image, the same turn reads something else
    blind = tinydg.generate(model, ids, seed=3, **setting)
    assert not np.allclose(tinydg.denoise(model, follow[:, :6], blind.cache),
                           tinydg.denoise(model, follow[:, :6], ours.cache), atol=1e-3)


# --- the test can fail: wrong variants are caught ---------------------------------------------------------------

@pytest.mark.parametrize("variant", ["causal only", "features scaled by sqrt(D)", "right"])
def test_wrong_variants_fail(models, monkeypatch, variant):
    _, model = models
    if variant == "causal only":  # the reference's direct forward: the image blocks dropped
        visibilities = model_module.visibilities
        monkeypatch.setattr(model_module, "visibilities", lambda *a: visibilities(*a[:4]))
    if variant == "features scaled by sqrt(D)":
        place, scale = image_prompt.place_images, np.float32(model.text.hidden_size ** 0.5)
        monkeypatch.setattr(image_prompt, "place_images", lambda x, runs, f: place(x, runs, [g * scale for g in f]))
    prompt = expand_images(model, text(16, 3) + [IMAGE] + text(17, 2), [TALL])
    ours, rec = record_both(models, [prompt], [TALL])
    error = np.abs(ours["enc_last_hidden"] - rec["enc_last_hidden"]).max()
    assert (error <= 1e-4) == (variant == "right"), f"{variant}: max |error| {error:.3g}"


# --- tinydg's own consistency --------------------------------------------------------------------------------

def test_images_after_a_cache_see_the_same_as_in_one_call(models):
    """An image in a later call (a new turn): its run is bidirectional over its own positions, so encoding the
    history and then the turn equals the reference encoding both in one call. (The reference's own later call
    is not the oracle: it indexes the call's image blocks by absolute position, from the start of the cache,
    and so masks the wrong positions; it differs from its one-call encoding by O(1).)"""
    reference, model = models
    history, turn = text(18, 7), expand_images(model, text(19, 2) + [IMAGE] + text(20, 2), [WIDE])
    ids = np.array([history + turn])
    canvas = np.zeros((1, 6), dtype=np.int64)
    whole = ref.record(reference, ids, np.ones(ids.shape), canvas, canvas, images=padded_patches([WIDE]))
    _, cache = tinydg.encode(model, np.array([history]))
    part, _ = tinydg.encode(model, np.array([turn]), cache, images=[WIDE])
    np.testing.assert_allclose(part[0], whole["enc_last_hidden"][0, len(history):], rtol=0, atol=1e-4)


def test_gpu_assembly_emulated(models):
    """The GPU ops (every kernel its NumPy twin) take the dense masked attention for image runs."""
    from tinydg.gpu.ops import gpu_ops
    _, model = models
    prompt = np.array([expand_images(model, text(21, 2) + [IMAGE] + text(22, 2), [TALL])])
    want, _ = tinydg.encode(model, prompt, images=[TALL])
    for dtype, atol in (("float32", 1e-5), ("bfloat16", 0.1)):
        got, _ = tinydg.encode(tinydg.move(model, ops=gpu_ops(dtype, emulate=True)), prompt, images=[TALL])
        np.testing.assert_allclose(got, want, rtol=0, atol=atol * max(1.0, np.abs(want).max()))


@settings(max_examples=40)
@given(st.lists(st.lists(st.booleans(), min_size=6, max_size=6), min_size=1, max_size=3))
def test_placeholder_runs(rows):
    ids = np.where(np.array(rows), IMAGE, 5)
    runs = placeholder_runs(ids, IMAGE)
    rebuilt = np.zeros(ids.shape, dtype=bool)
    for row, first, last in runs:
        assert not rebuilt[row, first:last + 1].any() and first <= last
        rebuilt[row, first:last + 1] = True
        assert (first == 0 or not rows[row][first - 1]) and (last == 5 or not rows[row][last + 1])  # maximal
    np.testing.assert_array_equal(rebuilt, np.array(rows))
    assert runs == sorted(runs)  # row by row, left to right


@settings(max_examples=40)
@given(st.integers(1, 20), st.integers(0, 6), st.integers(0, 5), st.data())
def test_blocked_attention_with_image_runs(T, cached, window, data):
    """A long prompt attended in blocks of queries, each over the keys key_range allows, equals one pass:
    key_range widens to the whole run of any query in the block (before the window, after the query)."""
    B, K, G, d = 2, 1, 2, 4
    starts = sorted(data.draw(st.lists(st.integers(0, T - 1), max_size=3, unique=True)))
    runs = []
    for row in range(B):
        for first, nxt in zip(starts, starts[1:] + [T]):
            runs.append((row, cached + first, cached + data.draw(st.integers(first, nxt - 1))))
    rng = np.random.default_rng(T)
    q = rng.standard_normal((B, K * G, T, d)).astype(np.float32)
    past_k, past_v = (rng.standard_normal((B, K, cached, d)).astype(np.float32) for _ in range(2))
    k, v = (rng.standard_normal((B, K, T, d)).astype(np.float32) for _ in range(2))
    valid = np.ones((B, cached + T), dtype=bool)
    valid[0, :1] = False
    seen = Visibility(cached, cached, True, window, valid, tuple(runs))
    one_pass = attend(q, past_k, past_v, k, v, seen)
    np.testing.assert_allclose(attend(q, past_k, past_v, k, v, seen, block=3), one_pass, rtol=0, atol=1e-6)
    q_pos, k_pos = seen.positions()
    for row, first, last in runs:  # a run's positions see each other
        inside = (k_pos >= first) & (k_pos <= last)
        rule = visible(q_pos, k_pos, True, window, valid, tuple(runs))[row, 0][np.ix_(inside[cached:], inside)]
        assert rule.all() or not valid[row, first:last + 1].all()
    keys = np.concatenate([past_k, k], axis=2)
    assert np.allclose(one_pass, attention(q, keys, np.concatenate([past_v, v], axis=2), seen.mask))


# --- bad input: tinydg's own errors, naming the argument --------------------------------------------------------

def test_bad_input_is_refused(models):
    _, model = models
    one = np.array([expand_images(model, text(23, 2) + [IMAGE] + text(24, 2), [TALL])])
    two = np.array([expand_images(model, [IMAGE, 5, IMAGE], [TALL, TALL])])
    cases = [
        ((one, []), "images holds 0 images but input_ids hold 1 image placeholder runs"),
        ((one, [TALL, TALL]), "images holds 2 images but input_ids hold 1"),
        ((two, [TALL]), "images holds 1 images but input_ids hold 2"),
        ((one, [SQUARE]), "images[0] makes 64 soft tokens but its placeholder run (input_ids row 0, positions"),
        ((one, ["no such file.png"]), "images[0]: image file"),
        ((one, [TALL.astype(np.float32)]), "images[0]: image must hold uint8 pixels"),
        ((one, [np.zeros((0, 4, 3), np.uint8)]), "images[0]: image must not be empty"),
        ((one, TALL), "images must be a list of images"),
        ((one, "picture.png"), "images must be a list of images"),
    ]
    for (ids, images), message in cases:
        with pytest.raises(InputError, match=re.escape(message)):
            tinydg.encode(model, ids, images=images)
    with pytest.raises(InputError, match=re.escape("images holds 2 images but input_ids hold 1")):
        list(tinydg.stream(model, one, seed=0, max_new_tokens=1, images=[TALL, TALL]))
    with pytest.raises(InputError, match=re.escape("ids hold 1 image markers (image_token_id 121) but images holds 2")):
        expand_images(model, [5, IMAGE], [TALL, TALL])
    text_only = dataclasses.replace(model, config=dataclasses.replace(model.config, vision_config=None),
                                    processor_config=None)
    with pytest.raises(InputError, match="images: this checkpoint has no vision tower"):
        tinydg.encode(text_only, one, images=[TALL])
    with pytest.raises(InputError, match="images: this checkpoint has no vision tower"):
        expand_images(text_only, [IMAGE], [TALL])


def test_expand_images_counts_what_the_processor_makes(models):
    _, model = models
    ids = expand_images(model, [7, IMAGE, 8, IMAGE], [WIDE, TALL])
    t = [process_image(im, patch_size=4, pooling_kernel_size=2, max_soft_tokens=BUDGET).num_soft_tokens
         for im in (WIDE, TALL)]
    assert ids == [7, BOI] + [IMAGE] * t[0] + [EOI, 8, BOI] + [IMAGE] * t[1] + [EOI]
