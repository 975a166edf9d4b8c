"""Write the golden vision fixtures: tiny DiffusionGemma checkpoints with a vision tower, and what the
reference recorded for prompts holding images.

Two folders under weights/fixtures/ (see FIXTURES.md, "Vision fixtures"):

    vision_pool2_f32    float32, pooling 2, vocabulary 370 (the character tokenizer's) with that tokenizer and the chat
                        template beside it (a chat can load it), generation_config.json with the chat's
                        stop tokens
    vision_pool3_bf16   bfloat16 on disk, pooling 3, vocabulary 128, another text config

Each folder's reference.npz holds, per case (non-square image, tiny image upscaled, large image
downscaled, two images in a row, a left-padded batch with a row without images, an image evicted
from the sliding window), the images (uint8), the prompt, what `tinydg.tools.reference.record` records
with the images on the path `generate` takes (encoder per layer, first canvas, commit, next canvas),
and a whole `generate` with every random draw, for replay. The images go through the reference's own
processor (`Gemma4ImageProcessorPil`), so nothing here comes from tinydg except the chat prompt's ids.
The unprefixed keys are an ordinary text-only recording (as weights/make_reference.py writes), so
the folders are ordinary golden fixtures too.

    pip install -e .[reference]
    python weights/make_vision_reference.py [--out weights/fixtures]

Seeded and single-threaded. Before writing, each case is checked: router and argmax decisions are no
near ties, the recorded logits are those of generate's own first decoder call, and the generation
survives float32-sized noise (so a correct float32 implementation must give the same tokens). After
writing, the checkpoint is reloaded and must reproduce reference.npz bit for bit.
"""

import argparse
import copy
import json
import os
import shutil
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from make_bf16_error import write_bf16_error  # noqa: E402
from make_reference import (MIN_ARGMAX_GAP, MIN_ROUTER_GAP, argmax_gap, check_bf16_weights,  # noqa: E402
                            folder_bytes, make_inputs, router_gap)
from transformers import DiffusionGemmaGenerationConfig  # noqa: E402
from transformers.models.gemma4.image_processing_pil_gemma4 import Gemma4ImageProcessorPil  # noqa: E402

from tinydg.chat_format import CHAT_TEMPLATE, encode_prompt  # noqa: E402
from tinydg.tokenizer import build_tokenizer  # noqa: E402
from tinydg.tools import reference as ref  # noqa: E402
from tinydg.tools.reference_generate import run_generate, survives_noise  # noqa: E402

MAX_FOLDER_BYTES = 1536 * 1024  # each folder; the four text fixtures take about 250 KB each
BUDGET = 70  # max_soft_tokens: the smallest budget the reference's processor accepts
TEXT_PROMPT_LEN = 12  # the text-only recording (unprefixed keys)
CHAT_TEXT = "What is in the picture?"
STOPS = ("<eos>", "<turn|>", "<|tool_response>")

FIXTURES = [
    {
        "name": "vision_pool2_f32",
        "seed": 21,
        "dtype": "float32",
        "tokenizer": True,
        "vision": {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                   "num_key_value_heads": 2, "head_dim": 8, "patch_size": 4, "pooling_kernel_size": 2,
                   "position_embedding_size": 64, "standardize": True,
                   "rope_parameters": {"rope_theta": 100.0, "rope_type": "default"}},
        # a window far shorter than an image's run (up to 70 placeholders)
        "text": {"vocab_size": 370, "sliding_window": 8, "canvas_length": 6, "num_experts": 4, "top_k_experts": 2,
                 "layer_types": ["sliding_attention", "full_attention", "sliding_attention", "full_attention"]},
        "sizes": {"nonsquare": (37, 53), "upscaled": (5, 7), "downscaled": (100, 160),
                  "two_images": [(30, 11), (40, 40)], "padded_batch": (24, 45), "evicted": (33, 29)},
    },
    {
        "name": "vision_pool3_bf16",
        "seed": 22,
        "dtype": "bfloat16",
        "tokenizer": False,
        "image_ids": (120, 121, 122),  # boi, image, eoi inside the vocabulary of 128
        # grouped-query vision attention, a wider tower; patch 4 keeps images tiny (sides multiples of 12)
        "vision": {"hidden_size": 24, "intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4,
                   "num_key_value_heads": 2, "head_dim": 8, "patch_size": 4, "pooling_kernel_size": 3,
                   "position_embedding_size": 64, "standardize": True,
                   "rope_parameters": {"rope_theta": 100.0, "rope_type": "default"}},
        "text": {"sliding_window": 6, "canvas_length": 8, "num_experts": 6, "top_k_experts": 3,
                 "layer_types": ["sliding_attention", "sliding_attention", "full_attention"]},
        "sizes": {"nonsquare": (53, 37), "upscaled": (7, 4), "downscaled": (160, 100),
                  "two_images": [(20, 44), (36, 36)], "padded_batch": (41, 26), "evicted": (30, 50)},
    },
]

