"""Block diffusion: canvases generated one after another, each denoised in parallel.

Follows transformers 5.23 `DiffusionGemmaGenerationMixin.generate`. Letters: B batch, T prompt
tokens of this call, S cached positions, C canvas, V vocab, M max denoising steps
(the letters of tinydg/ops.py).

    cache = encode(prompt, images)                         (the images' features at their placeholders)
    for each canvas (ceil(max_new_tokens / C) at most):
        canvas = uniform random ids [B, C]                 (drawn even when the caller gives one)
        for cur_step = M, M-1, ..., 1:                      (steps remaining)
            logits = denoise(canvas, cache, self-conditioning = last step's processed logits)
            one sampler step (tinydg.sampler): propose, accept by entropy bound, renoise, maybe stop
            stop early once every row is stable and confident
        append the last DRAFT (argmax) canvas; after a row's first EOS everything becomes pad
        stop when every row has finished; else encode the committed canvas into the cache

`stream` yields a `Step` after every denoising step and a `Canvas` after every committed canvas;
`generate` runs it to the end and returns an `Output`. The loop runs on the model's array module
(`model.xp`: numpy, or cupy on a GPU); what it yields and returns holds NumPy arrays on the host.
"""

import dataclasses
from dataclasses import dataclass

import numpy as np

from . import sampler
from .backend import namespace
from .cache import check_cache
from .config import check_token_ids, validate_generation_config
from .errors import ConfigError, InputError, shown
from .model import as_array, attention_mask_values, denoise, encode, token_ids
from .rng import TorchCPUGenerator, check_seed
from .threads import blas_threads_for, limited

SETTINGS = ("max_new_tokens", "max_denoising_steps", "entropy_bound", "t_min", "t_max", "stability_threshold",
            "confidence_threshold", "eos_token_id", "pad_token_id")


@dataclass(frozen=True)
class Step:
    """One denoising step. Arrays are NumPy arrays on the host, [B, C] unless noted."""
    canvas_index: int  # which canvas of this call, from 0
    cur_step: int  # steps remaining, M .. 1
    temperature: float
    draft: np.ndarray  # argmax of the processed logits: the text if the canvas stopped now
    accepted: np.ndarray  # bool: positions that kept the sampled proposal
    entropy: np.ndarray  # float32 entropy of the processed logits per position
    canvas: np.ndarray  # the next step's input: accepted proposals, fresh noise elsewhere
    finished: np.ndarray  # [B] bool: rows whose canvas has stopped (frozen from here on)


@dataclass(frozen=True)
class Canvas:
    """A committed canvas. Arrays are NumPy arrays on the host."""
    canvas_index: int
    tokens: np.ndarray  # [B, C] the committed draft, pad after a row's first EOS
    steps: np.ndarray  # [B] decoder forwards this canvas cost each row
    finished: np.ndarray  # [B] bool: rows that are done generating (EOS or length)


@dataclass(frozen=True)
class Output:
    """What `generate` returns. Arrays are NumPy arrays on the host; the cache stays on the model's device."""
    sequences: np.ndarray  # [B, T + n*C]: this call's input_ids, then the committed canvases
    tokens_per_forward: np.ndarray  # [B] float32: non-pad new tokens / decoder forwards of that row
    cache: object  # KVCache of everything but the last canvas: pass it, with new ids, to continue
    steps_per_canvas: np.ndarray  # [n, B] decoder forwards per canvas and row
    accepted_per_step: list  # per canvas, [steps, B] int: tokens accepted at each step


def resolve_settings(model, **overrides):
    """The checkpoint's generation config (itself filled with the reference's defaults), with the
    caller's non-None overrides, checked with the reference's rules and tinydg's bounds, NumPy
    scalars made Python numbers (tinydg.config.validate_generation_config); eos and pad ids must be
    in the model's vocabulary. eos_token_id may also be a 1-D array of ids."""
    given = {k: v for k, v in overrides.items() if v is not None}
    unknown = set(given) - set(SETTINGS)
    if unknown:
        raise ConfigError(f"unknown generation settings: {sorted(unknown)}")
    if isinstance(given.get("eos_token_id"), np.ndarray):
        given["eos_token_id"] = given["eos_token_id"].tolist()
    settings = validate_generation_config(dataclasses.replace(model.generation_config, **given))
    check_token_ids(settings, model.text.vocab_size)
    return settings


def _host(a):
    """a as a NumPy array on the host (a CuPy array is copied down with .get())."""
    return a.get() if _on_gpu(a) else np.asarray(a)


def _on_gpu(a):
    return type(a).__module__.split(".")[0] == "cupy"


