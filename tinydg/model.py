"""One weight stack, two modes: `encode` (causal, writes the KV cache) and `denoise`
(bidirectional over [cache ; canvas], reads the cache, returns logits for every canvas position).

Follows transformers `DiffusionGemmaEncoderTextModel`, `DiffusionGemmaDecoderModel` and
`DiffusionGemmaForBlockDiffusion` (5.23). Letters: B batch, T prompt tokens of this call,
C canvas, D hidden, V vocab, S cached positions.

    encode:  x = E[ids] * sqrt(D) -> layers (causal / sliding window) -> norm      cache += k, v
    denoise: x = post_norm( E[canvas] * sqrt(D) + SC(softmax(prev logits) @ E * sqrt(D)) )
             -> layers (bidirectional over [cache ; canvas]) -> norm -> @ E.T -> 30 tanh(. / 30)
"""

import os
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np

from . import cache as kv
from . import sampler
from .attention import causal_mask, padding_mask, sliding_window_mask, softmax
from .backend import namespace
from .checkpoint import open_checkpoint
from .config import Config, GenerationConfig, load_config
from .errors import CheckpointError, ConfigError, InputError
from .fp8 import quantize_experts
from .layer import layer_forward
from .mlp import gated_mlp
from .norms import rms_norm
from .rope import cos_sin, inv_freq_for
from .weights import DECODER, Weights, resolve

SC_ROWS_PER_CHUNK = 64  # canvas rows per [rows, V] softmax chunk in self-conditioning


BACKENDS = ("numpy", "cupy")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository of this package
DEFAULT_WEIGHTS = (os.path.join("weights", "embedded"), os.path.join("weights", "demo"))  # first that exists


@dataclass(frozen=True)
class Model:
    config: Config
    generation_config: GenerationConfig
    weights: Weights
    path: str | None = None
    backend: str = "numpy"  # "numpy": the readable path; "cupy": tinydg.gpu on a CUDA GPU
    dtype: str = "float32"  # the weights' dtype: "float32", "bfloat16" (cupy only), "float8" (tinydg.fp8)

    @property
    def text(self):
        return self.config.text_config

    @property
    def xp(self):
        """The array module the model computes with (numpy, or cupy)."""
        if self.backend == "cupy":
            from .gpu import require
            return require()
        return np


def default_checkpoint(root=None):
    """The repository's own model: weights/embedded (trained, sorts digits), else weights/demo."""
    root = ROOT if root is None else root
    for name in DEFAULT_WEIGHTS:
        if os.path.isdir(os.path.join(root, name)):
            return os.path.join(root, name)
    raise CheckpointError(f"no checkpoint: neither {' nor '.join(DEFAULT_WEIGHTS)} exists in {root}; "
                          "pass a checkpoint folder")


def load(path=None, backend="numpy", dtype=None) -> Model:
    """Open a checkpoint folder in the Hugging Face layout (None: the embedded model). Lazy: tensors
    are memory-mapped and converted to float32 (and, with backend="cupy", copied to the GPU) when
    first used. Names and shapes are checked against config.json now. dtype: "float32" (default),
    "bfloat16" (cupy only) or "float8" (experts in float8 e4m3 with row scales: tinydg.fp8)."""
    path = default_checkpoint() if path is None else path
    if not os.path.isdir(path):
        raise InputError(f"checkpoint folder not found: {path!r}")
    config, generation_config = load_config(path)
    if config.text_config.use_bidirectional_attention == "all":
        # transformers 5.23 cannot run this mode (its encoder passes `is_causal` twice), so there is no
        # reference behaviour to match; the real model uses "vision" (causal text)
        raise ConfigError("use_bidirectional_attention='all' is not supported: the reference cannot run it")
    tensors = resolve(open_checkpoint(path), config.text_config)
    return move(Model(config, generation_config, Weights(tensors), path), backend, dtype)