SETTINGS = {"max_denoising_steps": 3, "entropy_bound": 1.0, "t_min": 0.4, "t_max": 1.0}
CANVASES = {"nonsquare": 1, "upscaled": 1, "downscaled": 1, "two_images": 1, "padded_batch": 2, "evicted": 2}
CASES = tuple(CANVASES)
LEFT_PAD = 3  # padding of the image row in padded_batch


def picture(seed, height, width):
    """A seeded uint8 RGB image: half noise, half colour ramps (so resizing has structure to keep)."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    ramp = (np.add.outer(np.arange(height) * 7, np.arange(width) * 3)[:, :, None] + [0, 85, 170]) % 256
    return np.where(rng.random((height, width, 1)) < 0.5, noise, ramp.astype(np.uint8))


class Fixture:
    """One checkpoint being made: its config, the token ids it uses, and the reference's processor."""

    def __init__(self, spec):
        self.spec = spec
        self.tokenizer = build_tokenizer(chat_template=CHAT_TEMPLATE) if spec["tokenizer"] else None
        if self.tokenizer is not None:
            tid = self.tokenizer.token_to_id
            self.boi, self.image, self.eoi = (tid(t) for t in ("<|image>", "<|image|>", "<image|>"))
            specials = dict(pad_token_id=tid("<pad>"), eos_token_id=tid("<eos>"), bos_token_id=tid("<bos>"))
            # the model's vocabulary is the tokenizer's, so every id it writes can be decoded
            assert self.tokenizer.vocab_size == spec["text"]["vocab_size"]
            first_text = max(tid(t) for t in ("<pad>", "<eos>", "<bos>", "<|image>", "<|image|>", "<image|>",
                                             "<turn|>", "<|turn>", "<|tool_response>")) + 1
            self.text_ids = np.arange(first_text, self.tokenizer.vocab_size)  # characters and bytes
        else:
            self.boi, self.image, self.eoi = spec["image_ids"]
            specials = {}
            self.text_ids = np.arange(3, self.boi)
        config = ref.tiny_config(vision_config=spec["vision"], **spec["text"], **specials)
        config.update(boi_token_id=self.boi, image_token_id=self.image, eoi_token_id=self.eoi)
        self.config = config
        vision = spec["vision"]
        self.processor = Gemma4ImageProcessorPil(patch_size=vision["patch_size"],
                                                 pooling_kernel_size=vision["pooling_kernel_size"],
                                                 max_soft_tokens=BUDGET)
        self.canvas_length = config["canvas_length"]
        self.window = config["text_config"]["sliding_window"]
        self.vocab = config["text_config"]["vocab_size"]

    def patches(self, images):
        """The reference processor's (pixel_values [n, P, p p 3], image_position_ids [n, P, 2], soft tokens [n])."""
        out = self.processor(list(images), return_tensors="np", input_data_format="channels_last")
        return out["pixel_values"], out["image_position_ids"], out["num_soft_tokens_per_image"]

    def expand(self, ids, counts):
        """ids with the i-th image marker replaced by boi, image x counts[i], eoi (as the processor expands)."""
        out, counts = [], list(counts)
        for token in ids:
            out += [self.boi] + [self.image] * int(counts.pop(0)) + [self.eoi] if token == self.image else [token]
        assert not counts
        return out


