"""RMSNorm, the only normalization in DiffusionGemma.

    rms_norm(x) = x / sqrt(mean(x^2) + eps) * weight

computed in float32 (transformers `DiffusionGemmaRMSNorm`). Unlike Gemma 1-3 the weight is used
as it is (not `1 + weight`). Three norms have no weight at all: the attention `v_norm`, the
router's input norm and the self-conditioning `post_norm`.
"""

from .backend import namespace


def rms_norm(x, weight=None, eps=1e-6):
    """[..., D] -> [..., D], float32. `weight` [D] or None (no learned scale)."""
    xp = namespace(x)
    x = x.astype(xp.float32, copy=False)
    mean_square = xp.mean(x * x, axis=-1, keepdims=True) + xp.float32(eps)
    # 1 / sqrt(ms) is bit-equal to the reference's pow(ms, -0.5)
    y = x * (xp.float32(1.0) / xp.sqrt(mean_square))
    return y if weight is None else y * weight