def move(model, backend, dtype=None) -> Model:
    """The same checkpoint on another backend: "numpy" (float32 on the host) or "cupy" (GPU, dtype
    "float32", "bfloat16" or "float8"). Weights are read again from the checkpoint, lazily.
    dtype "float8" stores the experts as float8 e4m3 codes with a scale per row (tinydg.fp8) and, on
    cupy, the other matrices in bf16; on numpy it computes in float32 with the experts quantized and
    dequantized, the same expert weights the GPU stores."""
    if backend not in BACKENDS:
        raise InputError(f"backend must be one of {BACKENDS}, got {backend!r}")
    dtype = dtype or "float32"
    if backend == "numpy":
        if dtype not in ("float32", "float8"):
            raise InputError(f"the numpy backend computes in float32 (dtype 'float32', or 'float8' for float8 "
                             f"experts); dtype {dtype!r} needs backend='cupy'")
        to_device = quantize_experts if dtype == "float8" else np.asarray
    else:
        from . import gpu
        if dtype not in gpu.DTYPES:
            raise InputError(f"dtype must be one of {gpu.DTYPES}, got {dtype!r}")
        if dtype == "float8":
            gpu.check_float8_shapes(model.text)
        to_device = gpu.uploader(dtype)
    weights = Weights(model.weights._tensors, to_device=to_device)
    return Model(model.config, model.generation_config, weights, model.path, backend, dtype)


# --- inputs -----------------------------------------------------------------------------------------

def _token_ids(ids, vocab_size, name, xp=np):
    ids = xp.asarray(ids)
    if ids.ndim != 2:
        raise InputError(f"{name} must be 2-D [batch, length], got shape {tuple(ids.shape)}")
    if ids.shape[0] == 0 or ids.shape[1] == 0:
        raise InputError(f"{name} is empty: shape {tuple(ids.shape)}")
    if ids.dtype.kind not in "iu":
        raise InputError(f"{name} must hold integer token ids, got dtype {ids.dtype}")
    lo, hi = int(xp.min(ids)), int(xp.max(ids))
    if lo < 0 or hi >= vocab_size:
        bad = lo if lo < 0 else hi
        raise InputError(f"{name} holds token id {bad}, outside the vocabulary [0, {vocab_size})")
    return ids.astype(xp.int64, copy=False)


def _check_positions(text, start, count, what):
    if start + count > text.max_position_embeddings:
        raise InputError(f"{what} would reach position {start + count - 1}, past max_position_embeddings "
                         f"{text.max_position_embeddings} ({start} cached + {count} new)")


# --- the pieces ---------------------------------------------------------------------------------------

def embed(weights, ids, hidden_size):
    """ids [B, T] -> E[ids] * sqrt(D), [B, T, D]. The scale is a float32 like the embedding."""
    E = weights[DECODER + "embed_tokens.weight"]
    xp = namespace(E)
    return E[ids] * xp.float32(hidden_size ** 0.5)


def soft_embedding(weights, logits, hidden_size):
    """The self-conditioning input: softmax(logits) @ E * sqrt(D). logits [B, C, V] -> [B, C, D].
    Done in chunks of canvas rows so that only a [rows, V] slice of probabilities exists at once."""
    E = weights[DECODER + "embed_tokens.weight"]
    xp = namespace(E)
    B, C, V = logits.shape
    flat = logits.reshape(B * C, V)
    out = xp.empty((B * C, E.shape[1]), dtype=xp.float32)
    for lo in range(0, B * C, SC_ROWS_PER_CHUNK):
        out[lo:lo + SC_ROWS_PER_CHUNK] = softmax(flat[lo:lo + SC_ROWS_PER_CHUNK].astype(xp.float32)) @ E
    return (out * xp.float32(hidden_size ** 0.5)).reshape(B, C, -1)


def self_conditioning(weights, inputs_embeds, soft, eps):
    """post_norm( inputs_embeds + down(gelu(gate n) * up n) ), n = pre_norm(soft). All [B, C, D].
    With no previous logits soft is 0 (so n is 0 and the MLP adds 0), but post_norm still applies."""
    p = DECODER + "self_conditioning."
    n = rms_norm(soft, weights[p + "pre_norm.weight"], eps)
    signal = gated_mlp(n, weights[p + "gate_proj.weight"], weights[p + "up_proj.weight"], weights[p + "down_proj.weight"])
    return rms_norm(inputs_embeds + signal, None, eps)