def case_prompt(fx, name, rng):
    """(rows of ids with one image marker per image, the images in order) for a case."""
    sizes = fx.spec["sizes"][name]
    seed = int(rng.integers(2**31))
    images = [picture(seed + i, *s) for i, s in enumerate(sizes if isinstance(sizes, list) else [sizes])]

    def text(n):
        return [int(t) for t in rng.choice(fx.text_ids, n)]

    M = fx.image
    if name == "nonsquare":
        if fx.tokenizer is not None:  # what tinydg.chat sends for CHAT_TEXT with one image
            marker = fx.tokenizer.id_to_token(M)
            return [encode_prompt(fx.tokenizer, [{"role": "user", "content": marker + CHAT_TEXT}])], images
        return [text(4) + [M] + text(5)], images
    if name in ("upscaled", "downscaled"):
        return [text(3) + [M] + text(3)], images
    if name == "two_images":
        return [text(2) + [M] + text(3) + [M] + text(2)], images
    if name == "padded_batch":  # row 0: text only; row 1: an image, left-padded
        with_image = text(2) + [M] + text(3)
        return [None, with_image], images
    if name == "evicted":  # the image early, then more text than the sliding window holds
        return [text(1) + [M] + text(2 * fx.window + 3)], images
    raise ValueError(name)


def build_case(fx, name, rng):
    """The case's inputs: ids and mask [B, T], the images, the processor's patches, canvases [B, C]."""
    rows, images = case_prompt(fx, name, rng)
    pixels, positions, counts = fx.patches(images)
    counts = list(counts)
    expanded = []
    for row in rows:
        if row is None:
            expanded.append(None)
            continue
        n = sum(1 for t in row if t == fx.image)
        expanded.append(fx.expand(row, counts[:n]))
        counts = counts[n:]
    if name == "padded_batch":
        expanded[0] = [int(t) for t in rng.choice(fx.text_ids, len(expanded[1]) + LEFT_PAD)]
    T = max(len(r) for r in expanded)
    ids = np.array([[0] * (T - len(r)) + r for r in expanded], dtype=np.int64)
    mask = np.array([[0] * (T - len(r)) + [1] * len(r) for r in expanded], dtype=np.int64)
    B, C = ids.shape[0], fx.canvas_length
    canvas, next_canvas = (rng.integers(0, fx.vocab, (B, C)) for _ in range(2))
    return {"input_ids": ids, "attention_mask": mask, "images": images, "pixels": (pixels, positions),
            "canvas": canvas, "next_canvas": next_canvas}


def record_case(model, inputs):
    """ref.record with the images, and the smallest router score gap of every router call."""
    with ref.capture_outputs(ref.routers(model)) as router_calls:
        rec = ref.record(model, inputs["input_ids"], inputs["attention_mask"], inputs["canvas"],
                         inputs["next_canvas"], images=inputs["pixels"])
    return rec, router_gap(router_calls)


def image_kwargs(model, inputs):
    pixels, positions = inputs["pixels"]
    ids, mask = torch.as_tensor(inputs["input_ids"]), torch.as_tensor(inputs["attention_mask"])
    return {"pixel_values": torch.as_tensor(pixels), "image_position_ids": torch.as_tensor(positions),
            "mm_token_type_ids": ref.mm_token_type_ids(model, ids, mask)}


