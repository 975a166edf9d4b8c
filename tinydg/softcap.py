"""Logit soft-capping: the decoder's logits pass through cap * tanh(logits / cap).

DiffusionGemma caps its final logits at `final_logit_softcapping` = 30 (transformers
`DiffusionGemmaForBlockDiffusion`: logits / cap, tanh, * cap), so no logit leaves (-30, 30).
Attention scores are not capped in this model.
"""

from .backend import namespace


def softcap(logits, cap):
    """logits <- cap * tanh(logits / cap), float32, in place (at the real vocabulary a [C, V]
    temporary would be 268 MB); returns logits."""
    xp = namespace(logits)
    c = xp.float32(cap)
    logits /= c
    xp.tanh(logits, out=logits)
    logits *= c
    return logits
