"""Golden vision tests: tinydg against what the reference recorded for prompts holding images, on the tiny
checkpoints with a vision tower in weights/fixtures/vision_* (made by weights/make_vision_reference.py).
No torch needed. For each case (non-square image, tiny image upscaled, large image downscaled, two images
in a row, a left-padded batch with a row without images, an image evicted from the sliding window):
the images go through tinydg's processor and tower into tinydg.encode; the encoder's hidden states per
layer, the first canvas's logits, the commit and the next canvas must agree within 1e-4, the routers and
the argmax canvas exactly; and generate, fed the reference's recorded random draws (or its seed alone),
must give the reference's tokens. Deliberately wrong variants must fail the comparison."""

import dataclasses
import functools
import json
import os

import numpy as np
import pytest

import tinydg
import tinydg.image_prompt as image_prompt
import tinydg.model as model_module
from helpers import FIXTURES, host, run_tinydg
from tinydg import gpu
from tinydg.gpu.ops import gpu_ops
from tinydg.image_prompt import placeholder_runs
from tinydg.image_processor import target_size
from tinydg.rng import Replay, TorchCPUGenerator
from tinydg.tokenizer import load_tokenizer
from tinydg.weights import VISION

NAMES = ("vision_pool2_f32", "vision_pool3_bf16")
CASES = ("nonsquare", "upscaled", "downscaled", "two_images", "padded_batch", "evicted")
CHAT_TEXT = "What is in the picture?"  # the chat turn of vision_pool2_f32's nonsquare case
# Both sides run the same weights (bfloat16 ones read as float32 by the reference and by tinydg), in
# float32: one tolerance for both fixtures.
ATOL = 1e-4


@functools.lru_cache(maxsize=None)
def recording(name):
    with np.load(os.path.join(FIXTURES, name, "reference.npz")) as f:
        return {k: f[k] for k in f.files}


def load(name):
    return tinydg.load(os.path.join(FIXTURES, name))


def case(name, which):
    """(the case's arrays, without the prefix; its images; its draws [(kind, array)]; its settings)."""
    prefix = which + "."
    data = {k[len(prefix):]: v for k, v in recording(name).items() if k.startswith(prefix)}
    images = [data[f"image_{i}"] for i in range(sum(k.startswith("image_") for k in data))]
    draws = [(k.split("_", 2)[2], data[k]) for k in sorted(k for k in data if k.startswith("draw_"))]
    return data, images, draws, json.loads(str(data["settings"]))


def compare(ours, rec):
    valid = rec["attention_mask"].astype(bool)  # left padding attends to nothing: real tokens only
    for key in ("enc_hidden", "enc_last_hidden"):
        np.testing.assert_allclose(ours[key][..., valid, :], rec[key][..., valid, :], rtol=1e-4, atol=ATOL,
                                   err_msg=key)
    for key in ("dec_hidden", "commit_hidden"):
        np.testing.assert_allclose(ours[key], rec[key], rtol=1e-4, atol=ATOL, err_msg=key)
    np.testing.assert_array_equal(ours["router_idx"], rec["router_idx"], err_msg="router_idx")
    np.testing.assert_allclose(ours["router_w"], rec["router_w"], rtol=1e-4, atol=ATOL / 100, err_msg="router_w")
    for key in ("logits", "next_logits"):
        np.testing.assert_allclose(ours[key], rec[key], rtol=0, atol=ATOL, err_msg=key)
    np.testing.assert_array_equal(ours["logits"].argmax(-1), rec["commit_canvas"], err_msg="argmax canvas")
    np.testing.assert_array_equal(ours["cache_lengths"], rec["cache_lengths"], err_msg="cache_lengths")


def generate(model, rec, images, settings, rng):
    return tinydg.generate(model, rec["input_ids"], rng=rng, attention_mask=rec["attention_mask"], images=images,
                           **settings)


