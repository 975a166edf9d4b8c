"""Model and generation configuration, read from a checkpoint's `config.json` and
`generation_config.json`.

Field names are the JSON keys, so anything seen here can be found in the checkpoint with grep.
The parsing follows transformers' `DiffusionGemmaTextConfig.__post_init__` and
`DiffusionGemmaGenerationConfig` (transformers 5.23, models/diffusion_gemma):

- keys missing from the file take the reference's *class* defaults, which are NOT the values of
  the real checkpoint (see `weights/real/config.json` for those);
- full-attention layers get their own head_dim / KV heads, given either in the hub form
  (`global_head_dim`, default 512 even when absent, and `num_global_key_value_heads`) or in the
  `save_pretrained` form (`per_layer_config`, which wins when present);
- `use_bidirectional_attention == "all"` halves the in-memory sliding window (`sw // 2 + 1`);
- the last layer is forced to full attention;
- `final_logit_softcapping` is not serialized by the reference when it is the default, 30.0.
"""

import json
import math
import os
import warnings
from dataclasses import dataclass, field

from .errors import ConfigError

SLIDING, FULL = "sliding_attention", "full_attention"
ROPE_TYPES = ("default", "proportional")
ACTIVATIONS = ("gelu_pytorch_tanh",)

DEFAULT_ROPE_PARAMETERS = {
    SLIDING: {"rope_type": "default", "rope_theta": 10_000.0},
    FULL: {"rope_type": "proportional", "partial_rotary_factor": 0.25, "rope_theta": 1_000_000.0},
}

# The reference's class defaults for keys a config.json may omit (DiffusionGemmaTextConfig).
TEXT_DEFAULTS = {
    "vocab_size": 262_144,
    "hidden_size": 2304,
    "intermediate_size": 9216,
    "num_hidden_layers": 30,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
    "head_dim": 256,
    "hidden_activation": "gelu_pytorch_tanh",
    "max_position_embeddings": 131_072,
    "rms_norm_eps": 1e-6,
    "pad_token_id": 0,
    "eos_token_id": 1,
    "bos_token_id": 2,
    "tie_word_embeddings": True,
    "rope_parameters": None,
    "attention_bias": False,
    "sliding_window": 512,
    "layer_types": None,
    "final_logit_softcapping": 30.0,
    "use_bidirectional_attention": None,
    "num_experts": None,
    "top_k_experts": None,
    "moe_intermediate_size": None,
}


@dataclass(frozen=True)
class LayerSpec:
    """What differs from layer to layer: attention type, head size, KV heads, RoPE."""

    layer_type: str  # "sliding_attention" | "full_attention"
    head_dim: int
    num_key_value_heads: int
    rope_type: str  # "default" | "proportional"
    rope_theta: float
    partial_rotary_factor: float
    rope_factor: float

    @property
    def is_sliding(self) -> bool:
        return self.layer_type == SLIDING


@dataclass(frozen=True)
class TextConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    hidden_activation: str
    max_position_embeddings: int
    rms_norm_eps: float
    pad_token_id: int | None
    eos_token_id: int | list | None
    bos_token_id: int | None
    tie_word_embeddings: bool
    rope_parameters: dict
    attention_bias: bool
    sliding_window: int  # in-memory value: already halved (+1) when use_bidirectional_attention == "all"
    layer_types: tuple
    final_logit_softcapping: float
    use_bidirectional_attention: str | None
    num_experts: int
    top_k_experts: int
    moe_intermediate_size: int
    per_layer_config: dict  # {layer index: {"head_dim": .., "num_key_value_heads": ..}}
    layers: tuple = field(repr=False)  # one LayerSpec per layer


@dataclass(frozen=True)
class Config:
    text_config: TextConfig
    canvas_length: int
    boi_token_id: int | None
    eoi_token_id: int | None
    image_token_id: int | None
    tie_word_embeddings: bool
    vision_config: dict | None


def _int(d, key, minimum=1):
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ConfigError(f"config: `{key}` must be an integer >= {minimum}, got {v!r}")
    return v


def _layer_types(d) -> list:
    n = d["num_hidden_layers"]
    types = d["layer_types"]
    if types is None:  # the reference's default pattern: 5 sliding layers, then 1 full
        types = [SLIDING if (i + 1) % 6 else FULL for i in range(n)]
    if not isinstance(types, list) or len(types) != n:
        raise ConfigError(f"config: `layer_types` must list {n} entries (num_hidden_layers), got {types!r}")
    for i, t in enumerate(types):
        if t not in (SLIDING, FULL):
            raise ConfigError(f"config: layer {i} has unknown layer type {t!r}; expected {SLIDING!r} or {FULL!r}")
    types = list(types)
    if types[-1] != FULL:
        warnings.warn(f"config: the last layer must use {FULL!r}, got {types[-1]!r}; forcing it, as the reference does")
        types[-1] = FULL
    return types


