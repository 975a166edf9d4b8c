"""2-D axial RoPE, the vision tower's rotary position embedding (transformers 5.23
`Gemma4VisionRotaryEmbedding` and `apply_multidimensional_rope`, models/gemma4/modeling_gemma4.py).

A patch sits at (x, y) = (column, row). Each head of d channels is cut into two halves of d/2:

    head = [ first half: turned by the column x | second half: turned by the row y ]

and each half is an ordinary rotate-half RoPE (tinydg.rope) of width d/2 on its own axis, with
inv_freq[j] = theta ** (-2j / (d/2)) for j < d/4 (theta = 100 in the real checkpoint: 18 frequencies
per axis for d = 72). Both axes share the frequencies. rotate_half acts inside each half, never across
the whole head. Letters: N patches, heads the heads of q or k, d head dim.
"""

from .rope import cos_sin, inv_freq


def axial_inv_freq(head_dim, rope_theta):
    """[d/4] float32: the inverse frequencies of one axis, a default RoPE over d/2 channels."""
    return inv_freq(head_dim // 2, "default", rope_theta)


def axial_tables(positions, freqs):
    """positions [N, 2] int (x, y); freqs [d/4] -> ((cos_x, sin_x), (cos_y, sin_y)), each [N, d/2]."""
    return cos_sin(positions[:, 0], freqs), cos_sin(positions[:, 1], freqs)


def apply_axial_rope(ops, x, tables):
    """x [1, N, heads, d] -> [1, N, heads, d]: the first d/2 channels turned by x, the last d/2 by y.
    `tables` from axial_tables; ops.rope is tinydg.rope.apply_rope on NumPy."""
    xp = ops.xp
    half = x.shape[-1] // 2
    (cos_x, sin_x), (cos_y, sin_y) = tables
    by_column = ops.rope(x[..., :half], cos_x, sin_x)  # [1, N, heads, d/2]
    by_row = ops.rope(x[..., half:], cos_y, sin_y)  # [1, N, heads, d/2]
    return xp.concatenate([by_column, by_row], axis=-1)