def test_fixtures_are_present():
    for name in NAMES:
        files = set(os.listdir(os.path.join(FIXTURES, name)))
        assert {"config.json", "processor_config.json", "reference.npz", "bf16_error.json"} <= files
        keys = recording(name)
        assert all(f"{which}.image_0" in keys and f"{which}.sequences" in keys for which in CASES)
        assert {"input_ids", "logits", "logits_sc", "next_logits"} <= set(keys)  # the text-only recording
    assert {"tokenizer.json", "chat_template.jinja", "generation_config.json"} <= set(
        os.listdir(os.path.join(FIXTURES, "vision_pool2_f32")))


@pytest.mark.parametrize("which", CASES)
@pytest.mark.parametrize("name", NAMES)
def test_matches_the_recorded_reference(name, which):
    rec, images, _, _ = case(name, which)
    compare(run_tinydg(load(name), rec, images), rec)


@pytest.mark.parametrize("which", CASES)
@pytest.mark.parametrize("name", NAMES)
def test_replayed_draws_give_the_reference_tokens(name, which):
    rec, images, draws, settings = case(name, which)
    replay = Replay(draws)
    out = generate(load(name), rec, images, settings, replay)
    np.testing.assert_array_equal(out.sequences, rec["sequences"])
    np.testing.assert_allclose(out.tokens_per_forward, rec["tokens_per_forward"], rtol=1e-6)
    assert replay.finished(), "tinydg drew fewer random numbers than the reference"
    assert replay.served == {kind: sum(a.size for k, a in draws if k == kind) for kind in ("integers", "exponential")}


@pytest.mark.parametrize("which", CASES)
@pytest.mark.parametrize("name", NAMES)
def test_seed_alone_reproduces_the_reference(name, which):
    rec, images, _, settings = case(name, which)
    out = generate(load(name), rec, images, settings, TorchCPUGenerator(int(rec["seed"])))
    np.testing.assert_array_equal(out.sequences, rec["sequences"])


def test_a_chat_reads_the_image_as_the_reference_did():
    """vision_pool2_f32 is a chat checkpoint: its nonsquare case is the prompt tinydg.chat writes for one
    image and CHAT_TEXT, and the chat's reply is the reference's generation from the same seed."""
    model = load("vision_pool2_f32")
    rec, images, _, settings = case("vision_pool2_f32", "nonsquare")
    tokenizer = load_tokenizer(model.path)
    config = model.config
    assert [config.boi_token_id, config.image_token_id, config.eoi_token_id] == \
        [tokenizer.token_to_id(t) for t in ("<|image>", "<|image|>", "<image|>")]
    assert list(model.generation_config.eos_token_id) == \
        [tokenizer.token_to_id(t) for t in ("<eos>", "<turn|>", "<|tool_response>")]
    reply = tinydg.chat(model, CHAT_TEXT, images=images, seed=int(rec["seed"]), **settings)
    np.testing.assert_array_equal(reply.output.sequences, rec["sequences"])


def test_the_cases_show_what_they_are_for():
    for name in NAMES:
        model = load(name)
        vision, config = model.config.vision_config, model.config
        s = vision.patch_size * vision.pooling_kernel_size
        image_id, window, C = config.image_token_id, config.text_config.sliding_window, config.canvas_length

        def size(image):
            return target_size(*image.shape[:2], patch_size=vision.patch_size,
                               pooling_kernel_size=vision.pooling_kernel_size,
                               max_soft_tokens=model.processor_config.image_processor.max_soft_tokens)

        rec, (image,), _, _ = case(name, "nonsquare")
        assert image.shape[0] != image.shape[1] and size(image)[0] != size(image)[1]
        rec, (image,), _, _ = case(name, "upscaled")
        assert all(new > old for new, old in zip(size(image), image.shape[:2]))
        rec, (image,), _, _ = case(name, "downscaled")
        assert all(new < old for new, old in zip(size(image), image.shape[:2]))
        assert all(side % s == 0 for side in size(image))
        rec, images, _, _ = case(name, "two_images")
        assert len(images) == 2 and [row for row, _, _ in placeholder_runs(rec["input_ids"], image_id)] == [0, 0]
        rec, images, _, _ = case(name, "padded_batch")
        runs = placeholder_runs(rec["input_ids"], image_id)
        mask = rec["attention_mask"]
        assert len(images) == 1 and [row for row, _, _ in runs] == [1]  # row 0 has no image
        assert mask[0].all() and not mask[1, 0] and mask[1, runs[0][1]:].all()  # the image row is left-padded
        rec, _, _, _ = case(name, "evicted")
        ((_, first, last),) = placeholder_runs(rec["input_ids"], image_id)
        T = rec["input_ids"].shape[1]
        assert first <= 2 and last < T - window  # outside every window of the prompt's last tokens
        for length, spec in zip(rec["cache_lengths"], model.text.layers):  # after the commit
            assert length == (window - 1 if spec.is_sliding else T + C)