def lm_head(weights, hidden, softcap):
    """hidden [B, C, D] -> float32 logits [B, C, V], soft-capped: cap * tanh(logits / cap). Tied to E."""
    E = weights[DECODER + "embed_tokens.weight"]
    xp = namespace(E)
    logits = (hidden @ E.T).astype(xp.float32, copy=False)
    cap = xp.float32(softcap)
    logits /= cap  # in place: at the real vocabulary each [C, V] temporary would be 268 MB
    xp.tanh(logits, out=logits)
    logits *= cap
    return logits


def _rope_tables(text, positions):
    """{layer type: (cos, sin) [T, d]}: one table per layer type, as in the reference."""
    tables = {}
    for spec in text.layers:
        if spec.layer_type not in tables:
            tables[spec.layer_type] = cos_sin(positions, inv_freq_for(spec))
    return tables


def _run_layers(model, x, cache, positions, valid, encoder, trace):
    """Every layer over x [B, T, D]. valid [B, cache.length + T] marks real tokens. Returns the
    final-normed hidden states and each layer's new k, v."""
    text = model.text
    T = x.shape[1]
    masks = encoder_masks(text, cache, valid, T) if encoder else decoder_masks(text, cache, T)
    tables = _rope_tables(text, positions)
    new_k, new_v = [], []
    for i, spec in enumerate(text.layers):
        x, k, v = layer_forward(x, model.weights.layer(i, encoder=encoder), spec, text, *tables[spec.layer_type],
                                cache.keys[i], cache.values[i], masks[spec.layer_type], trace)
        new_k.append(k)
        new_v.append(v)
        if trace is not None:
            trace.setdefault("hidden", []).append(x)
    return rms_norm(x, model.weights[DECODER + "norm.weight"], text.rms_norm_eps), new_k, new_v


# --- masks --------------------------------------------------------------------------------------------

def encoder_masks(text, cache, valid, T):
    """{layer type: [B, 1, T, S + T] bool}. Queries at cache.length + [0, T); each layer type's keys
    are its cached positions followed by the new ones. `valid` [B, cache.length + T]."""
    xp = namespace(valid)
    q_pos = xp.arange(cache.length, cache.length + T)
    masks = {}
    for i, spec in enumerate(text.layers):
        if spec.layer_type in masks:
            continue
        k_pos = xp.arange(cache.length - cache.layer_length(i), cache.length + T)
        base = sliding_window_mask(q_pos, k_pos, text.sliding_window) if spec.is_sliding else causal_mask(q_pos, k_pos)
        masks[spec.layer_type] = base[None, None] & padding_mask(valid, k_pos)
    return masks


def decoder_masks(text, cache, C):
    """{layer type: mask or None}: the canvas sees every cached position the layer keeps and the whole
    canvas; only left padding in the cache is masked (None when there is none)."""
    xp = namespace(cache.valid)
    masks = {}
    for i, spec in enumerate(text.layers):
        if spec.layer_type in masks:
            continue
        S = cache.layer_length(i)
        cached = cache.valid[:, cache.length - S:]  # [B, S]
        if bool(xp.all(cached)):
            masks[spec.layer_type] = None
            continue
        keys_valid = xp.concatenate([cached, xp.ones((cached.shape[0], C), dtype=bool)], axis=1)
        masks[spec.layer_type] = keys_valid[:, None, None, :]  # [B, 1, 1, S + C]
    return masks


# --- the two modes ------------------------------------------------------------------------------------

READABLE = SimpleNamespace(embed=embed, soft_embedding=soft_embedding, self_conditioning=self_conditioning,
                           lm_head=lm_head, run_layers=_run_layers, propose=sampler.propose)


def pieces(model):
    """The functions a forward pass is made of (and the sampler's pass over the vocabulary, which
    generation runs after it): the readable ones above, or for a model on the GPU their twins in
    tinydg.gpu.forward (same math; cuBLAS and the CUDA kernels on the hot paths)."""
    if model.backend == "cupy":
        from .gpu import forward
        return forward
    return READABLE


