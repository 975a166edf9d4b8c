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
- `final_logit_softcapping` is not serialized by the reference when it is the default, 30.0;
- `vision_config` is parsed by tinydg.vision_config (no vision_config: a text-only model); the
  image token ids `boi_token_id`, `eoi_token_id`, `image_token_id` sit at the top level, beside it.

Beyond the reference's rules, every value tinydg uses is checked for its type (an integer where the
reference wants one, never a bool; a finite number where it wants a float) and its range, so that a
damaged or hostile file gets a ConfigError naming the field instead of a crash, a NaN or an absurd
allocation later. The files themselves are read by tinydg.files (regular files only, size-capped).
"""

import dataclasses
import os
import warnings
from dataclasses import dataclass, field

import numpy as np

from . import files
from .config_values import FLOAT32_MAX, FLOAT32_TINY, boolean, integer, real
from .errors import ConfigError, is_int, shown
from .sampler import temperature
from .vision_config import VisionConfig, parse_vision_config
from .weights import count_parameters

SLIDING, FULL = "sliding_attention", "full_attention"
ROPE_TYPES = ("default", "proportional")
ACTIVATIONS = ("gelu_pytorch_tanh",)

DEFAULT_ROPE_PARAMETERS = {
    SLIDING: {"rope_type": "default", "rope_theta": 10_000.0},
    FULL: {"rope_type": "proportional", "partial_rotary_factor": 0.25, "rope_theta": 1_000_000.0},
}

# Upper bounds on the sizes in config.json. The model is laid out from these numbers before any
# tensor is read (the weight table, then [B, C, V] logits and [B, T, D] activations per call), so a
# damaged file must not be able to ask for absurd memory or time. Each bound is far above the real
# DiffusionGemma (weights/real/config.json, in brackets); they also keep every product of sizes in the
# weight table inside int64. MAX_PARAMETERS and MAX_CANVAS_LOGITS then bound the combinations.
SIZE_LIMITS = {
    "vocab_size": 2**24,  # [262144]
    "hidden_size": 2**16,  # [2816]
    "intermediate_size": 2**18,  # [2112]
    "moe_intermediate_size": 2**18,  # [704]
    "num_hidden_layers": 2**10,  # [30]
    "num_attention_heads": 2**10,  # [16]
    "num_key_value_heads": 2**10,  # [8, and 2 in full-attention layers]
    "head_dim": 2**13,  # [256, and 512 in full-attention layers]
    "num_experts": 2**12,  # [128]
    "top_k_experts": 2**12,  # [8]
    "max_position_embeddings": 2**24,  # [262144]; RoPE turns positions into float32, exact up to 2**24
    "sliding_window": 2**24,  # [1024]
    "canvas_length": 2**12,  # [256]; the decoder's attention scores hold [B, H, C, S + C] float32
}
MAX_PARAMETERS = 10**12  # text parameters of the weight table (tinydg.weights.count_parameters) [25.2e9]
MAX_CANVAS_LOGITS = 2**32  # canvas_length * vocab_size, the float32 logits of one canvas row: 16 GiB [2**26]

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
    boi_token_id: int | None  # <|image>, before an image's soft tokens [255999]
    eoi_token_id: int | None  # <image|>, after them [258882]
    image_token_id: int | None  # <|image|>, the placeholder each soft token replaces [258880]
    tie_word_embeddings: bool
    vision_config: VisionConfig | None  # None: a text-only model


# --- values -----------------------------------------------------------------------------------------

def _size(d, key):
    """A size from the text config: a positive integer within SIZE_LIMITS."""
    return integer(d[key], key, 1, SIZE_LIMITS[key])


def _token_ids(value, name, allow_list=False):
    """config.json's special token ids: an integer or null (eos also a list of integers). They are only
    recorded: generation takes its ids from generation_config.json, as the reference does."""
    ok = value is None or is_int(value) or (allow_list and isinstance(value, list) and all(map(is_int, value)))
    if not ok:
        kind = "an integer, a list of integers" if allow_list else "an integer"
        raise ConfigError(f"config: `{name}` must be {kind} or null, got {shown(value)}")
    return value


# --- config.json ------------------------------------------------------------------------------------

def _layer_types(d) -> list:
    n = d["num_hidden_layers"]
    types = d["layer_types"]
    if types is None:  # the reference's default pattern: 5 sliding layers, then 1 full
        types = [SLIDING if (i + 1) % 6 else FULL for i in range(n)]
    if not isinstance(types, list) or len(types) != n:
        raise ConfigError(f"config: `layer_types` must list {n} entries (num_hidden_layers), got {shown(types)}")
    for i, t in enumerate(types):
        if t not in (SLIDING, FULL):
            raise ConfigError(f"config: layer {i} has unknown layer type {shown(t)}; expected {SLIDING!r} or {FULL!r}")
    types = list(types)
    if types[-1] != FULL:
        warnings.warn(f"config: the last layer must use {FULL!r}, got {types[-1]!r}; forcing it, as the reference does")
        types[-1] = FULL
    return types


def _layer_overrides(overrides, where) -> dict:
    """One layer's {"head_dim", "num_key_value_heads"} overrides, checked like the base values."""
    if not isinstance(overrides, dict):
        raise ConfigError(f"config: `{where}` must be a mapping, got {shown(overrides)}")
    unknown = set(overrides) - {"head_dim", "num_key_value_heads"}
    if unknown:
        raise ConfigError(f"config: `{where}` overrides unsupported keys {shown(sorted(map(str, unknown)))}")
    return {k: integer(v, f"{where}.{k}", 1, SIZE_LIMITS[k]) for k, v in overrides.items()}


