"""The entropy-bound sampler: how a canvas of random tokens becomes text, one denoising step at a time.

Follows transformers 5.23 `generation_diffusion_gemma.py` (EntropyBoundSampler,
LinearTemperatureScheduleLogitsProcessor, StableAndConfidentStoppingCriteria). Letters (as in
tinydg/ops.py): B batch, C canvas, V vocab, M max denoising steps. `cur_step` counts the steps
REMAINING: M, M-1, ..., 1.

One step, given the decoder's logits [B, C, V] for the current canvas:

    temp      = t_min + (t_max - t_min) * cur_step / M        (float32, like the reference)
    processed = logits / temp                                 (also the next step's self-conditioning input)
    p         = softmax(processed)
    proposal  = argmax(p / E),  E ~ Exponential(1)            (a categorical sample: the exponential race)
    draft     = argmax(processed)                             (what gets committed when the canvas stops)
    H         = -sum(p log p)                                 (entropy per position; 0 log 0 = 0)
    accept the lowest-entropy positions while  sum(H of those before) <= entropy_bound
    canvas    = proposal where accepted, fresh uniform ids elsewhere (renoise)
    stop a row when its draft equals the last `stability_threshold` drafts and mean(H) < confidence_threshold

Randomness comes from `rng`, any object with `integers(high, size=...)` and `exponential(size=...)`
(`numpy.random.Generator`, or `tinydg.rng.TorchCPUGenerator` to reproduce torch). Per step the
exponentials are drawn first, in row-major order over [B, C, V] but requested in chunks of rows (the
same stream as one [B, C, V] draw, without holding it), then one `integers(V, size=(B, C))`. The rng
may draw on the host: its draws are moved to the arrays' module (numpy, or cupy on a GPU).
"""

import numpy as np

from .backend import namespace

ROWS_PER_CHUNK = 16  # canvas rows per [rows, V] slice: at V = 262144 a slice is 16 MiB of float32


def initialize_canvas(rng, batch_size, canvas_length, vocab_size, xp=np):
    """A canvas of uniform random token ids [B, C] on the array module xp (the rng may draw on the host)."""
    return xp.asarray(rng.integers(vocab_size, size=(batch_size, canvas_length))).astype(xp.int64)


def temperature(cur_step, max_denoising_steps, t_min, t_max):
    """The linear schedule: t_max at cur_step = M, t_min + (t_max - t_min) / M at cur_step = 1.
    Rounded like the reference, which divides an int32 tensor and scales by Python floats in float32."""
    f32 = np.float32
    fraction = f32(cur_step) / f32(max_denoising_steps)
    return f32(f32(t_min) + f32(f32(t_max - t_min) * fraction))


def race(p, exponentials):
    """A categorical sample per row as an exponential race: argmax(p / E). p, E [R, V] -> [R]."""
    xp = namespace(p)
    return xp.argmax(p / exponentials, axis=-1)


def softmax_and_entropy(x):
    """x [R, V] float32 -> (p [R, V], H [R]). H = -sum(p * log p) with log p = x - logsumexp(x),
    the form torch.distributions.Categorical uses. A -inf logit (a banned token) has p = 0 and adds
    nothing to H: like Categorical.entropy, log p is clamped to the lowest float first, so p log p is
    0 there instead of 0 * -inf = NaN (a finite log p is left as it is). A row with NaN or +inf, or
    with every entry -inf, has no distribution: its H is NaN (generation refuses it)."""
    xp = namespace(x)
    peak = xp.max(x, axis=-1, keepdims=True)
    e = xp.exp(x - peak)
    total = xp.sum(e, axis=-1, keepdims=True)
    p = e / total
    log_p = xp.maximum(x - (peak + xp.log(total)), xp.finfo(x.dtype).min)
    return p, -xp.sum(log_p * p, axis=-1)


def propose(processed, rng):
    """processed [B, C, V] float32 -> (proposal, draft, entropy), each [B, C].
    Works through [ROWS_PER_CHUNK, V] slices, so only one slice of probabilities exists at a time."""
    xp = namespace(processed)
    B, C, V = processed.shape
    flat = processed.reshape(B * C, V)
    proposal = xp.empty(B * C, dtype=xp.int64)
    draft = xp.empty(B * C, dtype=xp.int64)
    entropy = xp.empty(B * C, dtype=xp.float32)
    for lo in range(0, B * C, ROWS_PER_CHUNK):
        x = flat[lo:lo + ROWS_PER_CHUNK]
        p, h = softmax_and_entropy(x)
        E = xp.asarray(rng.exponential(size=(len(x), V))).astype(xp.float32, copy=False)
        proposal[lo:lo + len(x)] = race(p, E)
        draft[lo:lo + len(x)] = xp.argmax(x, axis=-1)
        entropy[lo:lo + len(x)] = h
    return proposal.reshape(B, C), draft.reshape(B, C), entropy.reshape(B, C)


def accept(entropy, entropy_bound):
    """entropy [B, C] -> accepted [B, C] bool. Sort ascending; accept position i of that order iff the
    entropies before it sum to at most the bound, so the lowest-entropy position is always accepted.
    (The sum runs in float64 and is stored in float32, as torch's CPU cumsum does.)"""
    xp = namespace(entropy)
    order = xp.argsort(entropy, axis=-1, kind="stable")
    sorted_h = xp.take_along_axis(entropy, order, axis=-1)
    before = xp.cumsum(sorted_h, axis=-1, dtype=xp.float64).astype(xp.float32) - sorted_h
    accepted = xp.zeros(entropy.shape, dtype=bool)
    accepted[xp.arange(entropy.shape[0])[:, None], order] = before <= xp.float32(entropy_bound)
    return accepted


def renoise(canvas, accepted, rng, vocab_size):
    """Keep the accepted tokens, draw fresh uniform ids everywhere else. [B, C] -> [B, C]."""
    xp = namespace(canvas)
    fresh = initialize_canvas(rng, canvas.shape[0], canvas.shape[1], vocab_size, xp)
    return xp.where(accepted, canvas, fresh)


def stable_and_confident(history, draft, entropy, stability_threshold, confidence_threshold):
    """Adaptive stopping, per row. history [S, B, C] holds the last S = stability_threshold drafts
    (-1 before there are any). Returns (stop [B] bool, new history).
    stable: the draft equals every draft in the history; confident: mean(H) < confidence_threshold."""
    xp = namespace(draft)
    B = draft.shape[0]
    if stability_threshold == 0:
        stable = xp.ones(B, dtype=bool)
    else:
        if history is None:
            history = xp.full((stability_threshold,) + draft.shape, -1, dtype=xp.int64)
        stable = (history == draft[None]).all(axis=-1).all(axis=0)
        history = xp.concatenate([history[1:], draft[None]], axis=0)
    confident = entropy.mean(axis=-1, dtype=xp.float32) < xp.float32(confidence_threshold)
    return stable & confident, history
