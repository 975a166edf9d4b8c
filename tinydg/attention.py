"""Attention: masks as small index functions, and grouped-query softmax attention.

Letters: B batch, Tq queries, Tk keys, H query heads, K key/value heads (H = K * G), d head dim.

DiffusionGemma attention (transformers `DiffusionGemma{Encoder,Decoder}TextAttention`):
- scale 1.0 (q and k are RMS-normed, so no 1/sqrt(d)), no attention soft-cap, softmax in float32;
- GQA: query head h reads KV head h // G;
- the encoder is causal (sliding layers: also `k > q - window`) and writes the cache;
- the decoder is bidirectional over [cache ; canvas] and never writes the cache.
A query row whose keys are all masked (a left-padding position) gets zeros, like torch's SDPA.
"""

from .backend import namespace


# --- masks: [Tq, Tk] booleans from absolute positions, True = may attend -------------------------

def causal_mask(q_pos, k_pos):
    """A query sees keys at its own position and before."""
    return k_pos[None, :] <= q_pos[:, None]


def sliding_window_mask(q_pos, k_pos, window):
    """A query sees the `window` most recent positions, itself included (k > q - window)."""
    return causal_mask(q_pos, k_pos) & (k_pos[None, :] > q_pos[:, None] - window)


def padding_mask(valid, k_index):
    """valid [B, S] bool over absolute positions; k_index [Tk] -> [B, 1, 1, Tk] (broadcasts over heads, queries)."""
    return valid[:, k_index][:, None, None, :]


# --- attention ------------------------------------------------------------------------------------

def softmax(scores, axis=-1):
    """float32 softmax that maps a row of only -inf to zeros instead of NaN."""
    xp = namespace(scores)
    peak = xp.max(scores, axis=axis, keepdims=True)
    peak = xp.where(xp.isfinite(peak), peak, xp.float32(0.0))
    e = xp.exp(scores - peak)
    total = xp.sum(e, axis=axis, keepdims=True)
    return e / xp.where(total > 0, total, xp.float32(1.0))


def attention(q, k, v, mask=None, scale=1.0):
    """q [B, H, Tq, d]; k, v [B, K, Tk, d]; mask broadcastable to [B, H, Tq, Tk] or None -> [B, H, Tq, d]."""
    xp = namespace(q)
    B, H, Tq, d = q.shape
    K, Tk = k.shape[1], k.shape[2]
    G = H // K
    qg = q.reshape(B, K, G * Tq, d)  # the G query heads of one KV head share its keys
    scores = (qg @ xp.swapaxes(k, -1, -2)).reshape(B, H, Tq, Tk)  # [B, H, Tq, Tk]
    if scale != 1.0:
        scores = scores * xp.float32(scale)
    if mask is not None:
        scores = xp.where(mask, scores, xp.float32(-xp.inf))
    p = softmax(scores).reshape(B, K, G * Tq, Tk)
    return (p @ v).reshape(B, H, Tq, d)
