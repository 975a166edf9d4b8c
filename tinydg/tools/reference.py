"""Build, save and run tiny DiffusionGemma models with the reference implementation.

The reference is `transformers.DiffusionGemmaForBlockDiffusion` on torch. This module is
only usable when the optional ``reference`` extra (torch + transformers) is installed; it is
tooling (tinydg.tools), which the runtime never imports, so the NumPy core never depends on torch.

Typical use (golden fixtures, live differential tests)::

    model = build_model(tiny_config(sliding_window=4, canvas_length=6), seed=0)
    save(model, "ckpt", dtype="bfloat16", max_shard_size="20KB")
    model = load_float32("ckpt")
    arrays = record(model, input_ids, attention_mask, canvas, next_canvas)

`record` drives the encoder and decoder exactly as the reference `generate` does for the
first block (prompt prefill, one denoising pass without and one with self-conditioning),
then commits the argmax canvas and denoises a second canvas against the grown cache.
`image_features` runs the vision tower and projector on the processor's padded patches
(`tiny_config(vision_config={...})` picks the tower; `randomize_vision_buffers` draws its
standardization buffers).
"""

import contextlib
import copy
import json
import os

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from transformers import DiffusionGemmaConfig, DiffusionGemmaForBlockDiffusion, DynamicCache

_TEXT_DEFAULTS = {
    "vocab_size": 128,
    "hidden_size": 32,
    "intermediate_size": 24,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "global_head_dim": 32,
    "num_global_key_value_heads": 1,
    "layer_types": ["sliding_attention", "full_attention"],
    "sliding_window": 8,
    "num_experts": 8,
    "top_k_experts": 2,
    "moe_intermediate_size": 16,
    "max_position_embeddings": 512,
    "use_bidirectional_attention": "vision",
    "rope_parameters": {
        "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
        "full_attention": {
            "rope_type": "proportional",
            "partial_rotary_factor": 0.25,
            "rope_theta": 1_000_000.0,
        },
    },
    "pad_token_id": 0,
    "eos_token_id": 1,
    "bos_token_id": 2,
}

# The vision tower is never run by the text tests; it only has to build and stay small.
_VISION_DEFAULTS = {
    "model_type": "gemma4_vision",
    "hidden_size": 16,
    "intermediate_size": 16,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "head_dim": 8,
    "patch_size": 2,
    "pooling_kernel_size": 1,
    "position_embedding_size": 16,
}

# The text weights that the encoder shares with the decoder, as module paths under
# `model.decoder.` / `model.encoder.language_model.`. Layer buffers are not shared.
_SHARED_TOP_LEVEL = ("embed_tokens.", "norm.")
_DECODER_PREFIX = "model.decoder."
_ENCODER_PREFIX = "model.encoder.language_model."


def tiny_config(**text_overrides) -> dict:
    """Return a DiffusionGemmaConfig dict for a tiny model.

    Keys override `text_config`, except "canvas_length", which is top level, and "vision_config",
    a dict whose keys override the tiny vision tower's. Overriding `layer_types` alone also sets
    `num_hidden_layers` to match.
    """
    overrides = dict(text_overrides)
    canvas_length = overrides.pop("canvas_length", 8)
    vision = {**copy.deepcopy(_VISION_DEFAULTS), **copy.deepcopy(overrides.pop("vision_config", {}))}
    text = copy.deepcopy(_TEXT_DEFAULTS)
    if "layer_types" in overrides and "num_hidden_layers" not in overrides:
        overrides["num_hidden_layers"] = len(overrides["layer_types"])
    text.update(copy.deepcopy(overrides))
    return {
        "text_config": text,
        "vision_config": vision,
        "canvas_length": canvas_length,
    }


def build_model(config: dict, seed: int) -> DiffusionGemmaForBlockDiffusion:
    """Instantiate a float32 eager model and fill every parameter with seeded random values."""
    torch.manual_seed(seed)
    model_config = DiffusionGemmaConfig(**copy.deepcopy(config))
    model = DiffusionGemmaForBlockDiffusion._from_config(
        model_config, dtype=torch.float32, attn_implementation="eager", experts_implementation="eager"
    )
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        _randomize_parameters(model, generator)
        _randomize_layer_scalars(model, generator)
    _check_ties(model)
    return model


