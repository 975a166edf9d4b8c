"""Config parsing: both serialized forms, the reference's defaults and rules, the real model's
numbers, and clear errors for inconsistent configs."""

import dataclasses
import json
import os
import time

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tinydg.config import (MAX_DENOISING_STEPS, MAX_NEW_TOKENS, MAX_PARAMETERS, MAX_STABILITY_THRESHOLD, SIZE_LIMITS,
                           check_token_ids, load_config, parse_config, parse_generation_config,
                           validate_generation_config)
from tinydg.errors import ConfigError
from tinydg.weights import count_parameters

ROOT = os.path.join(os.path.dirname(__file__), "..")
REAL = os.path.join(ROOT, "weights", "real")


def tiny(**text):
    t = {"vocab_size": 64, "hidden_size": 16, "intermediate_size": 8, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8, "num_experts": 4,
         "top_k_experts": 2, "moe_intermediate_size": 8, "sliding_window": 6,
         "layer_types": ["sliding_attention", "full_attention"]}
    t.update(text)
    return {"model_type": "diffusion_gemma", "text_config": t, "canvas_length": 8}


def test_real_model_numbers():
    config, gen = load_config(REAL)
    t = config.text_config
    total, active = count_parameters(t)
    assert 25.2e9 <= total < 25.3e9 and 3.8e9 <= active < 3.9e9  # published: 25.2B total, 3.8B active
    full = [i for i, s in enumerate(t.layers) if not s.is_sliding]
    assert full == [5, 11, 17, 23, 29]
    assert {(s.head_dim, s.num_key_value_heads, s.rope_type) for s in t.layers if not s.is_sliding} == {(512, 2, "proportional")}
    assert {(s.head_dim, s.num_key_value_heads, s.rope_type) for s in t.layers if s.is_sliding} == {(256, 8, "default")}
    assert t.sliding_window == 1024 and t.final_logit_softcapping == 30.0 and config.canvas_length == 256
    assert (gen.max_denoising_steps, gen.entropy_bound, gen.t_max, gen.t_min) == (48, 0.1, 0.8, 0.4)
    assert (gen.stability_threshold, gen.confidence_threshold, gen.eos_token_id) == (1, 0.005, (1, 106, 50))


def test_hub_and_save_pretrained_forms_agree():
    hub = parse_config(tiny(global_head_dim=16, num_global_key_value_heads=1)).text_config
    saved = parse_config(tiny(per_layer_config={"1": {"head_dim": 16, "num_key_value_heads": 1}})).text_config
    assert hub.layers == saved.layers
    assert hub.layers[1].head_dim == 16 and hub.layers[1].num_key_value_heads == 1
    assert hub.layers[0].head_dim == 8 and hub.layers[0].num_key_value_heads == 2


def test_per_layer_config_wins_and_missing_global_head_dim_means_512():
    both = parse_config(tiny(global_head_dim=16, per_layer_config={"01": {"head_dim": 32}})).text_config
    assert both.layers[1].head_dim == 32  # zero-padded keys, as save_pretrained writes them
    assert parse_config(tiny()).text_config.layers[1].head_dim == 512


def test_defaults_and_rules():
    t = parse_config(tiny()).text_config
    assert t.final_logit_softcapping == 30.0  # not serialized when default
    with pytest.warns(UserWarning, match="last layer"):
        forced = parse_config(tiny(layer_types=["sliding_attention", "sliding_attention"])).text_config
    assert forced.layer_types[-1] == "full_attention"
    assert parse_config(tiny(use_bidirectional_attention="all", sliding_window=10)).text_config.sliding_window == 6
    default_types = parse_config(tiny(num_hidden_layers=12, layer_types=None)).text_config.layer_types
    assert [i for i, x in enumerate(default_types) if x == "full_attention"] == [5, 11]