def _per_layer_config(d, types) -> dict:
    """Resolve per-layer head_dim / KV heads from either serialized form."""
    if "per_layer_config" in d and d["per_layer_config"] is not None:
        raw = d["per_layer_config"]
        if not isinstance(raw, dict):
            raise ConfigError(f"config: `per_layer_config` must be a mapping, got {shown(raw)}")
        out = {}
        for key, overrides in raw.items():
            try:
                i = int(key)  # save_pretrained zero-pads the keys ("05")
            except (TypeError, ValueError, OverflowError):
                raise ConfigError(f"config: `per_layer_config` key {shown(key)} is not a layer index") from None
            if not 0 <= i < len(types):
                raise ConfigError(f"config: `per_layer_config` names layer {shown(i)}, "
                                  f"but there are {len(types)} layers")
            if i in out:
                raise ConfigError(f"config: `per_layer_config` names layer {i} twice")
            out[i] = _layer_overrides(overrides, f"per_layer_config[{shown(key)}]")
        return out
    overrides = {"head_dim": integer(d.get("global_head_dim", 512), "global_head_dim", 1, SIZE_LIMITS["head_dim"])}
    if d.get("num_global_key_value_heads") is not None:
        overrides["num_key_value_heads"] = integer(d["num_global_key_value_heads"], "num_global_key_value_heads", 1,
                                                   SIZE_LIMITS["num_key_value_heads"])
    return {i: dict(overrides) for i, t in enumerate(types) if t == FULL}


def _rope_parameters(d, types) -> dict:
    rp = d["rope_parameters"]
    if rp is None:
        rp = DEFAULT_ROPE_PARAMETERS
    if not isinstance(rp, dict):
        raise ConfigError(f"config: `rope_parameters` must be a mapping per layer type, got {shown(rp)}")
    for t in sorted(set(types)):
        p = rp.get(t)
        if not isinstance(p, dict):
            raise ConfigError(f"config: `rope_parameters` has no entry for layer type {t!r}")
        _rope_entry(p, t, d["max_position_embeddings"])
    return rp


def _rope_entry(p, t, max_positions):
    """One layer type's RoPE parameters; the reference reads rope_theta, partial_rotary_factor and (for
    proportional RoPE) factor (modeling_rope_utils._compute_proportional_rope_parameters)."""
    if p.get("rope_type") not in ROPE_TYPES:
        raise ConfigError(f"config: unknown RoPE type {shown(p.get('rope_type'))} for {t!r}; supported: {ROPE_TYPES}")
    theta = real(p.get("rope_theta"), f"rope_parameters.{t}.rope_theta", at_least=FLOAT32_TINY)
    prf = real(p.get("partial_rotary_factor", 1.0), f"rope_parameters.{t}.partial_rotary_factor", above=0,
               at_most=1)
    factor = real(p.get("factor", 1.0), f"rope_parameters.{t}.factor", at_least=FLOAT32_TINY)
    if p["rope_type"] == "default":
        if prf != 1.0:
            # the reference shrinks cos/sin for this case and then fails to broadcast them
            raise ConfigError(f"config: default RoPE with partial_rotary_factor {prf} is not supported ({t!r})")
        factor = 1.0  # unused by default RoPE (tinydg.rope.inv_freq), as in the reference
    # the angles are position * theta**(-2j/d) / factor in float32 (tinydg.rope), at most
    # max_positions * max(1, 1/theta) / factor: an infinite one would make cos and sin NaN
    if max_positions * max(1.0, 1.0 / theta) / factor > FLOAT32_MAX:
        raise ConfigError(f"config: RoPE for {t!r} (rope_theta {theta:g}, factor {factor:g}) turns positions up to "
                          f"max_position_embeddings {max_positions} into angles beyond float32")