def _random_source(seed, rng, xp):
    """The caller's rng; else, from seed, a TorchCPUGenerator on the NumPy backend (reproduces
    transformers' CPU generations) or a tinydg.gpu.DeviceRNG on CuPy (draws made on the GPU)."""
    if seed is not None and rng is not None:
        raise InputError("pass either seed or rng, not both")
    if rng is not None:
        if not (hasattr(rng, "integers") and hasattr(rng, "exponential")):
            raise InputError("rng needs integers(high, size=...) and exponential(size=...) methods")
        return rng
    seed = int(np.random.SeedSequence().entropy % 2**32) if seed is None else check_seed(seed)
    if xp is not np:
        from .gpu import DeviceRNG
        return DeviceRNG(seed)
    return TorchCPUGenerator(seed)


def _step_forward(model, cuda_graph):
    """A denoising step's decoder forward: (canvas, cache, sc logits) -> logits. Our own canvases
    skip the host range check (check_ids=False); with cuda_graph, replayed from a CUDA graph and
    copied out of the graph's buffer, which the next replay overwrites."""
    if not cuda_graph:
        return lambda canvas, cache, sc: denoise(model, canvas, cache, sc, check_ids=False)
    if model.backend != "cupy" or model.xp is np:
        raise InputError("cuda_graph=True needs the model on the cupy backend: a CUDA graph replays GPU work")
    from .gpu.experimental.graph import GraphedDenoise
    graphed = GraphedDenoise(model)
    return lambda canvas, cache, sc: graphed(canvas, cache, sc).copy()


def _argument(a, name):
    """An array argument on the host (a CuPy array is copied down); a ragged list, or anything else
    NumPy cannot hold, is an InputError naming the argument (tinydg.model.as_array)."""
    return a.get() if _on_gpu(a) else as_array(a, name, np)


def _prompt_mask(attention_mask, cache, B, T):
    """The new tokens' validity [B, T]. Accepts a mask of 0/1 or bools over the new tokens [B, T] or,
    like the reference, over cache and new tokens [B, S + T] (whose cached part must agree with the
    cache). encode checks that every row has a real token."""
    if attention_mask is None:
        return None
    mask = attention_mask_values(_argument(attention_mask, "attention_mask"), np)
    S = 0 if cache is None else cache.length
    if mask.ndim != 2 or mask.shape[0] != B or mask.shape[1] not in (T, S + T):
        raise InputError(f"attention_mask must be 2-D [batch, length] with shape {(B, T)}"
                         + (f" or {(B, S + T)}" if S else "") + f", got {tuple(mask.shape)}")
    if mask.shape[1] == S + T and S:
        if not np.array_equal(mask[:, :S], _host(cache.valid)):
            raise InputError("attention_mask disagrees with the cache over the cached positions")
        mask = mask[:, S:]
    return mask


def _start_canvas(decoder_input_ids, B, C, V):
    """decoder_input_ids checked like input_ids, and of the canvas' shape [B, C]; None stays None."""
    if decoder_input_ids is None:
        return None
    start = token_ids(_argument(decoder_input_ids, "decoder_input_ids"), V, "decoder_input_ids", np)
    if start.shape != (B, C):
        raise InputError(f"decoder_input_ids must be the starting canvas, shape {(B, C)}, got {start.shape}")
    return start


def _check_logits(step):
    """A position whose processed logits hold NaN or +inf, or are -inf everywhere, has no distribution
    to sample: its entropy is NaN (tinydg.sampler.softmax_and_entropy), as the reference's Categorical
    refuses such logits. The entropy comes to the host every step anyway: no extra transfer."""
    bad = np.isnan(step.entropy)
    if bad.any():
        row, position = (int(i) for i in np.argwhere(bad)[0])
        more = f" (and {int(bad.sum()) - 1} more)" if bad.sum() > 1 else ""
        raise InputError(f"non-finite logits at canvas {step.canvas_index}, step cur_step={step.cur_step} "
                         f"(temperature {step.temperature:g}), row {row}, position {position}{more}: NaN or +inf, "
                         "or -inf for every token, leave no token to sample")