@pytest.mark.parametrize("change, message", [
    ({"num_key_value_heads": 3}, "not divisible"),
    ({"top_k_experts": 5}, "top_k_experts 5 > num_experts 4"),
    ({"layer_types": ["sliding_attention", "global"]}, "unknown layer type 'global'"),
    ({"layer_types": ["full_attention"]}, "must list 2 entries"),
    ({"sliding_window": 0}, "sliding_window"),
    ({"sliding_window": 1}, "at least 2"),
    ({"num_experts": None}, "num_experts"),
    ({"rope_parameters": {"sliding_attention": {"rope_type": "yarn", "rope_theta": 1.0},
                          "full_attention": {"rope_type": "default", "rope_theta": 1.0}}}, "unknown RoPE type 'yarn'"),
    ({"rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": 1.0}}}, "no entry for layer type"),
    ({"hidden_activation": "relu"}, "hidden_activation"),
    ({"head_dim": 7, "global_head_dim": 8}, "even"),
    ({"per_layer_config": {"7": {"head_dim": 8}}}, "names layer 7"),
    ({"per_layer_config": {"1": {"rms_norm_eps": 1.0}}}, "unsupported keys"),
    ({"attention_bias": True}, "attention_bias"),
    ({"final_logit_softcapping": None}, "final_logit_softcapping"),
    ({"hidden_size": -4}, "hidden_size"),
])
def test_inconsistent_configs_are_refused(change, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(tiny(**change))


def test_generation_config_nulls_fall_back_to_reference_defaults():
    # special tokens do not fall back to config.json: the reference leaves them unset
    nulls = {k: None for k in ("max_new_tokens", "max_denoising_steps", "sampler_config", "t_min", "t_max",
                               "stability_threshold", "confidence_threshold", "eos_token_id", "pad_token_id")}
    g = parse_generation_config(nulls)
    assert (g.max_new_tokens, g.max_denoising_steps, g.entropy_bound, g.t_min, g.t_max) == (256, 48, 0.1, 0.4, 0.8)
    assert (g.stability_threshold, g.confidence_threshold, g.eos_token_id, g.pad_token_id) == (1, 0.005, (), None)


@pytest.mark.parametrize("change, message", [
    ({"t_max": 0.4, "t_min": 0.4}, "t_max"), ({"t_min": -1.0}, "t_min"), ({"max_denoising_steps": 0}, "max_denoising"),
    ({"sampler_config": {"entropy_bound": 0.0}}, "entropy_bound"), ({"stability_threshold": -1}, "stability"),
    ({"confidence_threshold": 0.0}, "confidence"), ({"sampler_config": {"_cls_name": "Other"}}, "unknown sampler"),
])
def test_impossible_generation_settings_are_refused(change, message):
    with pytest.raises(ConfigError, match=message):
        parse_generation_config(change)


def test_unreadable_config_files(tmp_path):
    with pytest.raises(ConfigError, match="config.json not found"):
        load_config(str(tmp_path))
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gemma3"}))
    with pytest.raises(ConfigError, match="not 'diffusion_gemma'"):
        load_config(str(tmp_path))


@settings(max_examples=40)
@given(st.integers(1, 8), st.sampled_from([1, 2, 4, 8]), st.data())
def test_layer_specs_match_reference_config(n_layers, heads, data):
    """Per-layer head_dim / KV heads / window from tinydg equal what transformers' config resolves."""
    pytest.importorskip("transformers")
    from transformers import DiffusionGemmaTextConfig
    kvs = [k for k in (1, 2, 4, 8) if heads % k == 0]
    raw = {"num_hidden_layers": n_layers, "num_attention_heads": heads,
           "num_key_value_heads": data.draw(st.sampled_from(kvs)), "head_dim": data.draw(st.sampled_from([8, 16])),
           "num_experts": 4, "top_k_experts": 2, "moe_intermediate_size": 8,
           "sliding_window": data.draw(st.integers(2, 64)),
           "use_bidirectional_attention": data.draw(st.sampled_from([None, "vision", "all"])),
           "layer_types": [data.draw(st.sampled_from(["sliding_attention", "full_attention"])) for _ in range(n_layers - 1)]
           + ["full_attention"]}
    if data.draw(st.booleans()):
        raw["global_head_dim"] = data.draw(st.sampled_from([8, 32]))
    if data.draw(st.booleans()):
        raw["num_global_key_value_heads"] = data.draw(st.sampled_from(kvs))
    theirs = DiffusionGemmaTextConfig(**raw)
    ours = parse_config({"text_config": raw}).text_config
    assert ours.sliding_window == theirs.sliding_window
    saved = parse_config({"text_config": {**{k: v for k, v in theirs.to_dict().items()
                                              if k not in ("global_head_dim", "num_global_key_value_heads")}}}).text_config
    for i in range(n_layers):
        lc = theirs.per_layer_config[i]
        assert (ours.layers[i].head_dim, ours.layers[i].num_key_value_heads) == (lc.head_dim, lc.num_key_value_heads)
        assert saved.layers[i] == ours.layers[i]  # the save_pretrained form parses to the same layers


# --- types and ranges: every value tinydg uses, refused with its field's name ------------------------

NOT_INTEGERS = ["8", [8], True, 8.0, float("nan"), float("inf"), 10**400, -8, 0, {"a": 8}]
NOT_POSITIVE_NUMBERS = ["1e-6", [1e-6], True, float("nan"), float("inf"), -float("inf"), 10**400, 0, -1.0, None]
TEXT_INTEGERS = ["vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                 "num_key_value_heads", "head_dim", "max_position_embeddings", "num_experts", "top_k_experts",
                 "moe_intermediate_size", "sliding_window", "global_head_dim", "num_global_key_value_heads"]


@pytest.mark.parametrize("key", TEXT_INTEGERS)
@pytest.mark.parametrize("value", NOT_INTEGERS, ids=repr)
def test_integer_fields_hold_integers_in_range(key, value):
    with pytest.raises(ConfigError, match=f"`{key}` must be an integer in"):
        parse_config(tiny(**{key: value}))


@pytest.mark.parametrize("key", ["rms_norm_eps", "final_logit_softcapping"])
@pytest.mark.parametrize("value", NOT_POSITIVE_NUMBERS, ids=repr)
def test_float_fields_hold_finite_positive_numbers(key, value):
    with pytest.raises(ConfigError, match=f"`{key}` must be a finite number"):
        parse_config(tiny(**{key: value}))


def rope(layer_type="full_attention", **change):
    params = {"sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
              "full_attention": {"rope_type": "proportional", "partial_rotary_factor": 0.25, "rope_theta": 1e6}}
    params[layer_type].update(change)
    return tiny(rope_parameters=params)


@pytest.mark.parametrize("change, field", [
    ({"rope_theta": "1e4"}, "rope_theta"), ({"rope_theta": True}, "rope_theta"), ({"rope_theta": 0}, "rope_theta"),
    ({"rope_theta": -1.0}, "rope_theta"), ({"rope_theta": float("nan")}, "rope_theta"),
    ({"rope_theta": 10**400}, "rope_theta"), ({"rope_theta": None}, "rope_theta"),
    ({"partial_rotary_factor": 0}, "partial_rotary_factor"), ({"partial_rotary_factor": 1.5}, "partial_rotary_factor"),
    ({"partial_rotary_factor": "0.25"}, "partial_rotary_factor"),
    ({"partial_rotary_factor": True}, "partial_rotary_factor"),
    ({"factor": 0}, "factor"), ({"factor": -2.0}, "factor"), ({"factor": "2"}, "factor"),
    ({"factor": float("inf")}, "factor"),
])
def test_rope_parameters_are_finite_and_in_range(change, field):
    with pytest.raises(ConfigError, match=f"rope_parameters.full_attention.{field}` must be a finite number"):
        parse_config(rope(**change))


def test_rope_angles_must_stay_finite_in_float32():
    # positions * theta**(-2j/d) / factor would overflow float32, and cos / sin of inf are NaN
    with pytest.raises(ConfigError, match="RoPE for 'full_attention'.*angles beyond float32"):
        parse_config(rope(rope_theta=1e-37))
    with pytest.raises(ConfigError, match="RoPE for 'full_attention'.*angles beyond float32"):
        parse_config(rope(factor=1e-37))
    parse_config(rope("sliding_attention", factor=1e-37))  # default RoPE has no factor: ignored there


@pytest.mark.parametrize("change, field", [
    ({"canvas_length": "8"}, "canvas_length"), ({"canvas_length": 8.0}, "canvas_length"),
    ({"canvas_length": True}, "canvas_length"), ({"canvas_length": 0}, "canvas_length"),
    ({"canvas_length": 10**400}, "canvas_length"), ({"canvas_length": None}, "canvas_length"),
    ({"tie_word_embeddings": "yes"}, "tie_word_embeddings"), ({"tie_word_embeddings": 1}, "tie_word_embeddings"),
    ({"boi_token_id": "a"}, "boi_token_id"), ({"image_token_id": 1.5}, "image_token_id"),
    ({"vision_config": [1]}, "vision_config"), ({"text_config": [1]}, "text_config"),
])
def test_top_level_fields(change, field):
    with pytest.raises(ConfigError, match=field):
        parse_config({**tiny(), **change})


@pytest.mark.parametrize("change, field", [
    ({"pad_token_id": "0"}, "pad_token_id"), ({"bos_token_id": True}, "bos_token_id"),
    ({"eos_token_id": [1, "2"]}, "eos_token_id"), ({"eos_token_id": 1.0}, "eos_token_id"),
    ({"attention_bias": "no"}, "attention_bias"), ({"tie_word_embeddings": "yes"}, "tie_word_embeddings"),
    ({"per_layer_config": {"1": {"head_dim": "8"}}}, "head_dim"), ({"per_layer_config": {"1": [8]}}, "mapping"),
    ({"per_layer_config": {"1": {}, "01": {}}}, "names layer 1 twice"),
    ({"per_layer_config": {"9" * 5000: {}}}, "key"), ({"layer_types": "sliding_attention"}, "layer_types"),
    ({"rms_norm_eps": 2.0}, "rms_norm_eps"),
])
def test_text_fields_of_the_wrong_type(change, field):
    with pytest.raises(ConfigError, match=field):
        parse_config(tiny(**change))


def test_values_the_reference_accepts_stay_accepted():
    t = parse_config(tiny(rms_norm_eps=1e-5, final_logit_softcapping=50, pad_token_id=-1, eos_token_id=[1, 2],
                          num_global_key_value_heads=None)).text_config
    assert (t.rms_norm_eps, t.final_logit_softcapping, t.pad_token_id) == (1e-5, 50.0, -1)
    assert parse_config(rope(partial_rotary_factor=1, rope_theta=10_000)).text_config.layers[1].rope_theta == 10_000.0


@pytest.mark.parametrize("change, message", [
    ({"num_hidden_layers": 10**9, "layer_types": None}, "num_hidden_layers"),
    ({"vocab_size": 2**25}, "vocab_size"),
    ({"max_position_embeddings": 2**25}, "max_position_embeddings"),
    ({"num_experts": 10**6}, "num_experts"),
    ({"hidden_size": 2**16, "vocab_size": 2**24}, r"1.1e\+12 text parameters, more than tinydg's limit of 1e\+12"),
])
def test_absurd_sizes_are_refused_before_anything_is_allocated(change, message):
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=message):
        parse_config(tiny(**change))
    assert time.perf_counter() - start < 1


