"""tinydg: DiffusionGemma, the text-diffusion language model, in readable NumPy.

    model = tinydg.load(path)                                   # a checkpoint folder (Hugging Face layout)
    reply = tinydg.chat(model, "sort 7 2 9 2 4")                # text in: reply.text, .thought, .output
    session = tinydg.Chat(model); session.send("Hi")            # a conversation that keeps the KV cache
    hidden, cache = tinydg.encode(model, input_ids)             # causal encoder -> KV cache
    logits = tinydg.denoise(model, canvas_ids, cache)           # bidirectional decoder over [cache ; canvas]
    out = tinydg.generate(model, input_ids, seed=0)             # block diffusion with the entropy-bound sampler
    for event in tinydg.stream(model, input_ids, seed=0): ...   # the same, one denoising step at a time
    ids = [tinydg.expand_images(model, ids, images)]            # <|image|> markers -> placeholder runs
    out = tinydg.generate(model, ids, images=images)            # (a checkpoint with a vision tower)

The names below and the submodules are imported on first use (PEP 562), so `import tinydg` itself
loads nothing heavy: the command line (`python -m tinydg`) can then answer Ctrl-C during its own
start-up with one line.
"""

import importlib

EXPORTS = {  # public name -> the module that defines it
    "load": "model", "move": "model", "encode": "model", "denoise": "model", "Model": "model",
    "generate": "generation", "stream": "generation", "Step": "generation", "Canvas": "generation",
    "Output": "generation",
    "chat": "conversation", "Chat": "conversation", "Reply": "conversation",
    "expand_images": "image_prompt",
    "KVCache": "cache",
    "Config": "config", "TextConfig": "config", "GenerationConfig": "config", "load_config": "config",
    "VisionConfig": "vision_config", "ProcessorConfig": "vision_config",
    "TinyDGError": "errors", "CheckpointError": "errors", "ConfigError": "errors", "InputError": "errors",
}
__all__ = list(EXPORTS)


def __getattr__(name):
    """A public name, or a submodule (`tinydg.sampler`), imported when first asked for."""
    if name in EXPORTS:
        value = getattr(importlib.import_module(f".{EXPORTS[name]}", __name__), name)
    else:
        try:
            value = importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":  # the submodule exists but an import inside it failed
                raise
            raise AttributeError(f"module 'tinydg' has no attribute {name!r}") from None
    globals()[name] = value  # imported once
    return value


def __dir__():
    return sorted(set(globals()) | set(EXPORTS))