def _randomize_parameters(model, generator) -> None:
    # Iterating decoder names first means each tied tensor is drawn once, under its
    # decoder name, and the encoder sees the same storage.
    seen = set()
    names = sorted(name for name, _ in model.named_parameters(remove_duplicate=False))
    names.sort(key=lambda name: not name.startswith(_DECODER_PREFIX))
    params = dict(model.named_parameters(remove_duplicate=False))
    for name in names:
        param = params[name]
        if id(param) in seen:
            continue
        seen.add(id(param))
        param.copy_(_random_value(name, param, generator))


def randomize_vision_buffers(model, seed: int) -> None:
    """Draw the vision tower's standardization buffers, which build_model leaves at the reference's
    constants (std_bias 0, std_scale 1) so that a missing or misplaced standardize would go unseen:
    std_bias ~ N(0, 1), std_scale ~ U(0.5, 1.5). A tower without standardize is left as it is."""
    tower = model.model.encoder.vision_tower
    if not tower.config.standardize:
        return
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        tower.std_bias.copy_(torch.randn(tower.std_bias.shape, generator=generator))
        tower.std_scale.copy_(0.5 + torch.rand(tower.std_scale.shape, generator=generator))


def image_features(model, pixel_values, image_position_ids) -> tuple:
    """The reference's vision path on the processor's padded output, as `get_image_features` runs it:
    pixel_values [B, P, p*p*3], image_position_ids [B, P, 2] ((-1, -1) on padding) -> (the tower's soft
    tokens [sum of t_b, Dv], the projected ones [sum of t_b, D]) as float32 NumPy arrays, images in order."""
    pixels = torch.as_tensor(np.asarray(pixel_values), dtype=torch.float32)
    positions = torch.as_tensor(np.asarray(image_position_ids), dtype=torch.long)
    with torch.no_grad():
        out = model.model.encoder.get_image_features(pixels, positions)
    return _to_numpy(out.last_hidden_state), _to_numpy(out.pooler_output)


def _random_value(name: str, param, generator):
    shape = param.shape

    def randn():
        return torch.randn(shape, generator=generator)

    if name.endswith("router.scale") or name.endswith("per_expert_scale"):
        # Positive and away from 1 so that a missing scale changes the routing weights.
        return 0.5 + torch.rand(shape, generator=generator)
    if name.endswith("router.proj.weight"):
        # Large enough that router scores are well separated and top-k is not a near tie.
        return 2.0 * randn()
    if name.endswith("embed_tokens.weight"):
        # Std 0.5 times sqrt(hidden) gives logits with a std of a few units.
        return 0.5 * randn()
    if param.ndim == 2 or name.endswith(("experts.gate_up_proj", "experts.down_proj")):
        # Fan-in scaling keeps every projection's output near unit size.
        return randn() / shape[-1] ** 0.5
    # RMSNorm scales (and the vision position table) multiply activations directly.
    return 1.0 + 0.3 * randn()


def _randomize_layer_scalars(model, generator) -> None:
    # Drawn separately for the encoder and the decoder: they are buffers, not tied.
    stacks = (model.model.decoder.layers, model.model.encoder.language_model.layers)
    for layers in stacks:
        for layer in layers:
            layer.layer_scalar.copy_(0.5 + torch.rand(layer.layer_scalar.shape, generator=generator))


def _check_ties(model) -> None:
    encoder = model.model.encoder.language_model
    decoder = model.model.decoder
    assert model.lm_head.weight is decoder.embed_tokens.weight
    assert encoder.embed_tokens.weight is decoder.embed_tokens.weight
    assert encoder.norm.weight is decoder.norm.weight
    for enc_layer, dec_layer in zip(encoder.layers, decoder.layers):
        enc_params = dict(enc_layer.named_parameters())
        for name, param in dec_layer.named_parameters():
            assert enc_params[name] is param, f"encoder does not share {name}"
        assert not torch.equal(enc_layer.layer_scalar, dec_layer.layer_scalar)