def _per_layer_config(d, types) -> dict:
    """Resolve per-layer head_dim / KV heads from either serialized form."""
    if "per_layer_config" in d and d["per_layer_config"] is not None:
        raw = d["per_layer_config"]
        if not isinstance(raw, dict):
            raise ConfigError(f"config: `per_layer_config` must be a mapping, got {type(raw).__name__}")
        out = {}
        for key, overrides in raw.items():
            try:
                i = int(key)  # save_pretrained zero-pads the keys ("05")
            except (TypeError, ValueError):
                raise ConfigError(f"config: `per_layer_config` key {key!r} is not a layer index") from None
            if not 0 <= i < len(types):
                raise ConfigError(f"config: `per_layer_config` names layer {i}, but there are {len(types)} layers")
            if not isinstance(overrides, dict):
                raise ConfigError(f"config: `per_layer_config[{key!r}]` must be a mapping")
            unknown = set(overrides) - {"head_dim", "num_key_value_heads"}
            if unknown:
                raise ConfigError(f"config: `per_layer_config[{key!r}]` overrides unsupported keys {sorted(unknown)}")
            out[i] = dict(overrides)
        return out
    global_head_dim = d.get("global_head_dim", 512)
    overrides = {"head_dim": global_head_dim}
    if d.get("num_global_key_value_heads") is not None:
        overrides["num_key_value_heads"] = d["num_global_key_value_heads"]
    return {i: dict(overrides) for i, t in enumerate(types) if t == FULL}


def _rope_parameters(d, types) -> dict:
    rp = d["rope_parameters"]
    if rp is None:
        rp = DEFAULT_ROPE_PARAMETERS
    if not isinstance(rp, dict):
        raise ConfigError(f"config: `rope_parameters` must be a mapping per layer type, got {rp!r}")
    for t in set(types):
        p = rp.get(t)
        if not isinstance(p, dict):
            raise ConfigError(f"config: `rope_parameters` has no entry for layer type {t!r}")
        if p.get("rope_type") not in ROPE_TYPES:
            raise ConfigError(f"config: unknown RoPE type {p.get('rope_type')!r} for {t!r}; supported: {ROPE_TYPES}")
        theta = p.get("rope_theta")
        if not isinstance(theta, (int, float)) or isinstance(theta, bool) or not theta > 0:
            raise ConfigError(f"config: `rope_theta` for {t!r} must be a positive number, got {theta!r}")
        prf = p.get("partial_rotary_factor", 1.0)
        if not isinstance(prf, (int, float)) or not 0 < prf <= 1:
            raise ConfigError(f"config: `partial_rotary_factor` for {t!r} must be in (0, 1], got {prf!r}")
        if p["rope_type"] == "default" and prf != 1.0:
            # the reference shrinks cos/sin for this case and then fails to broadcast them
            raise ConfigError(f"config: default RoPE with partial_rotary_factor {prf} is not supported ({t!r})")
    return rp


