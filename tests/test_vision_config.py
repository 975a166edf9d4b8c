"""The vision tower's config and weights: `vision_config` parsed as the reference's Gemma4VisionConfig,
its errors naming their field, the vision weights named and shaped as the reference's modules and
checked at load, text-only checkpoints loading as before, and processor_config.json's image budget."""

import dataclasses
import json
import os
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinydg
from helpers import FIXTURES, ROOT
from tinydg import params
from tinydg.checkpoint import open_checkpoint
from tinydg.config import load_config, parse_config
from tinydg.errors import CheckpointError, ConfigError
from tinydg.tools.safetensors_writer import save_safetensors
from tinydg.vision_config import (MAX_VISION_PARAMETERS, PROCESSOR_FILE, VisionConfig, load_processor_config,
                                  parse_processor_config, parse_vision_config)
from tinydg.weights import VISION_PREFIXES, count_parameters, count_vision_parameters, resolve_vision, \
    vision_weight_shapes

REAL = os.path.join(ROOT, "weights", "real")
F32 = os.path.join(FIXTURES, "sliding_full_f32")  # text hidden 32, the tiny vision tower of tools.reference

# The tiny tower of the vision notes: patch 4 and a 2 x 2 pooling, so that the reference's pooler works.
TINY_VISION = {"model_type": "gemma4_vision", "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2,
               "num_attention_heads": 2, "num_key_value_heads": 2, "head_dim": 8, "patch_size": 4,
               "pooling_kernel_size": 2, "position_embedding_size": 32, "standardize": True,
               "rope_parameters": {"rope_theta": 100.0, "rope_type": "default"}}


def vision(**change):
    """The tiny vision_config with `change`; a None value removes the key."""
    raw = {**TINY_VISION, **change}
    return {k: v for k, v in raw.items() if v is not None}


def with_vision(raw_vision):
    """The F32 fixture's config.json with another vision_config."""
    with open(os.path.join(F32, "config.json")) as f:
        config = json.load(f)
    return {**config, "vision_config": raw_vision}


# --- the real checkpoint's config -----------------------------------------------------------------------

def test_real_vision_config():
    config, _ = load_config(REAL)
    v = config.vision_config
    assert (v.hidden_size, v.intermediate_size, v.num_hidden_layers) == (1152, 4304, 27)
    assert (v.num_attention_heads, v.num_key_value_heads, v.head_dim) == (16, 16, 72)
    assert (v.patch_size, v.pooling_kernel_size, v.position_embedding_size) == (16, 3, 10240)
    assert v.rope_parameters == {"rope_type": "axial", "rope_theta": 100.0}  # stored as "default"
    assert v.standardize and not v.use_clipped_linears and v.rms_norm_eps == 1e-6
    assert (v.hidden_activation, v.default_output_length) == ("gelu_pytorch_tanh", 280)
    assert (config.boi_token_id, config.image_token_id, config.eoi_token_id) == (255_999, 258_880, 258_882)
    tower, projector = count_vision_parameters(v, config.text_config.hidden_size)
    assert (tower, projector) == (569_548_080 + 2 * 1152, 2816 * 1152)  # weights, std_bias / std_scale; projector
    assert 25.2e9 <= count_parameters(config.text_config)[0] < 25.3e9  # the published 25.2B leaves vision out