def check_first_call(gen_model, inputs, rec):
    """The recorded first-canvas logits are those of generate's own first decoder call (SDPA attention,
    which generate needs for left padding: agreement to float32 rounding, not bit for bit)."""
    calls, forward = [], gen_model.forward

    def spy(**kwargs):
        out = forward(**kwargs)
        if kwargs.get("decoder_input_ids") is not None:
            calls.append((kwargs["decoder_input_ids"].clone(), out.logits.clone()))
        return out

    gen_model.forward = spy
    try:
        torch.manual_seed(0)
        with torch.no_grad():
            gen_model.generate(torch.as_tensor(inputs["input_ids"]),
                               attention_mask=torch.as_tensor(inputs["attention_mask"]),
                               decoder_input_ids=torch.as_tensor(inputs["canvas"]),
                               max_new_tokens=gen_model.config.canvas_length, max_denoising_steps=1,
                               **image_kwargs(gen_model, inputs))
    finally:
        del gen_model.forward
    assert calls and np.array_equal(calls[0][0].numpy(), inputs["canvas"]), "generate did not start on the canvas"
    error = float(np.abs(calls[0][1].numpy() - rec["logits"]).max())
    assert error < 1e-4, f"record's logits differ from generate's first decoder call by {error:.2e}"
    return error


def generation(gen_model, inputs, seed, settings):
    result, draws = run_generate(gen_model, inputs["input_ids"], seed, attention_mask=inputs["attention_mask"],
                                 **image_kwargs(gen_model, inputs), **settings)
    return result, draws