def parse_text_config(raw: dict) -> TextConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"config: `text_config` must be a mapping, got {type(raw).__name__}")
    d = {**TEXT_DEFAULTS, **raw}
    for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "head_dim", "max_position_embeddings"):
        _int(d, key)
    for key in ("num_experts", "top_k_experts", "moe_intermediate_size"):
        if d[key] is None:
            raise ConfigError(f"config: `{key}` is required (every DiffusionGemma layer has a mixture of experts)")
        _int(d, key)
    if d["top_k_experts"] > d["num_experts"]:
        raise ConfigError(f"config: top_k_experts {d['top_k_experts']} > num_experts {d['num_experts']}")
    if d["hidden_activation"] not in ACTIVATIONS:
        raise ConfigError(f"config: unsupported hidden_activation {d['hidden_activation']!r}; supported: {ACTIVATIONS}")
    if d["attention_bias"]:
        raise ConfigError("config: attention_bias=True is not supported (DiffusionGemma has no attention biases)")
    if d["use_bidirectional_attention"] not in (None, "vision", "all"):
        raise ConfigError(f"config: unknown use_bidirectional_attention {d['use_bidirectional_attention']!r}")
    eps = d["rms_norm_eps"]
    if not isinstance(eps, (int, float)) or not eps > 0:
        raise ConfigError(f"config: `rms_norm_eps` must be > 0, got {eps!r}")
    cap = d["final_logit_softcapping"]
    if isinstance(cap, bool) or not (isinstance(cap, (int, float)) and cap > 0):  # the LM head always divides by it
        raise ConfigError(f"config: `final_logit_softcapping` must be a number > 0, got {cap!r}")

    window = _int(d, "sliding_window")
    if d["use_bidirectional_attention"] == "all":
        window = window // 2 + 1  # the reference's in-memory value (exclusive bound for flash attention)
    if window < 2:
        # a sliding cache keeps the last window - 1 positions; the reference slices [-0:] for window 1 and so
        # keeps every position, which contradicts its own masks: refuse instead of copying that
        raise ConfigError(f"config: sliding_window {d['sliding_window']} gives an in-memory window of {window}; "
                          "it must be at least 2")

    types = _layer_types(d)
    per_layer = _per_layer_config(d, types)
    rope = _rope_parameters(d, types)
    heads = d["num_attention_heads"]
    layers = []
    for i, t in enumerate(types):
        o = per_layer.get(i, {})
        head_dim = o.get("head_dim", d["head_dim"])
        kv = o.get("num_key_value_heads", d["num_key_value_heads"])
        for name, v in (("head_dim", head_dim), ("num_key_value_heads", kv)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"config: layer {i}: `{name}` must be a positive integer, got {v!r}")
        if head_dim % 2:
            raise ConfigError(f"config: layer {i}: head_dim {head_dim} must be even for RoPE")
        if heads % kv:
            raise ConfigError(f"config: layer {i}: num_attention_heads {heads} is not divisible by "
                              f"num_key_value_heads {kv}")
        p = rope[t]
        layers.append(LayerSpec(t, head_dim, kv, p["rope_type"], float(p["rope_theta"]),
                                float(p.get("partial_rotary_factor", 1.0)), float(p.get("factor", 1.0))))
    # the reference builds one RoPE table per layer type: layers of a type must agree on head_dim
    for t in set(types):
        dims = {spec.head_dim for spec in layers if spec.layer_type == t}
        if len(dims) > 1:
            raise ConfigError(f"config: layers of type {t!r} have different head_dim {sorted(dims)}")

    return TextConfig(
        vocab_size=d["vocab_size"], hidden_size=d["hidden_size"], intermediate_size=d["intermediate_size"],
        num_hidden_layers=d["num_hidden_layers"], num_attention_heads=heads,
        num_key_value_heads=d["num_key_value_heads"], head_dim=d["head_dim"],
        hidden_activation=d["hidden_activation"], max_position_embeddings=d["max_position_embeddings"],
        rms_norm_eps=float(eps), pad_token_id=d["pad_token_id"], eos_token_id=d["eos_token_id"],
        bos_token_id=d["bos_token_id"], tie_word_embeddings=bool(d["tie_word_embeddings"]),
        rope_parameters=rope, attention_bias=False, sliding_window=window, layer_types=tuple(types),
        final_logit_softcapping=float(cap),
        use_bidirectional_attention=d["use_bidirectional_attention"], num_experts=d["num_experts"],
        top_k_experts=d["top_k_experts"], moe_intermediate_size=d["moe_intermediate_size"],
        per_layer_config=per_layer, layers=tuple(layers),
    )


def parse_config(raw: dict) -> Config:
    """A `config.json` dict (model_type "diffusion_gemma") -> Config."""
    if not isinstance(raw, dict):
        raise ConfigError(f"config: expected a JSON object, got {type(raw).__name__}")
    model_type = raw.get("model_type", "diffusion_gemma")
    if model_type != "diffusion_gemma":
        raise ConfigError(f"config: model_type {model_type!r} is not 'diffusion_gemma'")
    text = parse_text_config(raw.get("text_config") or {})
    canvas = raw.get("canvas_length", 256)
    if isinstance(canvas, bool) or not isinstance(canvas, int) or canvas < 1:
        raise ConfigError(f"config: `canvas_length` must be a positive integer, got {canvas!r}")
    if raw.get("tie_word_embeddings", True) is False or not text.tie_word_embeddings:
        raise ConfigError("config: tie_word_embeddings=False is not supported: DiffusionGemma ties encoder, "
                          "decoder and LM head to one embedding")
    return Config(text_config=text, canvas_length=canvas, boi_token_id=raw.get("boi_token_id", 255_999),
                  eoi_token_id=raw.get("eoi_token_id", 258_882), image_token_id=raw.get("image_token_id", 258_880),
                  tie_word_embeddings=True, vision_config=raw.get("vision_config"))


# ---------------------------------------------------------------------------------------------
# generation_config.json


