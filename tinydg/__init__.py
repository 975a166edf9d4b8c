"""tinydg: DiffusionGemma, the text-diffusion language model, in readable NumPy.

    model = tinydg.load(path)                                   # a checkpoint folder (Hugging Face layout)
    hidden, cache = tinydg.encode(model, input_ids)             # causal encoder -> KV cache
    logits = tinydg.denoise(model, canvas_ids, cache)           # bidirectional decoder over [cache ; canvas]
    out = tinydg.generate(model, input_ids, seed=0)             # block diffusion with the entropy-bound sampler
    for event in tinydg.stream(model, input_ids, seed=0): ...   # the same, one denoising step at a time
"""

from .cache import KVCache
from .config import Config, GenerationConfig, TextConfig, load_config
from .errors import CheckpointError, ConfigError, InputError, TinyDGError
from .generation import Canvas, Output, Step, generate, stream
from .model import Model, denoise, encode, load, move

__all__ = ["load", "move", "encode", "denoise", "generate", "stream", "Step", "Canvas", "Output", "Model", "KVCache", "Config", "TextConfig", "GenerationConfig",
           "load_config", "TinyDGError", "CheckpointError", "ConfigError", "InputError"]