WRONG = [("causal only", "nonsquare"), ("features scaled by sqrt(D)", "nonsquare"), ("no standardization", "nonsquare"),
         ("sliding window ignored", "evicted"), ("right", "nonsquare"), ("right", "evicted")]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("variant, which", WRONG)
def test_wrong_variants_fail(name, variant, which, monkeypatch):
    model = load(name)
    visibilities = model_module.visibilities
    if variant == "causal only":  # the reference's direct forward: the image runs' bidirectional blocks dropped
        monkeypatch.setattr(model_module, "visibilities", lambda *a: visibilities(*a[:4]))
    if variant == "sliding window ignored":  # the late tokens would still see the image on sliding layers
        monkeypatch.setattr(model_module, "visibilities", lambda *a: {
            kind: dataclasses.replace(seen, window=0) for kind, seen in visibilities(*a).items()})
    if variant == "features scaled by sqrt(D)":  # like token embeddings
        place, scale = image_prompt.place_images, np.float32(model.text.hidden_size ** 0.5)
        monkeypatch.setattr(image_prompt, "place_images", lambda x, runs, f: place(x, runs, [g * scale for g in f]))
    if variant == "no standardization":  # the tower's std_bias and std_scale left at their constants
        for key, value in (("std_bias", 0.0), ("std_scale", 1.0)):
            model.weights._arrays[VISION + key] = np.full_like(model.weights[VISION + key], value)
    rec, images, _, _ = case(name, which)
    hidden, _ = tinydg.encode(model, rec["input_ids"], attention_mask=rec["attention_mask"], images=images)
    error = np.abs(hidden - rec["enc_last_hidden"]).max()
    assert (error <= ATOL) == (variant == "right"), f"{variant}: max |error| {error:.3g}"


# --- the same functions on the GPU's operations: emulated here, CuPy where a GPU is ------------------------

def on_gpu(name, emulate):
    """The fixture in float32 on the GPU assembly: CuPy (emulate=False), or its twins on NumPy."""
    if emulate:
        return tinydg.move(load(name), ops=gpu_ops("float32", emulate=True))
    return tinydg.load(os.path.join(FIXTURES, name), backend="cupy")


GPU = [pytest.param(True, id="emulated"),
       pytest.param(False, id="cupy", marks=pytest.mark.skipif(not gpu.available(), reason="needs CuPy and a CUDA GPU"))]


@pytest.mark.parametrize("emulate", GPU)
@pytest.mark.parametrize("which", ["nonsquare", "two_images", "padded_batch", "evicted"])
@pytest.mark.parametrize("name", NAMES)
def test_the_gpu_path_matches_the_recorded_reference(name, which, emulate):
    """The vision tower (head_dim 8, no cache, bidirectional), the placeholders and the encoder's image
    runs on the GPU's operations: the reference's numbers, as on NumPy."""
    rec, images, _, _ = case(name, which)
    compare(run_tinydg(on_gpu(name, emulate), rec, images), rec)


@pytest.mark.parametrize("emulate", GPU)
@pytest.mark.parametrize("name", NAMES)
def test_the_gpu_path_replays_the_reference_tokens(name, emulate):
    rec, images, draws, settings = case(name, "padded_batch")
    out = generate(on_gpu(name, emulate), rec, images, settings, Replay(draws))
    np.testing.assert_array_equal(host(out.sequences), rec["sequences"])