def test_parameter_counter_prints_every_part(capsys, tmp_path):
    assert params.main([REAL]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[-1] for line in out] == ["token", "569.55M", "3.24M", "25.82B"]
    assert "25,250,986,812  25.25B, 3.84B active per token" in out[0] and "25,823,781,228" in out[3]
    with open(os.path.join(REAL, "config.json")) as f:
        config = json.load(f)
    del config["vision_config"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert params.main([str(tmp_path)]) == 0
    assert "vision tower      none" in capsys.readouterr().out
    assert params.main([str(tmp_path / "missing")]) == 1
    assert "config.json not found" in capsys.readouterr().err


# --- the config against the reference's Gemma4VisionConfig ----------------------------------------------

def draw_vision(data):
    """A vision_config with each field present or left to the defaults (heads and KV heads together)."""
    kv = data.draw(st.sampled_from([1, 2, 4]), label="kv")
    fields = {
        "hidden_size": st.integers(1, 48), "intermediate_size": st.integers(1, 64),
        "num_hidden_layers": st.integers(1, 3), "head_dim": st.sampled_from([4, 8, 12, 72]),
        "patch_size": st.integers(1, 16), "pooling_kernel_size": st.integers(1, 4),
        "position_embedding_size": st.integers(1, 64), "rms_norm_eps": st.floats(1e-8, 1e-2),
        "standardize": st.booleans(), "use_clipped_linears": st.just(False),
        "default_output_length": st.sampled_from([70, 280, 1120]),
        "rope_parameters": st.none() | st.fixed_dictionaries({}, optional={"rope_theta": st.floats(1.0, 1e4)})
        | st.fixed_dictionaries({"rope_type": st.sampled_from(["default", "axial"])},
                                optional={"rope_theta": st.floats(1.0, 1e4)}),
    }
    raw = {key: data.draw(s, label=key) for key, s in fields.items() if data.draw(st.booleans(), label=f"{key}?")}
    if data.draw(st.booleans(), label="heads?"):
        raw.update(num_key_value_heads=kv, num_attention_heads=kv * data.draw(st.sampled_from([1, 2, 3])))
    return raw


@settings(max_examples=25)
@given(st.data())
def test_vision_config_and_weight_table_match_the_reference(data):
    """Every field tinydg keeps equals the reference config's, and the weight table equals the
    state_dict of the reference's tower and projector (built on the meta device: shapes only)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from transformers.models.diffusion_gemma.modeling_diffusion_gemma import DiffusionGemmaMultimodalEmbedder
    from transformers.models.gemma4.configuration_gemma4 import Gemma4VisionConfig
    from transformers.models.gemma4.modeling_gemma4 import Gemma4VisionModel
    raw = draw_vision(data)
    text_hidden = data.draw(st.integers(1, 40), label="text hidden")
    ours, theirs = parse_vision_config(dict(raw), text_hidden), Gemma4VisionConfig(**raw)
    for f in dataclasses.fields(VisionConfig):
        want = getattr(theirs, f.name, None)  # default_output_length is only there when given
        if f.name == "rope_parameters":
            want = {"rope_type": want["rope_type"], "rope_theta": float(want["rope_theta"])}
        assert getattr(ours, f.name) == want, f.name
    with torch.device("meta"):
        tower = Gemma4VisionModel(theirs)
        projector = DiffusionGemmaMultimodalEmbedder(theirs, SimpleNamespace(hidden_size=text_hidden))
    shapes = {VISION_PREFIXES[0] + n: tuple(t.shape) for n, t in tower.state_dict().items()}
    shapes.update({VISION_PREFIXES[1] + n: tuple(t.shape) for n, t in projector.state_dict().items()})
    assert vision_weight_shapes(ours, text_hidden) == shapes


# --- every error names its field -------------------------------------------------------------------------

INTEGERS = ["hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
            "head_dim", "patch_size", "pooling_kernel_size", "position_embedding_size", "default_output_length"]
NOT_INTEGERS = ["8", [8], True, 8.0, float("nan"), 10**400, -8, 0, {"a": 8}]


@pytest.mark.parametrize("key", INTEGERS)
@pytest.mark.parametrize("value", NOT_INTEGERS, ids=repr)
def test_integer_fields(key, value):
    with pytest.raises(ConfigError, match=f"`vision_config.{key}` must be an integer in"):
        parse_config(with_vision(vision(**{key: value})))


@pytest.mark.parametrize("change, field", [
    ({"rms_norm_eps": "1e-6"}, "vision_config.rms_norm_eps` must be a finite number"),
    ({"rms_norm_eps": 0.0}, "vision_config.rms_norm_eps` must be a finite number"),
    ({"rms_norm_eps": float("nan")}, "vision_config.rms_norm_eps` must be a finite number"),
    ({"rms_norm_eps": 2.0}, "vision_config.rms_norm_eps` must be a finite number"),
    ({"rope_parameters": [100.0]}, "vision_config.rope_parameters` must be a mapping"),
    ({"rope_parameters": {"rope_type": "linear"}}, "vision_config.rope_parameters.rope_type` must be one of"),
    ({"rope_parameters": {"type": "proportional"}}, "vision_config.rope_parameters.rope_type` must be one of"),
    ({"rope_parameters": {"rope_theta": "100"}}, "vision_config.rope_parameters.rope_theta` must be a finite"),
    ({"rope_parameters": {"rope_theta": 0}}, "vision_config.rope_parameters.rope_theta` must be a finite"),
    ({"rope_parameters": {"rope_theta": 2e-38}}, "vision_config.rope_parameters.rope_theta` .* beyond float32"),
    ({"head_dim": 6}, "vision_config.head_dim` 6 must be a multiple of 4"),
    ({"num_attention_heads": 3}, "vision_config.num_attention_heads` 3 is not divisible"),
    ({"use_clipped_linears": True}, "vision_config.use_clipped_linears`=true is not supported"),
    ({"use_clipped_linears": "no"}, "vision_config.use_clipped_linears` must be true or false"),
    ({"standardize": 1}, "vision_config.standardize` must be true or false"),
    ({"hidden_activation": "gelu"}, "vision_config.hidden_activation"),
    ({"model_type": "siglip_vision_model"}, "vision_config.model_type` 'siglip_vision_model' is not"),
    ({"output_proj_dims": 8}, "vision_config.output_proj_dims` 8 is not supported"),
    ({"position_embedding_size": 2**24, "hidden_size": 2**16}, "vision parameters, more than tinydg's limit"),
])
def test_invalid_values_name_their_field(change, field):
    with pytest.raises(ConfigError, match=field):
        parse_config(with_vision(vision(**change)))


def test_values_the_reference_accepts_stay_accepted():
    v = parse_config(with_vision(vision(rope_parameters=None, rms_norm_eps=1e-5, output_proj_dims=16,
                                        hidden_activation="gelu_pytorch_tanh", pooling_kernel_size=1))).vision_config
    assert v.rope_parameters == {"rope_type": "axial", "rope_theta": 100.0} and v.rms_norm_eps == 1e-5
    assert parse_config(with_vision(vision(rope_parameters={"rope_type": "axial", "rope_theta": 7}))
                        ).vision_config.rope_parameters["rope_theta"] == 7.0
    assert parse_config(with_vision({})).vision_config.hidden_size == 768  # the class defaults
    assert parse_config(with_vision(None)).vision_config is None  # text-only
    assert MAX_VISION_PARAMETERS > sum(count_vision_parameters(parse_vision_config({}, 2816), 2816))
    ids = parse_config({**with_vision(None), "boi_token_id": None, "image_token_id": 7})
    assert (ids.boi_token_id, ids.image_token_id, ids.eoi_token_id) == (None, 7, 258_882)


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6)
                    | st.sampled_from(["default", "axial", "gelu_pytorch_tanh", "gemma4_vision", 2**24, 10**400]),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner,
                                                                                 max_size=3), max_leaves=6)


FIELDS = sorted({*TINY_VISION, *INTEGERS, "rms_norm_eps", "use_clipped_linears", "hidden_activation",
                 "output_proj_dims"})
ROPE_KEYS = ["rope_type", "rope_theta", "type"]


@settings(max_examples=150)
@given(st.tuples(st.just(False), st.sampled_from(FIELDS)) | st.tuples(st.just(True), st.sampled_from(ROPE_KEYS)),
       JSON)
def test_any_value_in_any_field_is_parsed_or_refused_by_name(where, value):
    """A fuzzed field (or rope_parameters entry) gives a VisionConfig or a ConfigError, nothing else."""
    nested, key = where
    raw = vision(rope_parameters={"rope_type": "axial", key: value}) if nested else vision()
    if not nested:
        raw[key] = value
    try:
        parse_config(with_vision(raw))
    except ConfigError as e:
        assert "vision_config" in str(e)


# --- the vision weights, checked at load ---------------------------------------------------------------

def text_tensors():
    """The F32 fixture's text tensors as float32 arrays."""
    return {n: r.load() for n, r in open_checkpoint(F32).items() if not n.startswith(VISION_PREFIXES)}


def write_checkpoint(folder, raw_vision, tensors, processor=None):
    """A checkpoint of the F32 fixture's text model with `raw_vision` (None: text-only) and `tensors`."""
    os.makedirs(folder, exist_ok=True)
    shutil.copy(os.path.join(F32, "generation_config.json"), folder)
    config = with_vision(raw_vision)
    if raw_vision is None:
        del config["vision_config"]
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f)
    if processor is not None:
        with open(os.path.join(folder, PROCESSOR_FILE), "w") as f:
            f.write(processor if isinstance(processor, str) else json.dumps(processor))
    save_safetensors(os.path.join(folder, "model.safetensors"), tensors, dtype="F32")
    return str(folder)


