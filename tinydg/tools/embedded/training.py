"""The block-diffusion training objective, forward only, in NumPy: how DiffusionGemma learns,
written out for reading. (The embedded model was trained with torch as the autograd engine, in
tinydg/tools/embedded/train.py, which computes these same numbers; tests/test_training.py checks that.)

One example is a prompt [T], its validity [T] and one canvas of targets [C]: a canvas of the response,
then <eos> to the end (tinydg.tools.embedded.data makes them from conversations).

    t     ~ U(eps, 1)                                  per example: how much of the canvas is noise
    noisy = where(u < t, fresh, target)                u ~ U(0, 1), fresh ~ uniform token ids, per position
    hidden, cache = encode(prompt, valid)              the causal encoder over the clean prompt
    l1 = denoise(noisy, cache)                         pass 1 (no gradient when training)
    l2 = denoise(noisy, cache, self_conditioning=l1)   pass 2, for examples with sc ~ Bernoulli(0.5);
                                                       without it pass 2 is pass 1 again
    loss = CE(l2, target)                              unweighted, every canvas position, EOS fill included
         + CE(lm_head(hidden)[:, :-1], prompt[:, 1:])  the encoder's next-token loss, over the pairs of
                                                       valid tokens only

Letters: B batch, T prompt, C canvas, V vocab.
"""

from dataclasses import dataclass

import numpy as np

from tinydg.model import denoise, encode, lm_head

EPS = 1e-3  # t is never 0: every example has some noise in expectation
SELF_CONDITIONING_P = 0.5


@dataclass(frozen=True)
class Noise:
    t: np.ndarray  # [B] float32 corruption level
    u: np.ndarray  # [B, C] float32 uniforms: position corrupted where u < t
    fresh: np.ndarray  # [B, C] int64 replacement token ids
    sc: np.ndarray  # [B] bool: use self-conditioning in pass 2


def draw_noise(rng, batch_size, canvas_length, vocab_size, eps=EPS, p_sc=SELF_CONDITIONING_P):
    """All the randomness of one training step, from a numpy Generator."""
    t = (eps + (1 - eps) * rng.random(batch_size)).astype(np.float32)
    u = rng.random((batch_size, canvas_length)).astype(np.float32)
    fresh = rng.integers(0, vocab_size, size=(batch_size, canvas_length))
    sc = rng.random(batch_size) < p_sc
    return Noise(t, u, fresh.astype(np.int64), sc)


def corrupt(targets, noise):
    """Uniform corruption: each canvas position becomes a random token with probability t."""
    return np.where(noise.u < noise.t[:, None], noise.fresh, targets)


def cross_entropy(logits, targets, where=None):
    """Mean over positions of -log softmax(logits)[target]. logits [..., V], targets [...]; where [...]
    bool: only those positions count (None: all)."""
    x = np.asarray(logits, dtype=np.float64)
    peak = x.max(axis=-1, keepdims=True)
    log_z = peak[..., 0] + np.log(np.exp(x - peak).sum(axis=-1))
    picked = np.take_along_axis(x, targets[..., None], axis=-1)[..., 0]
    return float(np.mean((log_z - picked) if where is None else (log_z - picked)[where]))


def losses(model, prompt_ids, valid, targets, noise):
    """(diffusion loss, encoder next-token loss) for one batch: prompt_ids, valid [B, T], targets [B, C]."""
    hidden, cache = encode(model, prompt_ids, attention_mask=valid)
    encoder_logits = lm_head(model.ops, model.weights, hidden, model.text.final_logit_softcapping)
    encoder_loss = cross_entropy(encoder_logits[:, :-1], prompt_ids[:, 1:], valid[:, 1:] & valid[:, :-1])
    noisy = corrupt(targets, noise)
    l1 = denoise(model, noisy, cache)
    l2 = np.where(noise.sc[:, None, None], denoise(model, noisy, cache, l1), l1)
    return cross_entropy(l2, targets), encoder_loss


__all__ = ["Noise", "draw_noise", "corrupt", "cross_entropy", "losses"]
