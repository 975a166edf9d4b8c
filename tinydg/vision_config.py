"""The vision tower's configuration: `vision_config` in config.json, and the image budget in the
optional `processor_config.json` beside it.

`vision_config` is transformers' `Gemma4VisionConfig` (transformers 5.23,
models/gemma4/configuration_gemma4.py), which DiffusionGemma reuses for its vision tower
`model.encoder.vision_tower` and for the projector `model.encoder.embed_vision` into the language
model (their weights: tinydg.weights.vision_weight_shapes). Field names are the JSON keys. As in the
reference:

- keys missing from vision_config take Gemma4VisionConfig's *class* defaults (16 layers of width 768),
  which are NOT the real checkpoint's values (27 layers of width 1152: weights/real/config.json);
- `rope_parameters` null means {"rope_type": "axial", "rope_theta": 100.0}, and a missing entry takes
  its value from there. The checkpoint stores rope_type "default", which the reference reads as "axial"
  (modeling_rope_utils, for a config whose default RoPE type is axial). Both mean 2-D axial RoPE: the
  first half of each head turns with the patch's column, the second half with its row;
- `rms_norm_eps` is also the epsilon of the projector's pre-norm (DiffusionGemmaMultimodalEmbedder);
- attention_bias, attention_dropout, max_position_embeddings, initializer_range, and the extra keys
  global_head_dim and dtype are read by none of the reference's vision code, nor by tinydg;
- `default_output_length` (280 in the real checkpoint) is read by no code of the reference either: the
  number of soft tokens of an image follows from its size, within the budget of processor_config.json.
  It is kept as it is (Google's JAX implementation derives its pooling from it).

Unlike the reference, which builds a default, randomly initialized tower when config.json has no
vision_config, tinydg reads such a checkpoint as a text-only model.

Beyond the reference's rules, every value is checked for its type and range (tinydg.config_values,
VISION_SIZE_LIMITS), and what the tower could not compute is refused, each with a ConfigError naming
the field: use_clipped_linears=true (clamping buffers around every linear, which Gemma 4's small models
have and DiffusionGemma has not); a head_dim that is not a multiple of 4 (2-D RoPE turns each half of a
head by rotate_half; the reference fails in its first forward); num_attention_heads not a multiple of
num_key_value_heads; a RoPE type other than axial; an activation other than gelu_pytorch_tanh; an
output_proj_dims other than hidden_size (the reference's projector would expect that many features
from a tower that makes hidden_size).

A trap, accepted on purpose: pooling_kernel_size 1 (the tiny models in weights/ have it). The
reference's pooler then returns the padding patches in place of the image's, so its image features
can only be compared with pooling_kernel_size >= 2.
"""

import os
from dataclasses import dataclass

from . import files
from .config_values import FLOAT32_MAX, FLOAT32_TINY, boolean, integer, real
from .errors import CheckpointError, ConfigError, is_int, shown
from .image_processor import SUPPORTED_SOFT_TOKENS
from .weights import count_vision_parameters

# Gemma4VisionConfig's class defaults, for keys a vision_config may omit.
VISION_DEFAULTS = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 16,
    "num_attention_heads": 12,
    "num_key_value_heads": 12,
    "head_dim": 64,
    "hidden_activation": "gelu_pytorch_tanh",
    "rms_norm_eps": 1e-6,
    "rope_parameters": None,
    "pooling_kernel_size": 3,
    "patch_size": 16,
    "position_embedding_size": 10 * 1024,
    "use_clipped_linears": False,
    "standardize": False,
    "default_output_length": None,  # not a field of the class: an extra key of the real checkpoint
}
DEFAULT_ROPE = {"rope_type": "axial", "rope_theta": 100.0}  # Gemma4VisionConfig.default_rope_type, default_theta
ROPE_TYPES = ("axial", "default")  # both 2-D axial RoPE (see above)
ACTIVATIONS = ("gelu_pytorch_tanh",)

# Upper bounds, as tinydg.config.SIZE_LIMITS for the text model: the weight table is laid out from these
# numbers before any tensor is read. Far above the real checkpoint's values, in brackets; every product of
# them in the weight table stays inside int64, and MAX_VISION_PARAMETERS bounds their combination.
VISION_SIZE_LIMITS = {
    "hidden_size": 2**16,  # [1152]
    "intermediate_size": 2**18,  # [4304]
    "num_hidden_layers": 2**10,  # [27]
    "num_attention_heads": 2**10,  # [16]
    "num_key_value_heads": 2**10,  # [16]
    "head_dim": 2**13,  # [72]
    "patch_size": 2**10,  # [16]
    "pooling_kernel_size": 2**10,  # [3]
    "position_embedding_size": 2**24,  # [10240]
}
MAX_OUTPUT_LENGTH = 2**24  # default_output_length [280]
MAX_VISION_PARAMETERS = 10**11  # tower and projector (tinydg.weights.count_vision_parameters) [5.7e8]


