"""One weight stack, two modes: `encode` (causal, writes the KV cache) and `denoise`
(bidirectional over [cache ; canvas], reads the cache, returns logits for every canvas position).

Follows transformers `DiffusionGemmaEncoderTextModel`, `DiffusionGemmaDecoderModel` and
`DiffusionGemmaForBlockDiffusion` (5.23). Letters: B batch, T prompt tokens of this call,
C canvas, D hidden, V vocab, S cached positions.

    encode:  x = E[ids] * sqrt(D), image features at <|image|> rows (tinydg.image_prompt)
             -> layers (causal / sliding window; an image's rows see each other) -> norm      cache += k, v
    denoise: x = post_norm( E[canvas] * sqrt(D) + SC(softmax(prev logits) @ E * sqrt(D)) )
             -> layers (bidirectional over [cache ; canvas]) -> norm -> @ E.T -> 30 tanh(. / 30)

This file and tinydg/layer.py are the only place the model is put together, for every backend:
each array operation comes from `model.ops` (tinydg.ops), the readable functions on NumPy or
cuBLAS and CUDA kernels on a GPU (tinydg.gpu.ops). `load` and `move` choose the ops.
"""

import dataclasses
import functools
import os
from dataclasses import dataclass

from . import cache as kv
from .attention import Visibility, softmax
from .checkpoint import open_checkpoint
from .config import Config, GenerationConfig, load_config
from .errors import CheckpointError, ConfigError, InputError, is_int, shown
from .layer import layer_forward
from .mlp import gated_mlp
from .ops import Ops, numpy_ops
from .rope import cos_sin, inv_freq_for
from .vision_config import ProcessorConfig, load_processor_config
from .weights import DECODER, Weights, resolve, resolve_vision

SC_ROWS_PER_CHUNK = 64  # canvas rows per [rows, V] softmax chunk in self-conditioning


BACKENDS = ("numpy", "cupy")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository of this package
DEFAULT_WEIGHTS = (os.path.join("weights", "embedded"), os.path.join("weights", "demo"))  # first that exists


@dataclass(frozen=True, repr=False)
class Model:
    """A checkpoint opened for computing: its configs, its lazily converted weights (the vision tower's
    too, when it has one), and the operations (tinydg.ops) that every forward pass of this model calls.
    processor_config: the image budget (tinydg.vision_config), None for a text-only model."""
    config: Config
    generation_config: GenerationConfig
    weights: Weights
    path: str | None = None
    ops: Ops = dataclasses.field(default_factory=numpy_ops)
    processor_config: ProcessorConfig | None = None

    @property
    def text(self):
        return self.config.text_config

    @functools.cached_property
    def tokenizer(self):
        """The checkpoint's tokenizer (tinydg.tokenizer.Tokenizer, with its chat template), read from
        tokenizer.json in the checkpoint folder on first use and kept; a CheckpointError naming the
        file when the folder has none (a model is loaded without one, for token-level work)."""
        from .tokenizer import TOKENIZER_FILE, load_tokenizer
        if self.path is None:
            raise CheckpointError(f"this model has no checkpoint folder (path is None), so no {TOKENIZER_FILE} "
                                  "to read its tokenizer from")
        return load_tokenizer(self.path)

    @property
    def xp(self):
        """The array module the model computes with (numpy, or cupy)."""
        return self.ops.xp

    @property
    def backend(self) -> str:
        """"numpy" (the readable path) or "cupy" (tinydg.gpu on a CUDA GPU)."""
        return self.ops.backend

    @property
    def dtype(self) -> str:
        """The weights' dtype: "float32", "bfloat16" (cupy only) or "float8" (tinydg.fp8)."""
        return self.ops.dtype

    def __repr__(self):
        bound = self.weights.cache_bytes
        store = "" if bound is None else f", weight_cache_bytes={bound}"
        return f"Model(path={self.path!r}, ops={self.ops!r}{store})"


def default_checkpoint(root=None):
    """The repository's own model: weights/embedded (trained, sorts digits), else weights/demo."""
    root = ROOT if root is None else root
    for name in DEFAULT_WEIGHTS:
        if os.path.isdir(os.path.join(root, name)):
            return os.path.join(root, name)
    raise CheckpointError(f"no checkpoint: neither {' nor '.join(DEFAULT_WEIGHTS)} exists in {root}; "
                          "pass a checkpoint folder. The embedded model lives in the repository, not in an "
                          "installed package: clone it and install with `pip install -e .` to use it")


