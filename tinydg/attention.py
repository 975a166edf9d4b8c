"""Attention: which keys each query may see (one rule, one value), and grouped-query softmax attention.

Letters: B batch, T this call's tokens, S cached keys of a layer, Tq queries, Tk keys, H query heads,
K key/value heads (H = K * G), d head dim.

DiffusionGemma attention (transformers `DiffusionGemma{Encoder,Decoder}TextAttention`):
- scale 1.0 (q and k are RMS-normed, so no 1/sqrt(d)), no attention soft-cap, softmax in float32;
- GQA: query head h reads KV head h // G;
- the encoder is causal (sliding layers: also `k > q - window`) and writes the cache; the placeholders
  of one image (a run of <|image|> tokens) also see each other both ways, on every layer and beyond the
  window (the mask transformers' `generate` builds from `mm_token_type_ids`: causal OR same image run);
- the decoder is bidirectional over [cache ; canvas] and never writes the cache.
A query row whose keys are all masked (a left-padding position) gets zeros, like torch's SDPA.

The visibility rule lives here and nowhere else in the runtime: `visible` says which key positions a
query position may see, and a `Visibility` is that rule for one call and one layer type. Each backend
turns it into what it needs: the readable path a dense boolean mask (`Visibility.mask`), the GPU
kernels their launch arguments (tinydg.gpu.ops).
"""

import functools
from dataclasses import dataclass

from .backend import namespace

QUERY_BLOCK = 512  # queries per block when a long prompt is attended in blocks (attend)


# --- the rule: [Tq, Tk] booleans from absolute positions, True = may attend ------------------------

def causal_mask(q_pos, k_pos):
    """A query sees keys at its own position and before."""
    return k_pos[None, :] <= q_pos[:, None]


def window_mask(q_pos, k_pos, window):
    """A query sees no key older than `window` positions before it (k > q - window)."""
    return k_pos[None, :] > q_pos[:, None] - window


def sliding_window_mask(q_pos, k_pos, window):
    """A query sees the `window` most recent positions, itself included: causal and windowed."""
    return causal_mask(q_pos, k_pos) & window_mask(q_pos, k_pos, window)


def padding_mask(valid, k_pos):
    """valid [B, L] bool over absolute positions; k_pos [Tk] -> [B, 1, 1, Tk] (broadcasts over heads, queries)."""
    return valid[:, k_pos][:, None, None, :]


def same_run_mask(q_pos, k_pos, runs, batch):
    """runs: (row, first, last) absolute positions of image runs -> [B, Tq, Tk] bool: True where the
    query and the key lie in the same run of that row (an image's placeholders see each other)."""
    xp = namespace(k_pos)
    out = xp.zeros((batch, len(q_pos), len(k_pos)), dtype=bool)
    for row, first, last in runs:
        q_in = (q_pos >= first) & (q_pos <= last)  # [Tq]
        k_in = (k_pos >= first) & (k_pos <= last)  # [Tk]
        out[row] |= q_in[:, None] & k_in[None, :]
    return out


def visible(q_pos, k_pos, causal, window, valid, runs=()):
    """q_pos [Tq], k_pos [Tk] int; valid [B, L] bool -> [B, 1, Tq, Tk] bool: the whole rule.
    causal: only keys at or before the query; window > 0: only the `window` most recent; runs: image
    runs (row, first, last) whose positions also see each other, past causality and the window;
    valid: only real tokens (left padding is never seen)."""
    xp = namespace(k_pos)
    rule = xp.ones((len(q_pos), len(k_pos)), dtype=bool)
    if causal:
        rule = rule & causal_mask(q_pos, k_pos)
    if window > 0:
        rule = rule & window_mask(q_pos, k_pos, window)
    rule = rule[None, None]  # [1, 1, Tq, Tk]
    if runs:
        rule = rule | same_run_mask(q_pos, k_pos, runs, valid.shape[0])[:, None]  # [B, 1, Tq, Tk]
    return rule & padding_mask(valid, k_pos)