def finalize_canvas(sequences, finished, canvas_length, eos, pad, max_length):
    """Commit rules after appending a canvas (the reference's `_finalize_canvas`). Rows finish on an
    EOS in the new canvas or when the sequence reaches max_length. Rows that had finished before get a
    canvas of pad; in the new canvas everything after a row's first EOS becomes pad."""
    xp = namespace(sequences)
    new = sequences[:, -canvas_length:]
    has_eos = xp.isin(new, xp.asarray(eos)).any(axis=-1) if eos else xp.zeros(len(new), dtype=bool)
    finished_now = has_eos | (sequences.shape[1] >= max_length)
    before = finished
    finished = before | finished_now
    if pad is not None and bool(finished.any()):
        sequences = sequences.copy()
        sequences[:, -canvas_length:] = xp.where(before[:, None], pad, sequences[:, -canvas_length:])
        if eos and bool(finished_now.any()):
            new = sequences[:, -canvas_length:]
            is_eos = xp.isin(new, xp.asarray(eos))
            count = xp.cumsum(is_eos, axis=-1)
            new[(count > 0) & ~((count == 1) & is_eos)] = pad
    return sequences, finished


def stream(model, input_ids, max_new_tokens=None, *, seed=None, rng=None, attention_mask=None, cache=None,
           max_denoising_steps=None, entropy_bound=None, t_min=None, t_max=None, stability_threshold=None,
           confidence_threshold=None, eos_token_id=None, pad_token_id=None, decoder_input_ids=None,
           backend=None, cuda_graph=False, blas_threads="auto", images=None):
    """Generate, yielding a `Step` per denoising step and a `Canvas` per committed canvas; the
    generator's return value (StopIteration.value) is the `Output`. Arguments as `generate`."""
    if not (backend is None or isinstance(backend, str)) or not isinstance(cuda_graph, bool):
        raise InputError(f"backend must be 'numpy', 'cupy' or None and cuda_graph True or False, got "
                         f"backend={shown(backend)}, cuda_graph={shown(cuda_graph)}")
    if backend is not None and backend != model.backend:
        from .model import move
        model = move(model, backend)
    g = resolve_settings(model, max_new_tokens=max_new_tokens, max_denoising_steps=max_denoising_steps,
                         entropy_bound=entropy_bound, t_min=t_min, t_max=t_max,
                         stability_threshold=stability_threshold, confidence_threshold=confidence_threshold,
                         eos_token_id=eos_token_id, pad_token_id=pad_token_id)
    text, C = model.text, model.config.canvas_length
    V = text.vocab_size
    xp = model.xp
    step_forward = _step_forward(model, cuda_graph)
    propose = model.ops.propose  # tinydg.sampler.propose, or its fused GPU kernel
    rng = _random_source(seed, rng, xp)
    threads = blas_threads_for(model, blas_threads)  # tinydg.threads: one BLAS thread for small models
    ids = token_ids(_argument(input_ids, "input_ids"), V, "input_ids", np)
    B, T = ids.shape
    if cache is not None:
        check_cache(cache, text, B, xp, model.ops.kv_dtype, "input_ids")
    valid = _prompt_mask(attention_mask, cache, B, T)
    start = _start_canvas(decoder_input_ids, B, C, V)
    S = 0 if cache is None else cache.length
    n_canvases = -(-g.max_new_tokens // C)  # ceil, in integers: max_new_tokens may be past a float's range
    end = S + T + n_canvases * C
    if end > text.max_position_embeddings:
        raise InputError(f"prompt ({S} cached + {T} new tokens) plus {n_canvases} canvases of {C} would reach "
                         f"position {end - 1}, past max_position_embeddings {text.max_position_embeddings}")
    max_length = S + T + g.max_new_tokens  # the reference's MaxLengthCriteria, against this call's sequence
    eos = list(g.eos_token_id)

    sequences = xp.asarray(ids)
    valid = None if valid is None else xp.asarray(valid)
    finished = xp.zeros(B, dtype=bool)
    forwards = xp.zeros(B, dtype=xp.int64)
    steps_per_canvas, accepted_per_step = [], []
    with limited(threads):
        _, cache = encode(model, sequences, cache, valid, images)  # the only call that sees the images
    for k in range(n_canvases):
        if k > 0:
            with limited(threads):
                _, cache = encode(model, sequences[:, -C:], cache)
        canvas = sampler.initialize_canvas(rng, B, C, V, xp)
        if k == 0 and start is not None:
            canvas = xp.asarray(start)
        draft, sc_logits, history = canvas, None, None
        stopped = xp.zeros(B, dtype=bool)
        steps = xp.zeros(B, dtype=xp.int64)
        accepted_counts = []
        for cur_step in range(g.max_denoising_steps, 0, -1):
            active = ~(stopped | finished)
            forwards += active
            steps += active
            temp = sampler.temperature(cur_step, g.max_denoising_steps, g.t_min, g.t_max)
            with limited(threads):
                processed = step_forward(canvas, cache, sc_logits)
                processed /= temp
                proposal, new_draft, entropy = propose(processed, rng)
            accepted = sampler.accept(entropy, g.entropy_bound)
            new_canvas = sampler.renoise(xp.where(accepted, proposal, canvas), accepted, rng, V)
            if bool(stopped.any()):  # stopped rows are frozen: same draft, canvas and self-conditioning input
                new_draft = xp.where(stopped[:, None], draft, new_draft)
                new_canvas = xp.where(stopped[:, None], canvas, new_canvas)
                processed[stopped] = sc_logits[stopped]
            stop, history = sampler.stable_and_confident(history, new_draft, entropy, g.stability_threshold,
                                                         g.confidence_threshold)
            stopped = stopped | stop
            canvas, draft, sc_logits = new_canvas, new_draft, processed
            accepted_counts.append(xp.where(active, accepted.sum(axis=-1), 0))
            step = Step(k, cur_step, float(temp), _host(draft), _host(accepted), _host(entropy), _host(canvas),
                        _host(stopped).copy())
            _check_logits(step)
            yield step
            if bool(stopped.all()):
                break
        sequences = xp.concatenate([sequences, draft], axis=1)
        sequences, finished = finalize_canvas(sequences, finished, C, eos, g.pad_token_id, max_length)
        steps_per_canvas.append(_host(steps))
        accepted_per_step.append(_host(xp.stack(accepted_counts)))
        yield Canvas(k, _host(sequences[:, -C:]), _host(steps), _host(finished).copy())
        if bool(finished.all()):
            break
    sequences, forwards = _host(sequences), _host(forwards)
    new_tokens = sequences[:, T:]
    valid_new = (new_tokens != g.pad_token_id).sum(axis=-1) if g.pad_token_id is not None \
        else np.full(B, new_tokens.shape[1])
    return Output(sequences, (valid_new / forwards).astype(np.float32), cache, np.stack(steps_per_canvas),
                  accepted_per_step)


def generate(model, input_ids, max_new_tokens=None, *, seed=None, rng=None, attention_mask=None, cache=None,
             max_denoising_steps=None, entropy_bound=None, t_min=None, t_max=None, stability_threshold=None,
             confidence_threshold=None, eos_token_id=None, pad_token_id=None, decoder_input_ids=None,
             backend=None, cuda_graph=False, blas_threads="auto", images=None):
    """Generate up to max_new_tokens (rounded up to whole canvases) after input_ids [B, T].

    Settings left None come from the checkpoint's generation_config.json, then the reference's
    defaults. seed (an integer in torch's range [-2**63, 2**64); None: a random one): on the NumPy
    backend, reproduces transformers' CPU `generate` after `torch.manual_seed(seed)`; on CuPy it
    seeds tinydg.gpu.DeviceRNG (draws made on the GPU; pass rng=tinydg.rng.TorchCPUGenerator(seed)
    there to reproduce transformers instead). rng: any object with `integers(high, size=...)` and
    `exponential(size=...)`. attention_mask [B, T]: 1 (or True) for real tokens, 0 for left
    padding; every row needs a real token. cache: the `Output.cache` of an earlier call, to continue
    without re-encoding (input_ids then holds only tokens not yet in it: the last canvas and the new
    turn). decoder_input_ids [B, C]: a starting canvas for the first block instead of noise. Arrays
    may be NumPy or CuPy; the result holds NumPy arrays. backend ("numpy" or "cupy"): run there,
    moving the model first (tinydg.model.move) if it is elsewhere; None runs wherever the model is.
    cuda_graph (cupy only): replay each step's decoder forward from a CUDA graph captured once per
    canvas (tinydg.gpu.experimental.graph, not yet run on a GPU); the same numbers, fewer host
    launches. blas_threads: BLAS threads of the NumPy backend's products (tinydg.threads): "auto" one
    for small models (hidden_size <= 512), None leaves BLAS as it is, an int sets it. images: the
    images of input_ids' <|image|> placeholder runs, in order (tinydg.encode); they go through the
    vision tower once, into the first encoder call, and later calls read them from the cache. A setting or
    argument out of range raises a ConfigError or InputError naming it;
    logits that turn NaN or inf raise an InputError naming the canvas and the step."""
    run = stream(model, input_ids, max_new_tokens, seed=seed, rng=rng, attention_mask=attention_mask, cache=cache,
                 max_denoising_steps=max_denoising_steps, entropy_bound=entropy_bound, t_min=t_min, t_max=t_max,
                 stability_threshold=stability_threshold, confidence_threshold=confidence_threshold,
                 eos_token_id=eos_token_id, pad_token_id=pad_token_id, decoder_input_ids=decoder_input_ids,
                 backend=backend, cuda_graph=cuda_graph, blas_threads=blas_threads, images=images)
    while True:
        try:
            next(run)
        except StopIteration as done:
            return done.value