def load(path=None, backend=None, dtype=None, *, kernels=None, ops=None, check_finite=True,
         weight_cache_bytes=None) -> Model:
    """Open a checkpoint folder in the Hugging Face layout (None: the embedded model). Lazy: tensors
    are memory-mapped and converted to float32 (and, with backend="cupy", copied to the GPU) when
    first used. Names and shapes are checked against config.json now, the vision tower's too when
    config.json has a vision_config (then processor_config.json is read as well, if there is one);
    with check_finite (the default) each tensor is checked for NaN and inf when it is first converted
    (False skips that pass over the weights). backend, dtype, kernels, ops and weight_cache_bytes: as
    `move`."""
    path = default_checkpoint() if path is None else path
    if not isinstance(check_finite, bool):
        raise InputError(f"check_finite must be True or False, got {shown(check_finite)}")
    if not os.path.isdir(path):
        raise InputError(f"checkpoint folder not found: {path!r}")
    config, generation_config = load_config(path)
    if config.text_config.use_bidirectional_attention == "all":
        # transformers 5.23 cannot run this mode (its encoder passes `is_causal` twice), so there is no
        # reference behaviour to match; the real model uses "vision" (causal text)
        raise ConfigError("use_bidirectional_attention='all' is not supported: the reference cannot run it")
    stored = open_checkpoint(path)
    vision = config.vision_config
    tensors = {**resolve(stored, config.text_config),
               **resolve_vision(stored, vision, config.text_config.hidden_size)}
    processor = None if vision is None else load_processor_config(path, vision)
    weights = Weights(tensors, check_finite=check_finite)
    model = Model(config, generation_config, weights, path, processor_config=processor)
    return move(model, backend, dtype, kernels=kernels, ops=ops, weight_cache_bytes=weight_cache_bytes)


def move(model, backend=None, dtype=None, *, kernels=None, ops=None, weight_cache_bytes=None) -> Model:
    """The same checkpoint with other operations; weights are read again from the checkpoint, lazily.

    backend "numpy" (None means it): the readable functions in float32 (dtype "float32", or "float8": the experts
    quantized to float8 and back, the expert weights the GPU's float8 mode stores). backend "cupy":
    tinydg.gpu.ops.gpu_ops(dtype, kernels) with dtype "float32", "bfloat16" (matrices in bf16,
    float32 accumulation) or "float8" (experts in float8 e4m3 with row scales: tinydg.fp8), and
    `kernels` a tinydg.gpu.Kernels or dict choosing the GPU implementations (default: those
    measured on a GPU). ops: an Ops value to use as it is, instead of backend, dtype and kernels
    (tests run the GPU assembly on the CPU with `gpu_ops(..., emulate=True)`).

    weight_cache_bytes, the numpy backend's trade of RAM for time (tinydg.weights.Weights): None keeps
    every converted float32 tensor (about twice the bf16 checkpoint's size in RAM); N keeps the first
    tensors converted until they hold N bytes and converts the others from the memory-mapped file at
    every use; 0 keeps none. With a bound, the experts stay in the checkpoint's layout
    (numpy_ops(expert_layout=False)): laying out a tensor anew at every conversion costs more than the
    faster products save. Not taken from `model`: a moved model keeps all unless told."""
    cache_bytes = _weight_cache_bytes(weight_cache_bytes, ops.backend if isinstance(ops, Ops) else backend)
    if ops is None:
        ops = _build_ops(model.text, backend or "numpy", dtype, kernels, expert_layout=cache_bytes is None)
    elif not isinstance(ops, Ops):
        raise InputError(f"ops must be a tinydg.ops.Ops, got {type(ops).__name__}")
    elif (backend, dtype, kernels) != (None, None, None):
        raise InputError("pass either ops, or backend / dtype / kernels to build them, not both")
    weights = Weights(model.weights._tensors, to_device=ops.upload, check_finite=model.weights.check_finite,
                      cache_bytes=cache_bytes)
    return dataclasses.replace(model, weights=weights, ops=ops)