@dataclass(frozen=True, eq=False, repr=False)
class Visibility:
    """Which keys each query of one call may see, in one layer type.

    The queries are this call's T tokens, at positions q_start .. q_start + T - 1. The keys are the
    layer's S cached positions q_start - S .. q_start - 1 (a sliding layer keeps only its last ones)
    followed by this call's tokens. The encoder is causal (sliding layers: also windowed), and each
    image's placeholders among this call's tokens see each other; the decoder sees everything the
    cache keeps and the whole canvas."""
    q_start: int  # position of the first query (= of the first new key)
    cached: int  # S: keys this layer kept in the cache
    causal: bool
    window: int  # 0: no window
    valid: object  # [B, q_start + T] bool: real tokens at every position so far
    runs: tuple = ()  # (row, first, last): absolute positions of each image's placeholder run in this call

    @property
    def queries(self) -> int:
        return self.valid.shape[1] - self.q_start

    def __repr__(self):
        runs = f", image runs={list(self.runs)}" if self.runs else ""
        padded = int((~self.valid.all(axis=1)).sum())
        return (f"Visibility(queries at {self.q_start}..{self.q_start + self.queries - 1}, {self.cached} cached keys, "
                f"causal={self.causal}, window={self.window}, padded rows={padded}{runs})")

    def positions(self):
        """(q_pos [T], k_pos [S + T]): the absolute positions of the queries and of the keys."""
        xp = namespace(self.valid)
        T = self.queries
        return xp.arange(self.q_start, self.q_start + T), xp.arange(self.q_start - self.cached, self.q_start + T)

    @functools.cached_property
    def mask(self):
        """[B, 1, T, S + T] bool for tinydg.attention.attention, or None when every query sees every key.
        Built once per call and layer type (the layers of a type share it)."""
        xp = namespace(self.valid)
        q_pos, k_pos = self.positions()
        if not self.causal and self.window == 0 and bool(xp.all(self.valid[:, k_pos])):
            return None
        return visible(q_pos, k_pos, self.causal, self.window, self.valid, self.runs)

    def key_columns(self, i0, i1):
        """(j0, j1): the columns of [cache ; this call's] keys that queries i0 .. i1 - 1 may see,
        padding aside: a sliding window starts late, a causal query ends at itself."""
        lo, hi = self.key_range(self.q_start + i0, self.q_start + i1 - 1)
        first, columns = self.q_start - self.cached, self.cached + self.queries
        j0 = 0 if lo is None else min(columns, max(0, lo - first))
        j1 = columns if hi is None else max(j0, min(columns, hi - first + 1))
        return j0, j1

    def block_mask(self, i0, i1, j0, j1):
        """The mask of queries i0 .. i1 - 1 over key columns j0 .. j1 - 1: [B, 1, i1 - i0, j1 - j0] bool."""
        q_pos, k_pos = self.positions()
        return visible(q_pos[i0:i1], k_pos[j0:j1], self.causal, self.window, self.valid, self.runs)

    def key_range(self, q_first, q_last):
        """(lo, hi): the oldest and newest key positions that any query in [q_first, q_last] may see,
        padding aside (None: unbounded on that side). A query in an image run also sees its whole run."""
        lo = q_first - self.window + 1 if self.window > 0 else None
        hi = q_last if self.causal else None
        for _, first, last in self.runs:
            if first <= q_last and last >= q_first:  # some query of the range lies in this run
                lo = None if lo is None else min(lo, first)
                hi = None if hi is None else max(hi, last)
        return lo, hi


# --- attention ------------------------------------------------------------------------------------

def softmax(scores, axis=-1, out=None):
    """float32 softmax that maps a row of only -inf to zeros instead of NaN. out=scores computes it in
    place (attention's scores, which nothing else holds): the same numbers, no second array."""
    xp = namespace(scores)
    peak = xp.max(scores, axis=axis, keepdims=True)
    peak = xp.where(xp.isfinite(peak), peak, xp.float32(0.0))
    e = xp.subtract(scores, peak, out=out)
    e = xp.exp(e, out=e)
    total = xp.sum(e, axis=axis, keepdims=True)
    return xp.divide(e, xp.where(total > 0, total, xp.float32(1.0)), out=e)


def attention(q, k, v, mask=None, scale=1.0):
    """q [B, H, Tq, d]; k, v [B, K, Tk, d]; mask broadcastable to [B, H, Tq, Tk] or None -> [B, H, Tq, d]."""
    xp = namespace(q)
    B, H, Tq, d = q.shape
    K, Tk = k.shape[1], k.shape[2]
    G = H // K
    qg = q.reshape(B, K, G * Tq, d)  # the G query heads of one KV head share its keys
    scores = (qg @ xp.swapaxes(k, -1, -2)).reshape(B, H, Tq, Tk)  # [B, H, Tq, Tk], worked on in place below
    if scale != 1.0:
        scores *= xp.float32(scale)
    if mask is not None:
        xp.copyto(scores, xp.float32(-xp.inf), where=~mask)  # what a query may not see
    p = softmax(scores, out=scores).reshape(B, K, G * Tq, Tk)
    return (p @ v).reshape(B, H, Tq, d)


def attend(q, past_k, past_v, k, v, visibility, block=QUERY_BLOCK):
    """Attention of this call's queries over [cache ; this call's] keys, as `visibility` allows.
    q [B, H, T, d]; past_k, past_v [B, K, S, d]; k, v [B, K, T, d] -> [B, H, T, d].

    A prompt of more than `block` tokens is attended in blocks of queries, each over only the keys
    it may see: its scores and mask are [B, H, block, keys seen] instead of [B, H, T, S + T], so memory
    grows linearly with the prompt (for a sliding layer not at all). The sum over the unseen keys was
    exp(-inf) = 0, so the numbers are those of one pass, up to the order of float32 sums."""
    xp = namespace(q)
    keys = xp.concatenate([past_k, k], axis=2) if past_k.shape[2] else k  # [B, K, S + T, d]
    values = xp.concatenate([past_v, v], axis=2) if past_v.shape[2] else v
    T = q.shape[2]
    if T <= block:
        return attention(q, keys, values, visibility.mask)  # scale 1.0
    out = xp.empty(q.shape, dtype=xp.float32)
    for i0 in range(0, T, block):
        i1 = min(T, i0 + block)
        j0, j1 = visibility.key_columns(i0, i1)
        out[:, :, i0:i1] = attention(q[:, :, i0:i1], keys[:, :, j0:j1], values[:, :, j0:j1],
                                     visibility.block_mask(i0, i1, j0, j1))
    return out