GENERATION_DEFAULTS = {  # DiffusionGemmaGenerationConfig._get_default_generation_params
    "max_new_tokens": 256,
    "max_denoising_steps": 48,
    "entropy_bound": 0.1,
    "t_min": 0.4,
    "t_max": 0.8,
    "stability_threshold": 1,
    "confidence_threshold": 0.005,
}


@dataclass(frozen=True)
class GenerationConfig:
    max_new_tokens: int
    max_denoising_steps: int
    entropy_bound: float  # from sampler_config {"_cls_name": "EntropyBoundSamplerConfig", "entropy_bound": ..}
    t_min: float
    t_max: float
    stability_threshold: int
    confidence_threshold: float
    eos_token_id: tuple  # () when none
    pad_token_id: int | None
    bos_token_id: int | None


def parse_generation_config(raw: dict | None) -> GenerationConfig:
    """A `generation_config.json` dict (or None) -> GenerationConfig. Null or missing sampler entries
    take the reference's defaults; missing special tokens stay unset, as in the reference."""
    raw = dict(raw or {})
    if not isinstance(raw, dict):
        raise ConfigError("generation_config: expected a JSON object")
    sampler = raw.get("sampler_config")
    if sampler is not None:
        if not isinstance(sampler, dict):
            raise ConfigError(f"generation_config: `sampler_config` must be an object, got {sampler!r}")
        name = sampler.get("_cls_name", "EntropyBoundSamplerConfig")
        if name != "EntropyBoundSamplerConfig":
            raise ConfigError(f"generation_config: unknown sampler {name!r}; tinydg has the EntropyBoundSampler")
        raw["entropy_bound"] = sampler.get("entropy_bound")
    values = {k: (raw.get(k) if raw.get(k) is not None else v) for k, v in GENERATION_DEFAULTS.items()}

    # Like the reference, special tokens come from generation_config.json only: transformers never copies
    # them from config.json for this model, so a file without them generates without EOS stopping or pad.
    eos = raw.get("eos_token_id")
    eos = () if eos is None else tuple(eos) if isinstance(eos, (list, tuple)) else (eos,)
    cfg = GenerationConfig(eos_token_id=eos, pad_token_id=raw.get("pad_token_id"),
                           bos_token_id=raw.get("bos_token_id"), **values)
    validate_generation_config(cfg)
    return cfg


def validate_generation_config(g: GenerationConfig) -> None:
    """The reference's rules (DiffusionGemmaGenerationConfig.validate and the sampler's checks)."""
    if isinstance(g.max_denoising_steps, bool) or not isinstance(g.max_denoising_steps, int) \
            or g.max_denoising_steps <= 0:
        raise ConfigError(f"`max_denoising_steps` must be a positive integer, got {g.max_denoising_steps!r}")
    if isinstance(g.max_new_tokens, bool) or not isinstance(g.max_new_tokens, int) or g.max_new_tokens <= 0:
        raise ConfigError(f"`max_new_tokens` must be a positive integer, got {g.max_new_tokens!r}")
    if not g.t_min >= 0:
        raise ConfigError(f"`t_min` must be >= 0, got {g.t_min!r}")
    if not g.t_max >= 0:
        raise ConfigError(f"`t_max` must be >= 0, got {g.t_max!r}")
    if not g.t_max > g.t_min:
        raise ConfigError(f"`t_max` must be > `t_min`, got t_max={g.t_max!r}, t_min={g.t_min!r}")
    if not (isinstance(g.entropy_bound, (int, float)) and g.entropy_bound > 0 and math.isfinite(g.entropy_bound)):
        raise ConfigError(f"`entropy_bound` must be a positive number, got {g.entropy_bound!r}")
    if isinstance(g.stability_threshold, bool) or not isinstance(g.stability_threshold, int) \
            or g.stability_threshold < 0:
        raise ConfigError(f"`stability_threshold` must be an integer >= 0, got {g.stability_threshold!r}")
    if not (isinstance(g.confidence_threshold, float) and g.confidence_threshold > 0):
        raise ConfigError(f"`confidence_threshold` must be a float > 0, got {g.confidence_threshold!r}")


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{os.path.basename(path)} not found in {os.path.dirname(path) or '.'}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None


def load_config(folder) -> tuple[Config, GenerationConfig]:
    """Read `config.json` and (if present) `generation_config.json` from a checkpoint folder."""
    config = parse_config(_read_json(os.path.join(folder, "config.json")))
    gen_path = os.path.join(folder, "generation_config.json")
    gen_raw = _read_json(gen_path) if os.path.exists(gen_path) else None
    return config, parse_generation_config(gen_raw)