def test_absurd_canvases_are_refused():
    with pytest.raises(ConfigError, match="canvas_length"):
        parse_config({**tiny(), "canvas_length": 10**6})
    with pytest.raises(ConfigError, match="canvas_length 4096 x vocab_size 16777216 logits"):
        parse_config({**tiny(vocab_size=2**24, hidden_size=16), "canvas_length": 4096})


def test_the_real_model_is_far_inside_the_limits():
    config, _ = load_config(REAL)
    t = config.text_config
    for key, limit in SIZE_LIMITS.items():
        value = config.canvas_length if key == "canvas_length" else getattr(t, key)
        assert value * 8 <= limit, key
    assert max(s.head_dim for s in t.layers) * 8 <= SIZE_LIMITS["head_dim"]
    assert count_parameters(t)[0] * 20 < MAX_PARAMETERS


def test_nan_infinity_and_huge_integers_written_in_the_file(tmp_path):
    for literal in ("NaN", "Infinity", "-Infinity", "1e400", "1" + "0" * 400):
        text = json.dumps(tiny()).replace('"vocab_size": 64', f'"rms_norm_eps": {literal}, "vocab_size": 64')
        (tmp_path / "config.json").write_text(text)
        with pytest.raises(ConfigError, match="rms_norm_eps"):
            load_config(str(tmp_path))