def _layer_specs(d, types, per_layer, rope) -> list:
    heads = d["num_attention_heads"]
    layers = []
    for i, t in enumerate(types):
        o = per_layer.get(i, {})
        head_dim = o.get("head_dim", d["head_dim"])
        kv = o.get("num_key_value_heads", d["num_key_value_heads"])
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
    return layers


def _sliding_window(d) -> int:
    window = _size(d, "sliding_window")
    if d["use_bidirectional_attention"] == "all":
        window = window // 2 + 1  # the reference's in-memory value (exclusive bound for flash attention)
    if window < 2:
        # a sliding cache keeps the last window - 1 positions; the reference slices [-0:] for window 1 and so
        # keeps every position, which contradicts its own masks: refuse instead of copying that
        raise ConfigError(f"config: sliding_window {d['sliding_window']} gives an in-memory window of {window}; "
                          "it must be at least 2")
    return window


def _require_tied(value):
    if not boolean(value, "tie_word_embeddings"):
        raise ConfigError("config: tie_word_embeddings=False is not supported: DiffusionGemma ties encoder, "
                          "decoder and LM head to one embedding")


def _check_choices(d):
    if d["hidden_activation"] not in ACTIVATIONS:
        raise ConfigError(f"config: unsupported hidden_activation {shown(d['hidden_activation'])}; "
                          f"supported: {ACTIVATIONS}")
    if boolean(d["attention_bias"], "attention_bias"):
        raise ConfigError("config: attention_bias=True is not supported (DiffusionGemma has no attention biases)")
    if d["use_bidirectional_attention"] not in (None, "vision", "all"):
        raise ConfigError(f"config: unknown use_bidirectional_attention {shown(d['use_bidirectional_attention'])}")
    _require_tied(d["tie_word_embeddings"])


def parse_text_config(raw: dict) -> TextConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"config: `text_config` must be a mapping, got {type(raw).__name__}")
    d = {**TEXT_DEFAULTS, **raw}
    for key in ("num_experts", "top_k_experts", "moe_intermediate_size"):
        if d[key] is None:
            raise ConfigError(f"config: `{key}` is required (every DiffusionGemma layer has a mixture of experts)")
    sizes = {key: _size(d, key) for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                                            "num_attention_heads", "num_key_value_heads", "head_dim",
                                            "max_position_embeddings", "num_experts", "top_k_experts",
                                            "moe_intermediate_size")}
    d.update(sizes)  # NumPy integers (from a caller's dict) become Python ints
    if d["top_k_experts"] > d["num_experts"]:
        raise ConfigError(f"config: top_k_experts {d['top_k_experts']} > num_experts {d['num_experts']}")
    _check_choices(d)
    # the reference adds eps to mean(x^2) (DiffusionGemmaRMSNorm); its models use 1e-6, and an eps near the
    # activations' scale would silently flatten the normalization
    eps = real(d["rms_norm_eps"], "rms_norm_eps", at_least=FLOAT32_TINY, at_most=1.0)
    # the LM head always divides by the cap (DiffusionGemmaForBlockDiffusion): null is not allowed
    cap = real(d["final_logit_softcapping"], "final_logit_softcapping", at_least=FLOAT32_TINY)
    special = {key: _token_ids(d[key], key, allow_list=key == "eos_token_id")
               for key in ("pad_token_id", "eos_token_id", "bos_token_id")}
    window = _sliding_window(d)
    types = _layer_types(d)
    per_layer = _per_layer_config(d, types)
    rope = _rope_parameters(d, types)
    text = TextConfig(
        vocab_size=d["vocab_size"], hidden_size=d["hidden_size"], intermediate_size=d["intermediate_size"],
        num_hidden_layers=d["num_hidden_layers"], num_attention_heads=d["num_attention_heads"],
        num_key_value_heads=d["num_key_value_heads"], head_dim=d["head_dim"],
        hidden_activation=d["hidden_activation"], max_position_embeddings=d["max_position_embeddings"],
        rms_norm_eps=eps, tie_word_embeddings=True, rope_parameters=rope, attention_bias=False,
        sliding_window=window, layer_types=tuple(types), final_logit_softcapping=cap,
        use_bidirectional_attention=d["use_bidirectional_attention"], num_experts=d["num_experts"],
        top_k_experts=d["top_k_experts"], moe_intermediate_size=d["moe_intermediate_size"],
        per_layer_config=per_layer, layers=tuple(_layer_specs(d, types, per_layer, rope)), **special,
    )
    total, _ = count_parameters(text)
    if total > MAX_PARAMETERS:
        raise ConfigError(f"config: these sizes make {total:.3g} text parameters, more than tinydg's limit of "
                          f"{MAX_PARAMETERS:.0e} (the real model has 2.5e+10)")
    return text