@pytest.fixture(scope="module")
def reference_checkpoint(tmp_path_factory):
    """A tiny checkpoint saved by the reference (save_pretrained) with the tiny standardized tower."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from tinydg.tools import reference as ref
    config = ref.tiny_config()
    config["vision_config"] = dict(TINY_VISION)
    model = ref.build_model(config, seed=0)
    folder = tmp_path_factory.mktemp("vision") / "ckpt"
    ref.save(model, folder)
    return str(folder), {k: v.detach().numpy() for k, v in model.state_dict().items()}


def test_a_checkpoint_saved_by_the_reference_loads_its_vision_weights(reference_checkpoint):
    folder, state = reference_checkpoint
    model = tinydg.load(folder)
    v = model.config.vision_config
    assert v == parse_vision_config(TINY_VISION, model.text.hidden_size)
    names = vision_weight_shapes(v, model.text.hidden_size)
    assert len(names) == 2 + 2 + 2 * 13 + 1 and all(n in model.weights for n in names)
    assert model.weights.loaded() == 0
    tinydg.encode(model, np.array([[1, 2, 3]]))
    assert not any(n in model.weights._arrays for n in names)  # lazy: the text forward reads none of them
    for name in names:  # the reference's own values (std_bias / std_scale are buffers, stored too)
        np.testing.assert_array_equal(model.weights[name], state[name])
    assert model.processor_config.image_processor.max_soft_tokens == 280 and model.processor_config.path is None
    assert tinydg.move(model).processor_config == model.processor_config


def vision_tensors(raw_vision, text_hidden=32, seed=0):
    v = parse_vision_config(raw_vision, text_hidden)
    rng = np.random.default_rng(seed)
    return {n: rng.standard_normal(s).astype(np.float32) for n, s in vision_weight_shapes(v, text_hidden).items()}


def test_missing_misshaped_and_unexpected_vision_tensors_are_named(tmp_path):
    tensors = {**text_tensors(), **vision_tensors(TINY_VISION)}
    model = tinydg.load(write_checkpoint(tmp_path / "good", TINY_VISION, tensors))
    assert len(model.weights) == len(tensors)
    q = "model.encoder.vision_tower.encoder.layers.1.self_attn.q_proj.linear.weight"
    std = "model.encoder.vision_tower.std_scale"
    broken = {n: t for n, t in tensors.items() if n != std}
    broken[q] = np.zeros((16, 8), np.float32)
    broken["model.encoder.vision_tower.encoder.layers.2.mlp.up_proj.linear.weight"] = np.zeros((32, 16), np.float32)
    with pytest.raises(CheckpointError) as e:
        tinydg.load(write_checkpoint(tmp_path / "broken", TINY_VISION, broken))
    message = str(e.value)
    assert f"missing tensor {std}" in message and f"tensor {q} has shape [16, 8], expected [16, 16]" in message
    assert "unexpected tensor model.encoder.vision_tower.encoder.layers.2.mlp.up_proj.linear.weight" in message
    # std_bias / std_scale belong to standardize=true only
    with pytest.raises(CheckpointError, match="unexpected tensor model.encoder.vision_tower.std_bias"):
        resolve_vision(tensors, parse_vision_config(vision(standardize=False), 32), 32)
    # the projector maps onto the text model's hidden size
    with pytest.raises(CheckpointError, match=r"embed_vision.embedding_projection.weight has shape \[32, 16\], "
                                              r"expected \[64, 16\]"):
        resolve_vision(tensors, parse_vision_config(TINY_VISION, 64), 64)


def test_text_only_checkpoints_load_as_before(tmp_path):
    """No vision_config and no vision tensors: the text model alone, no processor_config.json read (a
    broken one is ignored), the same numbers as the fixture it was cut from."""
    folder = write_checkpoint(tmp_path / "text", None, text_tensors(), processor="not json")
    model = tinydg.load(folder)
    assert model.config.vision_config is None and model.processor_config is None
    assert not any(n.startswith(VISION_PREFIXES) for n in model.weights)
    ids = np.array([[5, 6, 7, 8]])
    np.testing.assert_array_equal(tinydg.encode(model, ids)[0], tinydg.encode(tinydg.load(F32), ids)[0])


def test_vision_tensors_and_vision_config_come_together(tmp_path):
    tensors = {**text_tensors(), **vision_tensors(TINY_VISION)}
    with pytest.raises(CheckpointError, match="holds vision tensors .*model.encoder.embed_vision.embedding_projection"
                                              r".*weight and 30 more\) but config.json has no vision_config"):
        tinydg.load(write_checkpoint(tmp_path / "a", None, tensors))
    with pytest.raises(CheckpointError, match="holds none of the vision tensors .* a text-only checkpoint has no "
                                              "vision_config"):
        tinydg.load(write_checkpoint(tmp_path / "b", TINY_VISION, text_tensors()))


# --- processor_config.json ----------------------------------------------------------------------------

REAL_PROCESSOR = {  # the released Gemma 4 processor's blocks (DiffusionGemma ships a copy)
    "processor_class": "Gemma4Processor", "image_seq_length": 280,
    "image_processor": {"image_processor_type": "Gemma4ImageProcessor", "patch_size": 16, "max_soft_tokens": 280,
                        "pooling_kernel_size": 3, "resample": 3, "do_normalize": False, "image_seq_length": 280},
    "video_processor": {"video_processor_type": "Gemma4VideoProcessor", "patch_size": 16, "max_soft_tokens": 70,
                        "pooling_kernel_size": 3, "num_frames": 32},
}


def test_processor_config_is_read_and_defaults_only_stand_in_for_what_is_missing(tmp_path):
    real = load_config(REAL)[0].vision_config
    p = parse_processor_config(REAL_PROCESSOR, real)
    assert (p.image_processor.max_soft_tokens, p.video_processor.max_soft_tokens) == (280, 70)
    assert (p.image_processor.patch_size, p.image_processor.pooling_kernel_size) == (16, 3)
    assert load_processor_config(str(tmp_path), real) == dataclasses.replace(p, path=None)  # no file: the defaults
    (tmp_path / PROCESSOR_FILE).write_text(json.dumps({"image_processor": {"max_soft_tokens": 1120}}))
    p = load_processor_config(str(tmp_path), real)
    assert (p.image_processor.max_soft_tokens, p.video_processor.max_soft_tokens) == (1120, 70)  # no video block
    assert p.path == str(tmp_path / PROCESSOR_FILE)


def test_a_loaded_model_has_its_processor_config(tmp_path):
    tensors = {**text_tensors(), **vision_tensors(TINY_VISION)}
    budget = {"image_processor": {"patch_size": 4, "pooling_kernel_size": 2, "max_soft_tokens": 70},
              "video_processor": {"max_soft_tokens": 140}}
    model = tinydg.load(write_checkpoint(tmp_path / "ckpt", TINY_VISION, tensors, processor=budget))
    image, video = model.processor_config.image_processor, model.processor_config.video_processor
    assert (image.patch_size, image.pooling_kernel_size, image.max_soft_tokens) == (4, 2, 70)
    assert (video.patch_size, video.pooling_kernel_size, video.max_soft_tokens) == (4, 2, 140)
    with pytest.raises(CheckpointError, match=f"{PROCESSOR_FILE}: `image_processor.max_soft_tokens` must be one of"):
        tinydg.load(write_checkpoint(tmp_path / "bad", TINY_VISION, tensors, processor={
            "image_processor": {"max_soft_tokens": 100}}))


@pytest.mark.parametrize("content, message", [
    ("{", "is not valid JSON"),
    ("[]", "expected a JSON object, got list"),
    ({"image_processor": [280]}, "`image_processor` must be an object"),
    ({"video_processor": "70"}, "`video_processor` must be an object"),
    ({"image_processor": {"max_soft_tokens": 100}}, r"`image_processor.max_soft_tokens` must be one of \(70, 140"),
    ({"image_processor": {"max_soft_tokens": "280"}}, "`image_processor.max_soft_tokens` must be one of"),
    ({"image_processor": {"max_soft_tokens": 280.0}}, "`image_processor.max_soft_tokens` must be one of"),
    ({"video_processor": {"max_soft_tokens": True}}, "`video_processor.max_soft_tokens` must be one of"),
    ({"image_processor": {"patch_size": 14}}, "`image_processor.patch_size` is 14, but config.json's "
                                              "vision_config.patch_size is 16"),
    ({"video_processor": {"pooling_kernel_size": 4}}, "`video_processor.pooling_kernel_size` is 4, but"),
    ({"image_processor": {"patch_size": 16.0}}, "`image_processor.patch_size` is 16.0"),
])
def test_a_malformed_processor_config_is_named(tmp_path, content, message):
    (tmp_path / PROCESSOR_FILE).write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(CheckpointError, match=f"{PROCESSOR_FILE}.*{message}"):
        load_processor_config(str(tmp_path), load_config(REAL)[0].vision_config)


def test_a_processor_config_that_is_no_regular_file_is_refused(tmp_path):
    (tmp_path / PROCESSOR_FILE).mkdir()
    with pytest.raises(CheckpointError, match=f"{PROCESSOR_FILE} is a directory"):
        load_processor_config(str(tmp_path), load_config(REAL)[0].vision_config)