# --- generation settings ------------------------------------------------------------------------------

@pytest.mark.parametrize("key, value", [
    *[(k, v) for k in ("max_new_tokens", "max_denoising_steps", "stability_threshold")
      for v in (True, "8", 8.0, [8], float("nan"), 10**400, -1)],
    ("stability_threshold", MAX_STABILITY_THRESHOLD + 1), ("max_denoising_steps", MAX_DENOISING_STEPS + 1),
    ("max_new_tokens", MAX_NEW_TOKENS + 1),
    *[(k, v) for k in ("t_min", "t_max", "confidence_threshold")
      for v in (True, "0.5", [0.5], float("nan"), float("inf"), 10**400)],
    ("confidence_threshold", 0), ("confidence_threshold", 1e39),
    ("eos_token_id", [1, True]), ("eos_token_id", [1, "2"]), ("eos_token_id", [1.0]), ("eos_token_id", "1"),
    ("eos_token_id", {"a": 1}), ("pad_token_id", True), ("pad_token_id", "0"), ("pad_token_id", 1.5),
    ("bos_token_id", [2]),
])
def test_generation_settings_of_the_wrong_type_or_range(key, value):
    with pytest.raises(ConfigError, match=key):
        parse_generation_config({key: value})


@pytest.mark.parametrize("value", [float("nan"), float("inf"), "0.1", True, 0.0, 10**400])
def test_entropy_bound_is_finite_and_positive(value):
    with pytest.raises(ConfigError, match="entropy_bound"):
        parse_generation_config({"sampler_config": {"entropy_bound": value}})