def parse_config(raw: dict) -> Config:
    """A `config.json` dict (model_type "diffusion_gemma") -> Config."""
    if not isinstance(raw, dict):
        raise ConfigError(f"config: expected a JSON object, got {type(raw).__name__}")
    model_type = raw.get("model_type", "diffusion_gemma")
    if model_type != "diffusion_gemma":
        raise ConfigError(f"config: model_type {shown(model_type)} is not 'diffusion_gemma'")
    text_config = raw.get("text_config")
    text = parse_text_config({} if text_config is None else text_config)
    canvas = integer(raw.get("canvas_length", 256), "canvas_length", 1, SIZE_LIMITS["canvas_length"])
    if canvas * text.vocab_size > MAX_CANVAS_LOGITS:
        raise ConfigError(f"config: canvas_length {canvas} x vocab_size {text.vocab_size} logits per canvas is more "
                          f"than tinydg's limit of {MAX_CANVAS_LOGITS}")
    _require_tied(raw.get("tie_word_embeddings", True))
    vision = raw.get("vision_config")
    vision = None if vision is None else parse_vision_config(vision, text.hidden_size)
    # recorded, not checked against the vocabulary: the tiny models in weights/ keep the real ids beyond theirs
    ids = {key: _token_ids(raw.get(key, default), key)
           for key, default in (("boi_token_id", 255_999), ("eoi_token_id", 258_882), ("image_token_id", 258_880))}
    return Config(text_config=text, canvas_length=canvas, tie_word_embeddings=True, vision_config=vision, **ids)


# ---------------------------------------------------------------------------------------------
# generation_config.json


# Bounds on the settings whose cost grows with their value; the reference has none. The real checkpoint's
# values in brackets.
MAX_NEW_TOKENS = SIZE_LIMITS["max_position_embeddings"]  # more could not fit any model's positions [256]
MAX_DENOISING_STEPS = 2**16  # each step is a decoder forward, and generate keeps a count per step [48]
MAX_STABILITY_THRESHOLD = 1000  # the sampler keeps that many past drafts, [threshold, B, C] int64 [1]

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
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"generation_config: expected a JSON object, got {type(raw).__name__}")
    raw = dict(raw)
    sampler = raw.get("sampler_config")
    if sampler is not None:
        if not isinstance(sampler, dict):
            raise ConfigError(f"generation_config: `sampler_config` must be an object, got {shown(sampler)}")
        name = sampler.get("_cls_name", "EntropyBoundSamplerConfig")
        if name != "EntropyBoundSamplerConfig":
            raise ConfigError(f"generation_config: unknown sampler {shown(name)}; tinydg has the EntropyBoundSampler")
        raw["entropy_bound"] = sampler.get("entropy_bound")
    values = {k: (raw.get(k) if raw.get(k) is not None else v) for k, v in GENERATION_DEFAULTS.items()}

    # Like the reference, special tokens come from generation_config.json only: transformers never copies
    # them from config.json for this model, so a file without them generates without EOS stopping or pad.
    cfg = GenerationConfig(eos_token_id=raw.get("eos_token_id"), pad_token_id=raw.get("pad_token_id"),
                           bos_token_id=raw.get("bos_token_id"), **values)
    return validate_generation_config(cfg)


