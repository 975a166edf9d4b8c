"""Write the golden DiffusionGemma fixtures used by tinydg's NumPy tests.

Each fixture is a folder holding a tiny random checkpoint written by the reference
(`transformers`) and `reference.npz`, the arrays returned by `tinydg.tools.reference.record`
for a fixed batch. Everything is seeded, so reruns with the same torch/transformers
versions reproduce the same files.

    pip install -e .[reference]
    python weights/make_reference.py [--out weights/fixtures]

Besides writing, the script checks that each fixture reloads to the recorded numbers,
that the recorded numbers come from the on-disk (possibly bfloat16) weights, and that
routing and argmax decisions are not near ties, so NumPy-vs-reference comparisons at
~1e-4 are meaningful.
"""

import argparse
import json
import os
import shutil
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tinydg.tools import reference  # noqa: E402

MAX_TOTAL_BYTES = 2 * 1024 * 1024
BATCH = 2
LEFT_PAD = 3
# Smallest allowed gap between the k-th and (k+1)-th router score, and between the top two
# logits, so that float32 rounding in another implementation cannot flip a choice.
MIN_ROUTER_GAP = 1e-3
MIN_ARGMAX_GAP = 1e-3

FIXTURES = [
    {
        "name": "sliding_full_f32",
        "config": {},
        "prompt_len": 12,
        "save": {"dtype": "float32"},
        "seed": 1,
    },
    {
        "name": "bf16_sharded",
        "config": {"layer_types": ["sliding_attention", "sliding_attention", "full_attention"]},
        "prompt_len": 10,
        "save": {"dtype": "bfloat16", "max_shard_size": "50KB"},
        "seed": 2,
    },
    {
        "name": "hub_encoder_names",
        "config": {
            "num_attention_heads": 4,
            "num_key_value_heads": 4,
            "num_global_key_value_heads": 2,
            "head_dim": 8,
            "global_head_dim": 16,
        },
        "prompt_len": 5,
        "save": {"dtype": "float32", "names": "encoder", "config_form": "hub"},
        "seed": 3,
    },
    {
        "name": "long_prompt_multi",
        "config": {
            "layer_types": ["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
            "sliding_window": 4,
            "canvas_length": 6,
            "num_experts": 6,
            "top_k_experts": 3,
        },
        "prompt_len": 20,
        "save": {"dtype": "bfloat16"},
        "seed": 4,
    },
]


def make_inputs(vocab_size: int, prompt_len: int, canvas_len: int, seed: int) -> dict:
    """Random prompt (second row left-padded with pad id 0) and two random canvases."""
    rng = np.random.default_rng(seed)
    input_ids = rng.integers(0, vocab_size, size=(BATCH, prompt_len), dtype=np.int64)
    attention_mask = np.ones((BATCH, prompt_len), dtype=bool)
    attention_mask[1, :LEFT_PAD] = False
    input_ids[1, :LEFT_PAD] = 0
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "canvas": rng.integers(0, vocab_size, size=(BATCH, canvas_len), dtype=np.int64),
        "next_canvas": rng.integers(0, vocab_size, size=(BATCH, canvas_len), dtype=np.int64),
    }


def router_gap(router_calls) -> float:
    """Smallest score gap between the last chosen and the first rejected expert.

    Measured on log-probabilities, which differ from the router scores by a per-token
    constant, so the gap is in the units that rounding errors perturb.
    """
    gaps = []
    for calls in router_calls:
        for probs, weights, _ in calls:
            k = weights.shape[-1]
            top = torch.topk(probs.log(), k + 1, dim=-1).values
            gaps.append(float((top[:, k - 1] - top[:, k]).min()))
    return min(gaps)


def argmax_gap(logits: np.ndarray) -> float:
    top2 = np.sort(logits, axis=-1)[..., -2:]
    return float((top2[..., 1] - top2[..., 0]).min())


def max_diff(a: dict, b: dict) -> float:
    return max(float(np.abs(a[k].astype(np.float64) - b[k].astype(np.float64)).max()) for k in a)


def check_against_generate(model, inputs: dict) -> None:
    """Check that `record` reproduces the decoder calls of `generate` on the unpadded row.

    With one denoising step per block, generate commits argmax(logits) of the first pass,
    exactly like `record`, and its second-block canvas is captured from the call itself.
    (`generate` with eager attention cannot run the padded row: see FIXTURES.md.)
    """
    calls = []
    forward = model.forward

    def spy(**kwargs):
        out = forward(**kwargs)
        calls.append((kwargs["decoder_input_ids"].clone(), out.logits.clone()))
        return out

    canvas_len = model.config.canvas_length
    input_ids = torch.as_tensor(inputs["input_ids"][:1])
    model.forward = spy
    try:
        torch.manual_seed(0)
        model.generate(
            input_ids,
            decoder_input_ids=torch.as_tensor(inputs["canvas"][:1]),
            max_new_tokens=2 * canvas_len,
            max_denoising_steps=1,
            eos_token_id=None,
        )
    finally:
        del model.forward
    assert len(calls) == 2, f"generate ran {len(calls)} decoder passes, expected 2"
    rec = reference.record(
        model, inputs["input_ids"][:1], inputs["attention_mask"][:1], calls[0][0], calls[1][0]
    )
    assert np.array_equal(rec["logits"], calls[0][1].numpy()), "first-block logits differ from generate"
    assert np.array_equal(rec["next_logits"], calls[1][1].numpy()), "second-block logits differ from generate"