def _weight_cache_bytes(value, backend):
    """value as None or an int >= 0, on the numpy backend; an InputError naming weight_cache_bytes otherwise."""
    if value is None:
        return None
    if not is_int(value) or value < 0:
        raise InputError(f"weight_cache_bytes must be None (keep every weight) or an int >= 0, got {shown(value)}")
    if backend == "cupy":
        raise InputError("weight_cache_bytes is for the numpy backend, which converts weights in host memory; "
                         "the cupy backend keeps its own copy of every weight on the GPU")
    return int(value)


def _build_ops(text, backend, dtype, kernels, expert_layout=True):
    if backend not in BACKENDS:
        raise InputError(f"backend must be one of {BACKENDS}, got {backend!r}")
    dtype = dtype or "float32"
    if backend == "numpy":
        if dtype not in ("float32", "float8"):
            raise InputError(f"the numpy backend computes in float32 (dtype 'float32', or 'float8' for float8 "
                             f"experts); dtype {dtype!r} needs backend='cupy'")
        if kernels is not None:
            raise InputError("kernels choose GPU implementations: they need backend='cupy'")
        return numpy_ops(dtype, expert_layout)
    from .gpu import ops as gpu_ops
    return gpu_ops.gpu_ops(dtype, kernels, text=text)


# --- inputs -----------------------------------------------------------------------------------------

def as_array(a, name, xp):
    """An argument as an array of xp. A ragged list, or anything else an array cannot hold, is an
    InputError naming the argument."""
    try:
        return xp.asarray(a)
    except (TypeError, ValueError, OverflowError) as e:
        raise InputError(f"{name} must be an array of numbers: {e}") from None


def token_ids(ids, vocab_size, name, xp):
    """ids as int64 [B, L] on xp, or an InputError naming `name`: 2-D, not empty, integers, in the vocabulary."""
    ids = as_array(ids, name, xp)
    if ids.ndim != 2:
        raise InputError(f"{name} must be 2-D [batch, length], got shape {tuple(ids.shape)}")
    if ids.shape[0] == 0 or ids.shape[1] == 0:
        raise InputError(f"{name} is empty: shape {tuple(ids.shape)}")
    if ids.dtype.kind not in "iu":  # floats, strings, and Python ints past int64 (dtype object)
        raise InputError(f"{name} must hold integer token ids (int64 at most), got dtype {ids.dtype}")
    lo, hi = int(xp.min(ids)), int(xp.max(ids))
    if lo < 0 or hi >= vocab_size:
        bad = lo if lo < 0 else hi
        raise InputError(f"{name} holds token id {bad}, outside the vocabulary [0, {vocab_size})")
    return ids.astype(xp.int64, copy=False)


def attention_mask_values(mask, xp):
    """attention_mask as bools: it may hold only 0 (padding) and 1 (a real token), or bools."""
    mask = as_array(mask, "attention_mask", xp)
    if mask.dtype.kind not in "biuf" or not bool(((mask == 0) | (mask == 1)).all()):
        raise InputError(f"attention_mask must hold only 0 (padding) and 1 (real tokens), or bools "
                         f"(got an array of {mask.dtype})")
    return mask.astype(bool)


def _check_rows(valid, xp):
    """Every row needs a real token: a row of padding only has nothing to attend to (valid [B, L])."""
    empty = ~valid.any(axis=1)
    if bool(empty.any()):
        raise InputError(f"attention_mask row {int(xp.argmax(empty))} has no real token (no 1, and none cached "
                         "for it): every row needs at least one")


def _check_positions(text, start, count, what):
    if start + count > text.max_position_embeddings:
        raise InputError(f"{what} would reach position {start + count - 1}, past max_position_embeddings "
                         f"{text.max_position_embeddings} ({start} cached + {count} new)")


# --- the pieces ---------------------------------------------------------------------------------------

def embed(ops, weights, ids, hidden_size):
    """ids [B, T] -> E[ids] * sqrt(D), [B, T, D]. The scale is a float32 like the embedding."""
    x = ops.embedding(weights[DECODER + "embed_tokens.weight"], ids)
    return x * ops.xp.float32(hidden_size ** 0.5)