def save(model, folder, dtype="float32", max_shard_size=None, names="decoder", config_form="save_pretrained"):
    """Write a checkpoint folder (config, generation config, safetensors weights).

    dtype: on-disk dtype, "float32" or "bfloat16".
    max_shard_size: e.g. "20KB" to force several shards plus an index file.
    names: "decoder" keeps save_pretrained's names (shared weights under model.decoder.*);
        "encoder" stores the shared weights under model.encoder.language_model.* instead.
    config_form: "save_pretrained" keeps config.json as written; "hub" replaces the text
        config's per_layer_config with global_head_dim / num_global_key_value_heads.
    """
    if dtype not in ("float32", "bfloat16"):
        raise ValueError(f"unsupported on-disk dtype {dtype!r}")
    if names not in ("decoder", "encoder"):
        raise ValueError(f"unsupported names {names!r}")
    if config_form not in ("save_pretrained", "hub"):
        raise ValueError(f"unsupported config_form {config_form!r}")
    to_save = model
    if dtype == "bfloat16":
        # deepcopy keeps the ties, so the cast model still saves one copy of each shared tensor.
        to_save = copy.deepcopy(model).to(torch.bfloat16)
    kwargs = {} if max_shard_size is None else {"max_shard_size": max_shard_size}
    to_save.save_pretrained(folder, **kwargs)
    if not os.path.exists(os.path.join(folder, "generation_config.json")):
        to_save.generation_config.save_pretrained(folder)
    if names == "encoder":
        _store_shared_under_encoder(folder)
    if config_form == "hub":
        _rewrite_config_to_hub_form(folder)


def _is_shared_decoder_name(name: str) -> bool:
    if not name.startswith(_DECODER_PREFIX):
        return False
    rest = name[len(_DECODER_PREFIX):]
    if rest.startswith(_SHARED_TOP_LEVEL):
        return True
    return rest.startswith("layers.") and not rest.endswith(".layer_scalar")


def _encoder_name(name: str) -> str:
    if not _is_shared_decoder_name(name):
        return name
    return _ENCODER_PREFIX + name[len(_DECODER_PREFIX):]


def _weight_files(folder) -> list:
    return sorted(f for f in os.listdir(folder) if f.endswith(".safetensors"))


def _store_shared_under_encoder(folder) -> None:
    for filename in _weight_files(folder):
        path = os.path.join(folder, filename)
        with open(path, "rb") as handle:
            metadata = _safetensors_metadata(handle.read())
        tensors = load_file(path)
        save_file({_encoder_name(k): v for k, v in tensors.items()}, path, metadata=metadata)
    index_path = os.path.join(folder, "model.safetensors.index.json")
    if os.path.exists(index_path):
        with open(index_path) as handle:
            index = json.load(handle)
        index["weight_map"] = {_encoder_name(k): v for k, v in index["weight_map"].items()}
        with open(index_path, "w") as handle:
            json.dump(index, handle, indent=2, sort_keys=True)
            handle.write("\n")


def _safetensors_metadata(raw: bytes):
    header_len = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + header_len])
    return header.get("__metadata__")


def _rewrite_config_to_hub_form(folder) -> None:
    path = os.path.join(folder, "config.json")
    with open(path) as handle:
        config = json.load(handle)
    text = config["text_config"]
    # save_pretrained keeps only the entries that differ from the global values, with zero-padded keys
    per_layer = {int(k): v for k, v in (text.pop("per_layer_config") or {}).items()}
    full_layers = [i for i, kind in enumerate(text["layer_types"]) if kind == "full_attention"]
    resolved = [{"head_dim": text["head_dim"], "num_key_value_heads": text["num_key_value_heads"],
                 **per_layer.get(i, {})} for i in full_layers]
    if any(o != resolved[0] for o in resolved):
        raise ValueError("full-attention layers disagree; the hub form cannot express that")
    # written out even when equal to head_dim: an absent global_head_dim means 512
    text["global_head_dim"] = resolved[0]["head_dim"]
    text["num_global_key_value_heads"] = resolved[0]["num_key_value_heads"]
    with open(path, "w") as handle:
        json.dump(config, handle, indent=2, sort_keys=True)
        handle.write("\n")


def load_float32(folder, attn_implementation="eager") -> DiffusionGemmaForBlockDiffusion:
    """Load a checkpoint folder as a float32 model (eager attention unless asked), whatever its on-disk dtype."""
    model, info = DiffusionGemmaForBlockDiffusion.from_pretrained(
        folder,
        dtype=torch.float32,
        attn_implementation=attn_implementation,
        experts_implementation="eager",
        output_loading_info=True,
    )
    # A silently missing tensor would be left at its random init; refuse that.
    problems = {key: value for key, value in info.items() if value}
    if problems:
        raise ValueError(f"checkpoint in {folder} does not match the model: {problems}")
    _own_storage(model)
    return model.eval()