def check_shows(fx, name, inputs, rec):
    """Refuse a case that does not show what it is for."""
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    is_image = ids == fx.image
    runs = [(b, int(np.flatnonzero(r)[0]), int(np.flatnonzero(r)[-1])) for b, r in enumerate(is_image) if r.any()]
    images = inputs["images"]
    k, p = fx.spec["vision"]["pooling_kernel_size"], fx.spec["vision"]["patch_size"]
    positions = inputs["pixels"][1]
    grid = [(positions[i, :, 1].max() + 1, positions[i, :, 0].max() + 1) for i in range(len(images))]  # patches
    assert max(max(g) for g in grid) < fx.spec["vision"]["position_embedding_size"]
    assert all(int(is_image[b].sum()) >= 1 for b, _, _ in runs)
    if name == "nonsquare":
        assert images[0].shape[0] != images[0].shape[1]
    if name == "upscaled":
        assert grid[0][0] * p > images[0].shape[0] and grid[0][1] * p > images[0].shape[1]
    if name == "downscaled":
        assert grid[0][0] * p < images[0].shape[0] and grid[0][1] * p < images[0].shape[1]
    if name == "two_images":
        assert is_image[0].sum() == sum((g[0] // k) * (g[1] // k) for g in grid) and len(images) == 2
    if name == "padded_batch":
        assert not is_image[0].any() and is_image[1].any() and (mask[1, :LEFT_PAD] == 0).all() and mask[0].all()
    if name == "evicted":
        last_image = int(np.flatnonzero(is_image[0])[-1])
        T = ids.shape[1]
        assert last_image < T - fx.window, "the image must lie outside the last prompt token's window"
        lengths = rec["cache_lengths"]
        types = fx.config["text_config"]["layer_types"]
        for length, kind in zip(lengths, types):
            assert (length < T - last_image) if kind == "sliding_attention" else length == T + fx.canvas_length


def make_case(fx, model, gen_model, name, base_seed):
    """Seeded inputs whose decisions are no near ties, recorded; then the first generation seed whose
    tokens survive rounding noise. Returns (inputs, record, seed, settings, result, draws, notes)."""
    settings = {**SETTINGS, "max_new_tokens": CANVASES[name] * fx.canvas_length}
    for attempt in range(30):
        rng = np.random.default_rng([base_seed, CASES.index(name), attempt])
        inputs = build_case(fx, name, rng)
        rec, gap = record_case(model, inputs)
        if gap >= MIN_ROUTER_GAP and min(argmax_gap(rec[k]) for k in ("logits", "next_logits")) >= MIN_ARGMAX_GAP:
            break
    else:
        raise SystemExit(f"{fx.spec['name']}/{name}: no attempt without near ties")
    check_shows(fx, name, inputs, rec)
    assert rec["logits"].std() >= 1.0, "logits too flat for meaningful comparisons"
    first_call = check_first_call(gen_model, inputs, rec)
    for seed in range(50):
        result, draws = generation(gen_model, inputs, seed, settings)
        expected = result["sequences"]
        if survives_noise(lambda: generation(gen_model, inputs, seed, settings)[0]["sequences"], expected):
            break
    else:
        raise SystemExit(f"{fx.spec['name']}/{name}: no generation seed in 0..49 survives rounding noise")
    notes = f"attempt {attempt}, router gap {gap:.1e}, generate vs record {first_call:.1e}, seed {seed}, " \
            f"{len(draws)} draws"
    return inputs, rec, seed, settings, result, draws, notes


# Self-conditioning has nothing to do with images (the text-only recording covers it): left out of the
# cases to keep the files small.
SKIPPED = ("sc_logits", "logits_sc")


def case_arrays(name, inputs, rec, seed, settings, result, draws):
    out = {f"{name}.{k}": v for k, v in rec.items() if k not in SKIPPED}
    out[f"{name}.attention_mask"] = inputs["attention_mask"].astype(bool)
    for i, image in enumerate(inputs["images"]):
        out[f"{name}.image_{i}"] = image
    out[f"{name}.seed"] = np.int64(seed)
    out[f"{name}.settings"] = np.array(json.dumps(settings, sort_keys=True))
    out[f"{name}.sequences"] = result["sequences"]
    out[f"{name}.tokens_per_forward"] = result["tokens_per_forward"]
    for i, (kind, a) in enumerate(draws):
        out[f"{name}.draw_{i:03d}_{kind}"] = a
    return out


def randomize(model, seed):
    """build_model draws every parameter (the vision norms and the position table included); the
    standardization buffers are drawn here. Checks that nothing of the tower kept a constant."""
    ref.randomize_vision_buffers(model, seed)
    tower = model.model.encoder.vision_tower
    for name, tensor in list(tower.named_parameters()) + list(tower.named_buffers()):
        if name.endswith(("norm.weight", "position_embedding_table", "std_bias", "std_scale")):
            assert float(tensor.detach().std()) > 0.1, f"vision {name} is (nearly) constant"


def write_checkpoint(fx, folder):
    original = ref.build_model(copy.deepcopy(fx.config), seed=fx.spec["seed"])
    randomize(original, fx.spec["seed"])
    ref.save(original, folder, dtype=fx.spec["dtype"])
    with open(os.path.join(folder, "processor_config.json"), "w") as f:
        json.dump({"image_processor": {"max_soft_tokens": BUDGET}, "video_processor": {"max_soft_tokens": BUDGET}},
                  f, indent=2, sort_keys=True)
        f.write("\n")
    if fx.tokenizer is not None:  # what a chat needs: the tokenizer, the template and the stop tokens
        tid = fx.tokenizer.token_to_id
        DiffusionGemmaGenerationConfig(bos_token_id=tid("<bos>"), pad_token_id=tid("<pad>"),
                                       eos_token_id=[tid(t) for t in STOPS]).save_pretrained(folder)
        fx.tokenizer.save(folder)
    return original


def text_record(fx, model):
    """The unprefixed keys: make_reference.py's text-only protocol (no image ids in the prompt), for the
    first seed without near ties."""
    for attempt in range(30):
        seed = 100 * fx.spec["seed"] + attempt
        inputs = make_inputs(fx.vocab, TEXT_PROMPT_LEN, fx.canvas_length, seed)
        rng = np.random.default_rng(seed)
        for key in ("input_ids", "canvas", "next_canvas"):  # redraw ids that are image tokens
            bad = np.isin(inputs[key], [fx.boi, fx.image, fx.eoi])
            inputs[key][bad] = rng.choice(fx.text_ids, int(bad.sum()))
        inputs["input_ids"][inputs["attention_mask"] == 0] = 0
        with ref.capture_outputs(ref.routers(model)) as router_calls:
            rec = ref.record(model, **inputs)
        if router_gap(router_calls) >= MIN_ROUTER_GAP and \
                min(argmax_gap(rec[k]) for k in ("logits", "next_logits")) >= MIN_ARGMAX_GAP:
            print(f"  text-only recording: seed {seed}")
            return inputs, rec
    raise SystemExit(f"{fx.spec['name']}: no text-only recording without near ties")


def build_fixture(spec, out_dir):
    fx = Fixture(spec)
    folder = os.path.join(out_dir, spec["name"])
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    original = write_checkpoint(fx, folder)

    # Record from the reloaded checkpoint, so the bfloat16 fixture uses the rounded weights.
    model = ref.load_float32(folder)
    gen_model = ref.load_float32(folder, attn_implementation="sdpa")  # eager generate breaks on left padding
    text_inputs, arrays = text_record(fx, model)
    cases = {}
    for name in CASES:
        inputs, rec, seed, settings, result, draws, notes = make_case(fx, model, gen_model, name, spec["seed"])
        cases[name] = (inputs, seed, settings)
        arrays.update(case_arrays(name, inputs, rec, seed, settings, result, draws))
        print(f"  {name}: T={inputs['input_ids'].shape[1]}, B={inputs['input_ids'].shape[0]}, {notes}")
    np.savez_compressed(os.path.join(folder, "reference.npz"), **arrays)
    write_bf16_error(folder, arrays)  # for the text-only recording
    check_fixture(fx, folder, original, text_inputs, cases)


def check_fixture(fx, folder, original, text_inputs, cases):
    """Reloading reproduces reference.npz bit for bit (records and generations); bf16 weights are what
    was recorded from."""
    stored = dict(np.load(os.path.join(folder, "reference.npz")))
    model = ref.load_float32(folder)
    gen_model = ref.load_float32(folder, attn_implementation="sdpa")
    again = {"": ref.record(model, **text_inputs)}
    for name, (inputs, seed, settings) in cases.items():
        again[name + "."] = ref.record(model, inputs["input_ids"], inputs["attention_mask"], inputs["canvas"],
                                       inputs["next_canvas"], images=inputs["pixels"])
        result, draws = generation(gen_model, inputs, seed, settings)
        assert np.array_equal(result["sequences"], stored[f"{name}.sequences"]), f"{name}: generation changed"
        recorded = sorted(k for k in stored if k.startswith(f"{name}.draw_"))
        assert len(recorded) == len(draws)
        for key, (kind, a) in zip(recorded, draws):
            assert key.endswith(kind) and np.array_equal(stored[key], a), f"{key} changed on reload"
    for prefix, rec in again.items():
        for key, value in rec.items():
            if prefix and key in SKIPPED:
                continue
            want = stored[prefix + key]
            assert want.dtype == value.dtype or key == "attention_mask", (prefix, key)
            assert np.array_equal(want, value.astype(want.dtype)), f"reload does not reproduce {prefix}{key}"
    assert all(np.isfinite(v).all() for v in stored.values() if v.dtype == np.float32)

    name = next(iter(cases))
    inputs = cases[name][0]
    in_memory = ref.record(original, inputs["input_ids"], inputs["attention_mask"], inputs["canvas"],
                           inputs["next_canvas"], images=inputs["pixels"])
    diff = float(np.abs(in_memory["enc_last_hidden"] - stored[f"{name}.enc_last_hidden"]).max())
    if fx.spec["dtype"] == "bfloat16":
        check_bf16_weights(model)
        assert diff > 1e-3, "bf16 fixture looks recorded from float32 weights"
    else:
        assert diff == 0.0, "float32 round trip changed the outputs"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(HERE, "fixtures"), help="folder to write the fixtures into")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # one thread keeps the reference's reductions in a fixed order
    for spec in FIXTURES:
        print(spec["name"])
        build_fixture(spec, args.out)
        files, size = folder_bytes(os.path.join(args.out, spec["name"]))
        assert size < MAX_FOLDER_BYTES, f"{spec['name']} takes {size} bytes, over {MAX_FOLDER_BYTES}"
        print(f"{spec['name']}: {len(files)} files, {size} bytes")


if __name__ == "__main__":
    main()