def soft_embedding(ops, weights, logits, hidden_size):
    """The self-conditioning input: softmax(logits) @ E * sqrt(D). logits [B, C, V] -> [B, C, D].
    Done in chunks of canvas rows so that only a [rows, V] slice of probabilities exists at once."""
    E = weights[DECODER + "embed_tokens.weight"]
    xp = ops.xp
    B, C, V = logits.shape
    flat = logits.reshape(B * C, V)
    out = xp.empty((B * C, E.shape[1]), dtype=xp.float32)
    for lo in range(0, B * C, SC_ROWS_PER_CHUNK):
        out[lo:lo + SC_ROWS_PER_CHUNK] = ops.matmul(softmax(flat[lo:lo + SC_ROWS_PER_CHUNK].astype(xp.float32)), E)
    return (out * xp.float32(hidden_size ** 0.5)).reshape(B, C, -1)


def self_conditioning(ops, weights, inputs_embeds, soft, eps):
    """post_norm( inputs_embeds + down(gelu(gate n) * up n) ), n = pre_norm(soft). All [B, C, D].
    With no previous logits soft is 0 (so n is 0 and the MLP adds 0), but post_norm still applies."""
    p = DECODER + "self_conditioning."
    n = ops.rms_norm(soft, weights[p + "pre_norm.weight"], eps)
    signal = gated_mlp(ops, n, weights[p + "gate_proj.weight"], weights[p + "up_proj.weight"],
                       weights[p + "down_proj.weight"])
    return ops.rms_norm(inputs_embeds + signal, None, eps)


def lm_head(ops, weights, hidden, softcap):
    """hidden [B, C, D] -> float32 logits [B, C, V], soft-capped: cap * tanh(logits / cap). Tied to E."""
    return ops.softcap(ops.linear(hidden, weights[DECODER + "embed_tokens.weight"]), softcap)


@functools.lru_cache(maxsize=None)
def _inv_freq(spec, xp):
    """inv_freq_for(spec) on the array module xp, made once: a forward then copies nothing from the
    host to a GPU (a copy that a CUDA graph could not capture)."""
    return xp.asarray(inv_freq_for(spec))


def _rope_tables(text, positions, xp):
    """{layer type: (cos, sin) [T, d]}: one table per layer type, as in the reference."""
    tables = {}
    for spec in text.layers:
        if spec.layer_type not in tables:
            tables[spec.layer_type] = cos_sin(positions, _inv_freq(spec, xp))
    return tables


def visibilities(text, cache, valid, encoder, runs=()):
    """{layer type: Visibility} for a call whose T tokens follow the cache; valid [B, cache.length + T].
    The encoder is causal and its sliding layers windowed, and the positions of each image run
    (row, first, last) see each other on every layer; the decoder sees every cached position a layer
    keeps and the whole canvas. Left padding is never seen."""
    out = {}
    for i, spec in enumerate(text.layers):
        if spec.layer_type not in out:
            window = text.sliding_window if (encoder and spec.is_sliding) else 0
            out[spec.layer_type] = Visibility(cache.length, cache.layer_length(i), encoder, window, valid, runs)
    return out


def _run_layers(model, x, cache, positions, valid, encoder, trace, runs=()):
    """Every layer over x [B, T, D]. valid [B, cache.length + T] marks real tokens; runs: image runs
    (row, first, last) at absolute positions. Returns the final-normed hidden states and each layer's new k, v."""
    text, ops = model.text, model.ops
    seen = visibilities(text, cache, valid, encoder, runs)
    tables = _rope_tables(text, positions, ops.xp)
    new_k, new_v = [], []
    for i, spec in enumerate(text.layers):
        x, k, v = layer_forward(ops, x, model.weights.layer(i, encoder=encoder), spec, text, *tables[spec.layer_type],
                                cache.keys[i], cache.values[i], seen[spec.layer_type], trace)
        new_k.append(k)
        new_v.append(v)
        if trace is not None:
            trace.setdefault("hidden", []).append(x)
    return ops.rms_norm(x, model.weights[DECODER + "norm.weight"], text.rms_norm_eps), new_k, new_v


# --- the two modes ------------------------------------------------------------------------------------