def _own_storage(model) -> None:
    # Float32 files are memory-mapped at arbitrary byte offsets, and BLAS picks different
    # kernels for unaligned data, which moves results by an ulp. Fresh copies make a
    # reloaded model compute bit-identically to the model that was saved.
    with torch.no_grad():
        for param in model.parameters():
            param.data = param.data.clone()
        for module in model.modules():
            for name, buffer in module._buffers.items():
                if buffer is not None:
                    module._buffers[name] = buffer.clone()


@contextlib.contextmanager
def capture_outputs(modules):
    """Collect every forward output of the given modules while the block runs.

    Yields a list per module; each call appends its (detached, cloned) output.
    """
    captured = [[] for _ in modules]
    handles = []
    for slot, module in zip(captured, modules):
        handles.append(module.register_forward_hook(_appender(slot)))
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def _appender(slot):
    def hook(module, args, output):
        if isinstance(output, tuple):
            slot.append(tuple(o.detach().clone() for o in output))
        else:
            slot.append(output.detach().clone())

    return hook


def routers(model) -> list:
    """Every router module, encoder layers first, then decoder layers."""
    encoder = model.model.encoder.language_model.layers
    decoder = model.model.decoder.layers
    return [layer.router for layer in encoder] + [layer.router for layer in decoder]


def _positions(start: int, length: int):
    # generate builds int32 position ids shared by every row of the batch.
    return torch.arange(start, start + length, dtype=torch.int32).unsqueeze(0)


def mm_token_type_ids(model, input_ids, attention_mask):
    """What the processor returns beside the ids: 1 on every real <|image|> placeholder, 0 elsewhere.
    attention_mask may also cover cached positions before input_ids (generate's 2-D mask)."""
    real = attention_mask.bool()[:, attention_mask.shape[1] - input_ids.shape[1]:]
    return ((input_ids == model.config.image_token_id) & real).long()


def _encode(model, input_ids, attention_mask, cache, position_ids, images=None):
    """Run the encoder the way generate does; returns (per-layer outputs, last hidden). images: None, or
    (pixel_values [n, P, p*p*3], image_position_ids [n, P, 2]) padded as the processor pads them: then
    the placeholders get the images' features and the mask its image blocks (mm_token_type_ids)."""
    encoder = model.model.encoder
    dummy = torch.empty((input_ids.shape[0], input_ids.shape[1], 0), dtype=model.dtype)
    pixels = {}
    if images is not None:
        pixels = {"pixel_values": torch.as_tensor(np.asarray(images[0]), dtype=torch.float32),
                  "image_position_ids": torch.as_tensor(np.asarray(images[1]), dtype=torch.long)}
    masks = encoder.create_masks_for_generate(
        config=model.config,
        inputs_embeds=dummy,
        attention_mask=attention_mask,
        past_key_values=cache,
        position_ids=position_ids,
        mm_token_type_ids=None if images is None else mm_token_type_ids(model, input_ids, attention_mask),
    )
    with capture_outputs(list(encoder.language_model.layers)) as layer_out:
        out = encoder(
            input_ids=input_ids, attention_mask=masks, past_key_values=cache, position_ids=position_ids, **pixels
        )
    return torch.stack([calls[0] for calls in layer_out]), out.last_hidden_state


def _denoise(model, canvas, cache, decoder_attention_mask, position_ids, self_conditioning_logits=None):
    """Run one decoder pass the way a denoising step does; returns (logits, layers, routers)."""
    decoder = model.model.decoder
    # generate passes `canvas.unsqueeze(-1)` here, whose integer dtype breaks the eager (float)
    # mask as soon as there is padding; a float dummy of the same [B, C] shape builds the same mask.
    dummy = torch.empty((canvas.shape[0], canvas.shape[1], 0), dtype=model.dtype)
    masks = decoder.create_diffusion_decoder_attention_mask(
        config=model.config,
        inputs_embeds=dummy,
        past_key_values=cache,
        decoder_attention_mask=decoder_attention_mask,
    )
    lengths = cache_lengths(cache)
    layers = list(decoder.layers)
    layer_routers = [layer.router for layer in layers]
    with capture_outputs(layers) as layer_out, capture_outputs(layer_routers) as router_out:
        out = model(
            decoder_input_ids=canvas,
            self_conditioning_logits=self_conditioning_logits,
            decoder_attention_mask=masks,
            past_key_values=cache,
            decoder_position_ids=position_ids,
        )
    if cache_lengths(cache) != lengths:
        raise AssertionError("the decoder modified the encoder cache")
    hidden = torch.stack([calls[0] for calls in layer_out])
    router_w = torch.stack([calls[0][1] for calls in router_out])
    router_idx = torch.stack([calls[0][2] for calls in router_out])
    return out.logits, hidden, (router_idx, router_w)


