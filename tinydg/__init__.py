"""tinydg: DiffusionGemma, the text-diffusion language model, in readable NumPy.

    model = tinydg.load(path)                                   # a checkpoint folder (Hugging Face layout)
    hidden, cache = tinydg.encode(model, input_ids)             # causal encoder -> KV cache
    logits = tinydg.denoise(model, canvas_ids, cache)           # bidirectional decoder over [cache ; canvas]
"""

from .cache import KVCache
from .config import Config, GenerationConfig, TextConfig, load_config
from .errors import CheckpointError, ConfigError, InputError, TinyDGError
from .model import Model, denoise, encode, load

__all__ = ["load", "encode", "denoise", "Model", "KVCache", "Config", "TextConfig", "GenerationConfig",
           "load_config", "TinyDGError", "CheckpointError", "ConfigError", "InputError"]
