"""Rotary position embeddings (RoPE), rotate-half convention, as in transformers'
`DiffusionGemmaTextRotaryEmbedding` and `apply_rotary_pos_emb`.

Dim j of a head is rotated together with dim j + d/2 by the angle `position * inv_freq[j]`.

- "default" (sliding layers): inv_freq[j] = theta ** (-2j / d) for every j < d/2.
- "proportional" (full layers): only the first int(partial_rotary_factor * d // 2) frequencies are
  non-zero, still with the exponent 2j/d over the FULL d; the rest are 0, so those dims pass
  through unchanged. For d = 512 and factor 0.25, dims 0-63 rotate with dims 256-319.

Up to position 262,143 the float32 angles equal the reference's for equal inv_freq, and NumPy's cos and sin
agree with torch's within 2**-24. theta ** e here is the float32 power correctly rounded: computed in float64
and rounded once, because NumPy's own float32 power is up to 2 ulps off on CPUs where it takes an AVX-512
path. torch's CPU pow (SLEEF, within 1 ulp, on whole 16-element blocks with AVX2) is one ulp off at one
inv_freq of each real head dim (sliding j=111, full j=29). Near 262,144 that moves the pair's angle by up to 2 ulps,
cos and sin by up to 4e-3 in the full layers: the size of the angle's own float32 rounding
(tests/test_rope_positions.py).
"""

import numpy as np

from .backend import namespace


def _power(theta, exponents):
    """float32 theta ** exponents, correctly rounded: the float64 power rounded once to float32."""
    return (np.float64(np.float32(theta)) ** exponents.astype(np.float64)).astype(np.float32)


def inv_freq(head_dim, rope_type="default", rope_theta=10_000.0, partial_rotary_factor=1.0, factor=1.0):
    """[head_dim // 2] float32 inverse frequencies (float32 like the reference, each power correctly rounded)."""
    if rope_type == "default":
        exponents = np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim)
        return (np.float32(1.0) / _power(rope_theta, exponents)).astype(np.float32)
    if rope_type == "proportional":
        rotated = int(partial_rotary_factor * head_dim // 2)
        exponents = np.arange(0, 2 * rotated, 2, dtype=np.float32) / np.float32(head_dim)
        freqs = np.zeros(head_dim // 2, dtype=np.float32)
        freqs[:rotated] = np.float32(1.0) / _power(rope_theta, exponents)
        return freqs / np.float32(factor)
    raise ValueError(f"unknown RoPE type {rope_type!r}")


def inv_freq_for(spec):
    """inv_freq for a `config.LayerSpec`."""
    return inv_freq(spec.head_dim, spec.rope_type, spec.rope_theta, spec.partial_rotary_factor, spec.rope_factor)


def cos_sin(positions, freqs):
    """positions [T] int, freqs [d/2] -> cos, sin [T, d] float32 (angles repeated for both halves)."""
    xp = namespace(positions)
    angles = positions.astype(xp.float32)[:, None] * xp.asarray(freqs)[None, :]  # [T, d/2]
    angles = xp.concatenate([angles, angles], axis=-1)  # [T, d]
    return xp.cos(angles), xp.sin(angles)


def rotate_half(x):
    """[..., d] -> [..., d]: (x1, x2) -> (-x2, x1)."""
    xp = namespace(x)
    half = x.shape[-1] // 2
    return xp.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def apply_rope(x, cos, sin):
    """x [B, T, heads, d]; cos, sin [T, d] -> [B, T, heads, d]."""
    return x * cos[:, None, :] + rotate_half(x) * sin[:, None, :]