def check_bf16_weights(model) -> None:
    for name, param in model.state_dict().items():
        assert torch.equal(param, param.bfloat16().float()), f"{name} is not bfloat16-valued after reload"


def build_fixture(spec: dict, out_dir: str) -> tuple:
    folder = os.path.join(out_dir, spec["name"])
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    config = reference.tiny_config(**spec["config"])
    original = reference.build_model(config, seed=spec["seed"])
    reference.save(original, folder, **spec["save"])

    # Record from the reloaded model, so bfloat16 fixtures use the rounded weights.
    model = reference.load_float32(folder)
    text = model.config.text_config
    inputs = make_inputs(text.vocab_size, spec["prompt_len"], model.config.canvas_length, spec["seed"])
    with reference.capture_outputs(reference.routers(model)) as router_calls:
        arrays = reference.record(model, **inputs)
    np.savez_compressed(os.path.join(folder, "reference.npz"), **arrays)

    gap = router_gap(router_calls)
    check_fixture(spec, folder, original, model, inputs, arrays, gap)
    check_against_generate(model, inputs)
    return folder, gap


def check_fixture(spec, folder, original, model, inputs, arrays, gap) -> None:
    stored = dict(np.load(os.path.join(folder, "reference.npz")))
    assert stored.keys() == arrays.keys()
    again = reference.record(reference.load_float32(folder), **inputs)
    assert max_diff(stored, again) == 0.0, "reloading the fixture does not reproduce reference.npz"

    in_memory = reference.record(original, **inputs)
    if spec["save"]["dtype"] == "bfloat16":
        check_bf16_weights(model)
        assert max_diff(stored, in_memory) > 1e-3, "bf16 fixture looks recorded from float32 weights"
    else:
        assert max_diff(stored, in_memory) == 0.0, "float32 round trip changed the outputs"

    assert all(np.isfinite(v).all() for v in stored.values() if v.dtype == np.float32)
    assert stored["logits"].std() >= 1.0, "logits too flat for meaningful comparisons"
    assert gap >= MIN_ROUTER_GAP, f"router near tie ({gap:.2e})"
    for key in ("logits", "next_logits"):
        assert argmax_gap(stored[key]) >= MIN_ARGMAX_GAP, f"{key} argmax near tie"
    check_checkpoint_form(spec, folder, original)


def check_checkpoint_form(spec, folder, original) -> None:
    save = spec["save"]
    files = sorted(os.listdir(folder))
    shards = [f for f in files if f.endswith(".safetensors")]
    if save.get("max_shard_size"):
        assert len(shards) >= 3 and "model.safetensors.index.json" in files, files
    else:
        assert shards == ["model.safetensors"], files
    names = set()
    for shard in shards:
        names |= set(safetensors_names(os.path.join(folder, shard)))
    shared_under_decoder = any(
        n.startswith("model.decoder.layers.") and not n.endswith("layer_scalar") for n in names
    )
    if save.get("names") == "encoder":
        assert not shared_under_decoder and "model.encoder.language_model.embed_tokens.weight" in names
        assert "model.decoder.self_conditioning.pre_norm.weight" in names
    else:
        assert shared_under_decoder and "model.encoder.language_model.embed_tokens.weight" not in names
    with open(os.path.join(folder, "config.json")) as handle:
        text = json.load(handle)["text_config"]
    assert ("per_layer_config" in text) == (save.get("config_form", "save_pretrained") == "save_pretrained")
    reloaded = reference.load_float32(folder).config.text_config.to_dict()
    expected = original.config.text_config.to_dict()
    assert reloaded["per_layer_config"] == expected["per_layer_config"]


def safetensors_names(path: str) -> list:
    with open(path, "rb") as handle:
        header_len = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(header_len))
    return [name for name in header if name != "__metadata__"]


def folder_bytes(folder: str) -> tuple:
    files = sorted(os.listdir(folder))
    return files, sum(os.path.getsize(os.path.join(folder, f)) for f in files)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
    parser.add_argument("--out", default=default_out, help="folder to write the fixtures into")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # one thread keeps the reference's reductions in a fixed order

    total = 0
    for spec in FIXTURES:
        folder, gap = build_fixture(spec, args.out)
        files, size = folder_bytes(folder)
        total += size
        shards = sum(f.endswith(".safetensors") for f in files)
        print(f"{spec['name']}: {len(files)} files ({shards} safetensors), {size} bytes, min router gap {gap:.1e}")
    assert total < MAX_TOTAL_BYTES, f"fixtures take {total} bytes, over the {MAX_TOTAL_BYTES} budget"
    print(f"total: {total} bytes")


if __name__ == "__main__":
    main()