def validate_generation_config(g: GenerationConfig) -> GenerationConfig:
    """Check the settings with the reference's rules (DiffusionGemmaGenerationConfig.validate, the
    sampler's checks) and tinydg's bounds, and return them normalized: NumPy scalars become Python
    numbers, eos_token_id a tuple (from null, one id or a list). Token ids are checked against the
    vocabulary by check_token_ids, which needs the model's vocab_size."""
    t_min = real(g.t_min, "t_min", at_least=0.0, prefix="")
    t_max = real(g.t_max, "t_max", at_least=0.0, prefix="")
    if not t_max > t_min:
        raise ConfigError(f"`t_max` must be > `t_min`, got t_max={t_max!r}, t_min={t_min!r}")
    g = dataclasses.replace(
        g, t_min=t_min, t_max=t_max,
        max_new_tokens=integer(g.max_new_tokens, "max_new_tokens", 1, MAX_NEW_TOKENS, prefix=""),
        max_denoising_steps=integer(g.max_denoising_steps, "max_denoising_steps", 1, MAX_DENOISING_STEPS, prefix=""),
        stability_threshold=integer(g.stability_threshold, "stability_threshold", 0, MAX_STABILITY_THRESHOLD,
                                    prefix=""),
        # both are compared with float32 entropies in the sampler
        entropy_bound=real(g.entropy_bound, "entropy_bound", above=0.0, prefix=""),
        confidence_threshold=real(g.confidence_threshold, "confidence_threshold", above=0.0, prefix=""),
        eos_token_id=_eos_ids(g.eos_token_id),
        pad_token_id=_optional_id(g.pad_token_id, "pad_token_id"),
        bos_token_id=_optional_id(g.bos_token_id, "bos_token_id"),
    )
    _check_temperatures(g)
    return g


def _optional_id(value, name):
    if value is not None and not is_int(value):
        raise ConfigError(f"`{name}` must be an integer token id or null, got {shown(value)}")
    return None if value is None else int(value)


def _eos_ids(value) -> tuple:
    ids = () if value is None else tuple(value) if isinstance(value, (list, tuple)) else (value,)
    if not all(map(is_int, ids)):
        raise ConfigError(f"`eos_token_id` must be an integer token id, a list of them, or null, got {shown(value)}")
    return tuple(map(int, ids))


def _check_temperatures(g):
    """The sampler divides the logits by float32 temperatures from t_max (first step) down to its last
    step's (tinydg.sampler.temperature): they must be > 0 and finite once rounded to float32."""
    with np.errstate(over="ignore"):
        first = temperature(g.max_denoising_steps, g.max_denoising_steps, g.t_min, g.t_max)
        last = temperature(1, g.max_denoising_steps, g.t_min, g.t_max)
    if not (last > 0 and np.isfinite(first)):
        raise ConfigError(f"`t_min` {g.t_min!r} and `t_max` {g.t_max!r} give float32 temperatures from {first} "
                          f"down to {last}: they must lie in (0, inf)")


def check_token_ids(g: GenerationConfig, vocab_size: int) -> None:
    """eos, pad and bos ids are ids of the model's vocabulary [0, vocab_size): a pad id is written into
    the sequences, and an eos id outside the vocabulary could never be generated."""
    for name, ids in (("eos_token_id", g.eos_token_id), ("pad_token_id", (g.pad_token_id,)),
                      ("bos_token_id", (g.bos_token_id,))):
        for i in ids:
            if i is not None and not (is_int(i) and 0 <= i < vocab_size):
                raise ConfigError(f"`{name}` must hold token ids in [0, {vocab_size}) (the vocabulary), "
                                  f"got {shown(i)}")


def load_config(folder) -> tuple[Config, GenerationConfig]:
    """Read `config.json` and (if present) `generation_config.json` from a checkpoint folder; the
    generation config's token ids are checked against config.json's vocabulary."""
    config = parse_config(files.read_json(os.path.join(folder, "config.json"), files.CONFIG_MAX_BYTES, ConfigError))
    gen_raw = files.read_json(os.path.join(folder, "generation_config.json"), files.CONFIG_MAX_BYTES, ConfigError,
                              missing_ok=True)
    generation = parse_generation_config(gen_raw)
    check_token_ids(generation, config.text_config.vocab_size)
    return config, generation
