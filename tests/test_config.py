"""Config parsing: both serialized forms, the reference's defaults and rules, the real model's
numbers, and clear errors for inconsistent configs."""

import json
import os

import pytest
from hypothesis import given, settings, strategies as st

from tinydg.config import load_config, parse_config, parse_generation_config
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