def encode(model, input_ids, cache=None, attention_mask=None, *, trace=None):
    """Run the causal encoder over input_ids [B, T] and return (hidden [B, T, D], new cache).

    cache=None starts a cache; otherwise the tokens are appended after it (a committed canvas, or
    the next turn of a chat): positions continue at cache.length. attention_mask [B, T] marks real
    tokens (1) and left padding (0). The given cache is not modified.
    trace: an optional dict that collects per-layer hidden states and router outputs."""
    text, xp, run = model.text, model.xp, pieces(model)
    ids = _token_ids(input_ids, text.vocab_size, "input_ids", xp)
    B, T = ids.shape
    if cache is None:  # a bf16 model's cache holds bf16 bits (uint16), as its weights do
        cache = kv.empty_cache(text, B, xp, xp.uint16 if model.dtype in ("bfloat16", "float8") else xp.float32)
    elif cache.batch_size != B:
        raise InputError(f"input_ids has batch size {B} but the cache holds {cache.batch_size} rows")
    _check_positions(text, cache.length, T, "the prompt")
    if attention_mask is None:
        valid_new = xp.ones((B, T), dtype=bool)
    else:
        valid_new = xp.asarray(attention_mask)
        if valid_new.shape != (B, T):
            raise InputError(f"attention_mask must have the shape of input_ids {(B, T)}, got {tuple(valid_new.shape)}")
        valid_new = valid_new.astype(bool)
    valid = xp.concatenate([cache.valid, valid_new], axis=1)
    positions = xp.arange(cache.length, cache.length + T)
    x = run.embed(model.weights, ids, text.hidden_size)
    hidden, new_k, new_v = run.run_layers(model, x, cache, positions, valid, True, trace)
    return hidden, kv.append(cache, new_k, new_v, valid_new, text)


def denoise(model, canvas_ids, cache, self_conditioning_logits=None, *, trace=None):
    """Logits float32 [B, C, V] (soft-capped) for every position of the canvas [B, C], attending to
    the cache (read-only) and bidirectionally within the canvas. self_conditioning_logits [B, C, V]:
    the previous step's (temperature-scaled) logits, or None on the first step."""
    text, xp = model.text, model.xp
    if cache is None:
        raise InputError("denoise needs the cache returned by encode (the decoder reads the prompt from it)")
    ids = _token_ids(canvas_ids, text.vocab_size, "canvas_ids", xp)
    return denoise_trusted(model, ids, cache, self_conditioning_logits, trace=trace)


def denoise_trusted(model, ids, cache, self_conditioning_logits=None, *, trace=None):
    """denoise for canvas ids known to be in the vocabulary (generation's own canvases): the
    range check reads the ids back to the host, a round-trip a GPU denoising step should not make."""
    text, xp, run = model.text, model.xp, pieces(model)
    ids = xp.asarray(ids)
    B, C = ids.shape
    if cache.batch_size != B:
        raise InputError(f"canvas_ids has batch size {B} but the cache holds {cache.batch_size} rows")
    _check_positions(text, cache.length, C, "the canvas")
    x = run.embed(model.weights, ids, text.hidden_size)
    if self_conditioning_logits is None:
        soft = xp.zeros_like(x)
    else:
        if tuple(self_conditioning_logits.shape) != (B, C, text.vocab_size):
            raise InputError(f"self_conditioning_logits must have shape {(B, C, text.vocab_size)}, "
                             f"got {tuple(self_conditioning_logits.shape)}")
        soft = run.soft_embedding(model.weights, xp.asarray(self_conditioning_logits), text.hidden_size)
    x = run.self_conditioning(model.weights, x, soft, text.rms_norm_eps)
    positions = xp.arange(cache.length, cache.length + C)
    valid = xp.concatenate([cache.valid, xp.ones((B, C), dtype=bool)], axis=1)
    hidden, _, _ = run.run_layers(model, x, cache, positions, valid, False, trace)
    return run.lm_head(model.weights, hidden, text.final_logit_softcapping)