@dataclass(frozen=True)
class VisionConfig:
    hidden_size: int
    intermediate_size: int  # the GeGLU MLP's width
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int  # a multiple of 4: half of it per axis, each half turned by rotate_half
    hidden_activation: str
    rms_norm_eps: float
    rope_parameters: dict  # {"rope_type": "axial", "rope_theta": float}
    pooling_kernel_size: int  # k: k x k patches average into one soft token
    patch_size: int  # p: an image is cut into p x p pixel patches
    position_embedding_size: int  # rows of the learned x and y position tables: no patch grid side may exceed it
    use_clipped_linears: bool  # always False: refused when set
    standardize: bool  # soft tokens become (x - std_bias) * std_scale
    default_output_length: int | None  # unused, as in the reference (see above)


def _sizes(d) -> dict:
    """The integer sizes of the vision config, each within VISION_SIZE_LIMITS."""
    sizes = {key: integer(d[key], f"vision_config.{key}", 1, limit) for key, limit in VISION_SIZE_LIMITS.items()}
    if sizes["head_dim"] % 4:
        raise ConfigError(f"config: `vision_config.head_dim` {sizes['head_dim']} must be a multiple of 4: 2-D RoPE "
                          "turns each half of a head (one half per image axis) by rotate_half")
    if sizes["num_attention_heads"] % sizes["num_key_value_heads"]:
        raise ConfigError(f"config: `vision_config.num_attention_heads` {sizes['num_attention_heads']} is not "
                          f"divisible by `vision_config.num_key_value_heads` {sizes['num_key_value_heads']}")
    return sizes


def _rope_parameters(value, position_embedding_size) -> dict:
    """{"rope_type": "axial", "rope_theta": theta} from the stored rope_parameters (null, or a mapping)."""
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise ConfigError(f"config: `vision_config.rope_parameters` must be a mapping or null, got {shown(value)}")
    rope_type = value.get("rope_type", value.get("type", DEFAULT_ROPE["rope_type"]))  # "type": the legacy key
    if rope_type not in ROPE_TYPES:
        raise ConfigError(f"config: `vision_config.rope_parameters.rope_type` must be one of {ROPE_TYPES} (2-D axial "
                          f"RoPE), got {shown(rope_type)}")
    theta = real(value.get("rope_theta", DEFAULT_ROPE["rope_theta"]), "vision_config.rope_parameters.rope_theta",
                 at_least=FLOAT32_TINY)
    # the angles are position * theta**(-2j/d) in float32, positions below position_embedding_size
    if position_embedding_size * max(1.0, 1.0 / theta) > FLOAT32_MAX:
        raise ConfigError(f"config: `vision_config.rope_parameters.rope_theta` {theta:g} turns patch positions up "
                          f"to {position_embedding_size} into angles beyond float32")
    return {"rope_type": "axial", "rope_theta": theta}


def _check_choices(d, hidden_size):
    model_type = d.get("model_type", "gemma4_vision")
    if model_type != "gemma4_vision":
        raise ConfigError(f"config: `vision_config.model_type` {shown(model_type)} is not 'gemma4_vision', "
                          "the vision tower DiffusionGemma uses")
    if d["hidden_activation"] not in ACTIVATIONS:
        raise ConfigError(f"config: unsupported `vision_config.hidden_activation` {shown(d['hidden_activation'])}; "
                          f"supported: {ACTIVATIONS}")
    if boolean(d["use_clipped_linears"], "vision_config.use_clipped_linears"):
        raise ConfigError("config: `vision_config.use_clipped_linears`=true is not supported: DiffusionGemma's "
                          "vision tower has no clamping buffers around its linears")
    if "output_proj_dims" in d and d["output_proj_dims"] != hidden_size:
        raise ConfigError(f"config: `vision_config.output_proj_dims` {shown(d['output_proj_dims'])} is not supported: "
                          f"the projector reads the tower's hidden_size {hidden_size} features")