def encode(model, input_ids, cache=None, attention_mask=None, images=None, *, trace=None):
    """Run the causal encoder over input_ids [B, T] and return (hidden [B, T, D], new cache).

    cache=None starts a cache; otherwise the tokens are appended after it (a committed canvas, or
    the next turn of a chat): positions continue at cache.length. attention_mask [B, T] marks real
    tokens (1) and left padding (0). The given cache is not modified.
    images: a list of images (H x W x 3 uint8 arrays, PIL images or file paths), one per run of
    <|image|> placeholders in input_ids, in the order the runs appear (row by row, left to right);
    each run must already hold its image's soft tokens (tinydg.image_prompt.expand_images). The runs'
    embeddings become the images' features and each run sees itself both ways (tinydg.image_prompt).
    None: no images (placeholders, if any, are embedded as ordinary tokens, as the reference does).
    trace: an optional dict that collects per-layer hidden states and router outputs."""
    text, ops, xp = model.text, model.ops, model.xp
    ids = token_ids(input_ids, text.vocab_size, "input_ids", xp)
    B, T = ids.shape
    if cache is None:
        cache = kv.empty_cache(text, B, xp, ops.kv_dtype)
    else:
        kv.check_cache(cache, text, B, xp, ops.kv_dtype, "input_ids")
    _check_positions(text, cache.length, T, "the prompt")
    if attention_mask is None:
        valid_new = xp.ones((B, T), dtype=bool)
    else:
        valid_new = attention_mask_values(attention_mask, xp)
        if valid_new.shape != (B, T):
            raise InputError(f"attention_mask must have the shape of input_ids {(B, T)}, got {tuple(valid_new.shape)}")
    valid = xp.concatenate([cache.valid, valid_new], axis=1)
    if attention_mask is not None:
        _check_rows(valid, xp)
    positions = xp.arange(cache.length, cache.length + T)
    x = embed(ops, model.weights, ids, text.hidden_size)
    runs = ()
    if images is not None:
        from .image_prompt import place_images, prompt_images  # imported here: tinydg.vision imports this module
        runs, features = prompt_images(model, ids, images)
        x = place_images(x, runs, features)
        runs = tuple((row, cache.length + first, cache.length + last) for row, first, last in runs)  # absolute
    hidden, new_k, new_v = _run_layers(model, x, cache, positions, valid, True, trace, runs)
    return hidden, kv.append(cache, new_k, new_v, valid_new, text)


def denoise(model, canvas_ids, cache, self_conditioning_logits=None, *, trace=None, check_ids=True):
    """Logits float32 [B, C, V] (soft-capped) for every position of the canvas [B, C], attending to
    the cache (read-only) and bidirectionally within the canvas. self_conditioning_logits [B, C, V]:
    the previous step's (temperature-scaled) logits, or None on the first step.
    check_ids=False skips the check that the canvas holds vocabulary ids, which reads them back to the
    host: generation passes its own canvases so, a round-trip a GPU denoising step should not make."""
    text, ops, xp = model.text, model.ops, model.xp
    if cache is None:
        raise InputError("denoise needs the cache returned by encode (the decoder reads the prompt from it)")
    ids = token_ids(canvas_ids, text.vocab_size, "canvas_ids", xp) if check_ids else xp.asarray(canvas_ids)
    B, C = ids.shape
    kv.check_cache(cache, text, B, xp, ops.kv_dtype, "canvas_ids")
    _check_positions(text, cache.length, C, "the canvas")
    x = embed(ops, model.weights, ids, text.hidden_size)
    if self_conditioning_logits is None:
        soft = xp.zeros_like(x)
    else:
        sc = as_array(self_conditioning_logits, "self_conditioning_logits", xp)
        if tuple(sc.shape) != (B, C, text.vocab_size) or sc.dtype.kind != "f":
            raise InputError(f"self_conditioning_logits must have shape {(B, C, text.vocab_size)} and hold floats, "
                             f"got shape {tuple(sc.shape)} of {sc.dtype}")
        soft = soft_embedding(ops, model.weights, sc, text.hidden_size)
    x = self_conditioning(ops, model.weights, x, soft, text.rms_norm_eps)
    positions = xp.arange(cache.length, cache.length + C)
    valid = xp.concatenate([cache.valid, xp.ones((B, C), dtype=bool)], axis=1)
    hidden, _, _ = _run_layers(model, x, cache, positions, valid, False, trace)
    return lm_head(ops, model.weights, hidden, text.final_logit_softcapping)