def test_generation_config_that_is_not_an_object():
    for raw in ([["max_new_tokens", 8]], "ab", 3):
        with pytest.raises(ConfigError, match="generation_config: expected a JSON object"):
            parse_generation_config(raw)


def test_numpy_scalars_count_as_python_numbers():
    g = dataclasses.replace(parse_generation_config({}), max_new_tokens=np.int64(8), stability_threshold=np.uint8(2),
                            t_min=np.float32(0.25), confidence_threshold=np.float64(0.5),
                            eos_token_id=[np.int32(1), 2], pad_token_id=np.int16(0))
    g = validate_generation_config(g)
    assert (g.max_new_tokens, g.stability_threshold, g.t_min, g.eos_token_id, g.pad_token_id) == (8, 2, 0.25, (1, 2), 0)
    assert all(type(v) is int for v in (g.max_new_tokens, g.stability_threshold, *g.eos_token_id, g.pad_token_id))
    assert type(g.t_min) is float and type(g.confidence_threshold) is float


def test_token_ids_must_lie_in_the_vocabulary(tmp_path):
    ids = {"eos_token_id": [1, 127], "pad_token_id": 0, "bos_token_id": 2}
    check_token_ids(parse_generation_config(ids), 128)
    for change in ({"eos_token_id": [1, 128]}, {"pad_token_id": 128}, {"pad_token_id": -1}, {"bos_token_id": 500}):
        name = next(iter(change))
        with pytest.raises(ConfigError, match=rf"`{name}` must hold token ids in \[0, 128\)"):
            check_token_ids(parse_generation_config({**ids, **change}), 128)
    (tmp_path / "config.json").write_text(json.dumps(tiny()))
    (tmp_path / "generation_config.json").write_text(json.dumps({"pad_token_id": 64}))
    with pytest.raises(ConfigError, match=r"`pad_token_id` must hold token ids in \[0, 64\)"):
        load_config(str(tmp_path))  # a pad id outside the vocabulary would be written into sequences