def parse_vision_config(raw, text_hidden_size) -> VisionConfig:
    """config.json's `vision_config` mapping -> VisionConfig, for a text model of hidden size
    text_hidden_size (the projector's output). None (a text-only model) is handled by the caller."""
    if not isinstance(raw, dict):
        raise ConfigError(f"config: `vision_config` must be a mapping or null, got {shown(raw)}")
    d = {**VISION_DEFAULTS, **raw}
    sizes = _sizes(d)
    _check_choices(d, sizes["hidden_size"])
    output_length = d["default_output_length"]
    if output_length is not None:
        output_length = integer(output_length, "vision_config.default_output_length", 1, MAX_OUTPUT_LENGTH)
    vision = VisionConfig(
        **sizes, hidden_activation=d["hidden_activation"],
        # the reference adds eps to mean(x^2) (Gemma4RMSNorm), as in the text model
        rms_norm_eps=real(d["rms_norm_eps"], "vision_config.rms_norm_eps", at_least=FLOAT32_TINY, at_most=1.0),
        rope_parameters=_rope_parameters(d["rope_parameters"], sizes["position_embedding_size"]),
        use_clipped_linears=False, standardize=boolean(d["standardize"], "vision_config.standardize"),
        default_output_length=output_length,
    )
    total = sum(count_vision_parameters(vision, text_hidden_size))
    if total > MAX_VISION_PARAMETERS:
        raise ConfigError(f"config: these vision_config sizes make {total:.3g} vision parameters, more than tinydg's "
                          f"limit of {MAX_VISION_PARAMETERS:.0e} (the real model has 5.7e+08)")
    return vision


# ---------------------------------------------------------------------------------------------
# processor_config.json: how many soft tokens an image (a video frame) may become

PROCESSOR_FILE = "processor_config.json"
BLOCKS = ("image_processor", "video_processor")
# The budgets Gemma4ImageProcessor and Gemma4VideoProcessor accept are tinydg.image_processor's
# SUPPORTED_SOFT_TOKENS; their class defaults, which the released checkpoint uses, are 280 per image and
# 70 per video frame.
DEFAULT_SOFT_TOKENS = {"image_processor": 280, "video_processor": 70}


@dataclass(frozen=True)
class MediaProcessor:
    """One block of processor_config.json: how an image (or a video frame) becomes soft tokens. It is
    resized to at most max_soft_tokens * pooling_kernel_size**2 patches of patch_size pixels a side,
    keeping its aspect ratio; every k x k patches become one soft token."""
    patch_size: int
    pooling_kernel_size: int
    max_soft_tokens: int


@dataclass(frozen=True)
class ProcessorConfig:
    image_processor: MediaProcessor
    video_processor: MediaProcessor
    path: str | None  # the processor_config.json read; None: there was none, and these are the defaults


def _block(raw, key, vision, where) -> MediaProcessor:
    """One block of processor_config.json (absent: every value its default), checked against the tower."""
    block = raw.get(key)
    block = {} if block is None else block
    if not isinstance(block, dict):
        raise CheckpointError(f"{where}: `{key}` must be an object, got {shown(block)}")
    values = {}
    for name in ("patch_size", "pooling_kernel_size"):
        value = block.get(name, getattr(vision, name))
        if not (is_int(value) and value == getattr(vision, name)):
            raise CheckpointError(f"{where}: `{key}.{name}` is {shown(value)}, but config.json's "
                                  f"vision_config.{name} is {getattr(vision, name)}: the vision tower could not "
                                  "read what this processor makes")
        values[name] = int(value)
    budget = block.get("max_soft_tokens", DEFAULT_SOFT_TOKENS[key])
    if not (is_int(budget) and budget in SUPPORTED_SOFT_TOKENS):
        raise CheckpointError(f"{where}: `{key}.max_soft_tokens` must be one of {SUPPORTED_SOFT_TOKENS}, as in the "
                              f"reference, got {shown(budget)}")
    return MediaProcessor(max_soft_tokens=int(budget), **values)


def parse_processor_config(raw, vision: VisionConfig, where=PROCESSOR_FILE) -> ProcessorConfig:
    """A processor_config.json dict -> ProcessorConfig. As in the reference, a key a block omits takes its
    default (the budget 280 per image, 70 per video frame; the tower's patch_size and pooling_kernel_size),
    and so does a block the file omits (some Gemma 4 checkpoints have no video_processor). Any problem is
    a CheckpointError naming the file (`where`) and the field."""
    if not isinstance(raw, dict):
        raise CheckpointError(f"{where}: expected a JSON object, got {type(raw).__name__}")
    blocks = {key: _block(raw, key, vision, where) for key in BLOCKS}
    return ProcessorConfig(**blocks, path=where)


def default_processor_config(vision: VisionConfig) -> ProcessorConfig:
    """The budget when a checkpoint has no processor_config.json: 280 soft tokens per image and 70 per
    video frame (the processors' class defaults, also the released checkpoint's values)."""
    return parse_processor_config({}, vision, where=None)


def load_processor_config(folder, vision: VisionConfig) -> ProcessorConfig:
    """Read `processor_config.json` from a checkpoint folder, or the defaults when there is none."""
    path = os.path.join(folder, PROCESSOR_FILE)
    raw = files.read_json(path, files.CONFIG_MAX_BYTES, CheckpointError, missing_ok=True)
    return default_processor_config(vision) if raw is None else parse_processor_config(raw, vision, path)