def cache_lengths(cache) -> list:
    """Number of cached positions each layer holds."""
    return [int(layer.keys.shape[-2]) if layer.is_initialized else 0 for layer in cache.layers]


def record(model, input_ids, attention_mask, canvas, next_canvas, sc_temperature=0.8, position_offset=0,
           images=None) -> dict:
    """Run prefill, two denoising passes, a commit and a second-block pass; return numpy arrays.

    input_ids/attention_mask: [B, T] prompt (left padding allowed); canvas/next_canvas: [B, C].
    Keys and shapes are listed in weights/FIXTURES.md. position_offset moves every position id (RoPE
    only: the reference's masks come from its cache, which holds just this call's tokens), as if that
    many padding positions came first. images: (pixel_values, image_position_ids) of the prompt's
    images, padded as the processor pads them (see `_encode`), or None.
    """
    input_ids, canvas, next_canvas = (_long_tensor(a) for a in (input_ids, canvas, next_canvas))
    attention_mask = torch.as_tensor(np.asarray(attention_mask)).bool()
    batch, prompt_len = input_ids.shape
    canvas_len = model.config.canvas_length
    if canvas.shape != (batch, canvas_len) or next_canvas.shape != (batch, canvas_len):
        raise ValueError(f"canvases must have shape {(batch, canvas_len)}")

    # generate pads both 2D masks with True for each canvas and continues the positions.
    cache = DynamicCache(config=model.config.get_text_config(decoder=True))
    prompt_positions = _positions(position_offset, prompt_len)
    canvas_positions = _positions(position_offset + prompt_len, canvas_len)
    next_positions = _positions(position_offset + prompt_len + canvas_len, canvas_len)
    decoder_mask = _pad_true(attention_mask, canvas_len)
    arrays = {"input_ids": input_ids, "attention_mask": attention_mask, "canvas": canvas}
    with torch.no_grad():
        arrays["enc_hidden"], arrays["enc_last_hidden"] = _encode(
            model, input_ids, attention_mask, cache, prompt_positions, images
        )
        logits, arrays["dec_hidden"], (arrays["router_idx"], arrays["router_w"]) = _denoise(
            model, canvas, cache, decoder_mask, canvas_positions
        )
        arrays["logits"] = logits
        sc_logits = arrays["sc_logits"] = logits / sc_temperature
        arrays["logits_sc"], _, _ = _denoise(model, canvas, cache, decoder_mask, canvas_positions, sc_logits)

        # Commit: the argmax canvas is encoded at the canvas positions, as generate appends it.
        commit = arrays["commit_canvas"] = logits.argmax(dim=-1)
        _, arrays["commit_hidden"] = _encode(model, commit, decoder_mask, cache, canvas_positions)
        arrays["next_canvas"] = next_canvas
        arrays["next_logits"], _, _ = _denoise(
            model, next_canvas, cache, _pad_true(decoder_mask, canvas_len), next_positions
        )
    arrays["cache_lengths"] = torch.tensor(cache_lengths(cache))
    return {name: _to_numpy(value) for name, value in arrays.items()}


def _long_tensor(array):
    return torch.as_tensor(np.asarray(array), dtype=torch.long)


def _pad_true(mask, length: int):
    return torch.nn.functional.pad(mask, (0, length), value=True)


def _to_numpy(tensor) -> np.ndarray:
    if tensor.dtype == torch.bool:
        return tensor.numpy().copy()
    if tensor.dtype.is_floating_point:
        return tensor.to(torch.float32).numpy().copy()
    return tensor.to(torch.int64).numpy().copy()
