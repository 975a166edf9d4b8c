"""Attention on the tensor cores through cuBLAS: scores = Q K^T, a masked softmax, O = P V.

The same attention as tinydg.attention.attention (and kernels.attention, which computes it one
query row per warp), built from two batched GEMMs that cuBLAS runs on the tensor cores in bf16 with
float32 accumulation, and one small kernel between them:

    for each chunk of query rows (all of them, unless the scores would pass `score_bytes`):
        keys that any row of the chunk may see: a range of each segment (causal, sliding window)
        scores[bk, g, i, c] = scale * q[bk, g, i] . key_c       one GEMM per query head g and segment
        probs = masked softmax of each row, bf16               kernels.masked_softmax (padding, causal, window)
        out[bk, g, i]       = sum_c probs[bk, g, i, c] value_c  one GEMM per head and segment, the
                                                               second accumulating onto the first
bk = b * K + kv head; g = the query head within its KV group (head h = kv head * G + g). The keys
stay in two segments, the cache and this call's tokens, never concatenated: the score columns hold
[cache keys | pad to a multiple of 8 | new keys | pad], so every operand starts 16-byte aligned.

What is rounded: q and the probabilities to bf16 (the products' inputs, as in the reference's bf16
attention); scores, softmax and sums in float32. Needs bf16 keys and values and head_dim % 8 == 0.
`ops` supplies the array module and the four primitives; ops=HOST runs the very same code on
NumPy (cuBLAS's column-major addressing emulated in tinydg.gpu.twins), which is how it is tested
without a GPU.
"""

from types import SimpleNamespace

import numpy as np

from . import twins

ALIGN = 8                  # score columns per segment start: 8 bf16 = 16 bytes
SCORE_BYTES = 256 << 20    # float32 scores of one chunk of query rows, at most (about)
FAR = 1 << 62              # a position bound that never binds

HOST = SimpleNamespace(xp=np, to_bf16=twins.to_bf16, gemm=twins.gemm_strided, softmax=twins.masked_softmax)


def cuda_ops():
    import cupy

    from . import blas, kernels
    return SimpleNamespace(xp=cupy, to_bf16=kernels.to_bf16, gemm=blas.gemm_strided, softmax=kernels.masked_softmax)


def round_up(n, m):
    return -(-n // m) * m


def visible_range(pos, S, lo, hi):
    """(j0, j1): the keys j of a segment at positions pos + j, 0 <= j < S, with lo <= pos + j <= hi."""
    j0 = min(S, max(0, lo - pos))
    return j0, max(j0, min(S, hi - pos + 1))


def rows_per_chunk(Tq, BK, G, L, window, score_bytes):
    """Query rows per chunk: all Tq, halved until a chunk's scores fit in score_bytes."""
    R = max(1, Tq)
    while R > 1 and BK * G * 4 * R * (min(L, window + R) + 2 * ALIGN if window > 0 else L + 2 * ALIGN) > score_bytes:
        R = (R + 1) // 2
    return R


def attention(q, k1, v1, pos1, k2, v2, pos2, q_pos0, *, causal, window=0, valid=None, scale=1.0,
              score_bytes=SCORE_BYTES, ops=None):
    """kernels.attention's arguments and result: q [B, H, Tq, d] float32 at positions q_pos0 + i; keys and
    values as bf16 bits in two segments [B, K, S1, d] at pos1 + j and [B, K, S2, d] at pos2 + j;
    causal / window / valid [B, L] choose the visible keys. -> [B, H, Tq, d] float32."""
    ops = ops or cuda_ops()
    xp = ops.xp
    B, H, Tq, d = q.shape
    K, S1, S2 = k1.shape[1], k1.shape[2], k2.shape[2]
    G, BK = H // K, B * K
    qb = ops.to_bf16(q)  # [B, H, Tq, d] = [BK, G, Tq, d], bf16
    k1, v1, k2, v2 = (xp.ascontiguousarray(a) for a in (k1, v1, k2, v2))
    end = max(pos1 + S1, pos2 + S2)
    valid = xp.ones((B, end), dtype=xp.uint8) if valid is None else xp.ascontiguousarray(valid, dtype=xp.uint8)
    out = xp.zeros((B, H, Tq, d), dtype=xp.float32)
    R = rows_per_chunk(Tq, BK, G, S1 + S2, window, score_bytes)
    for i0 in range(0, Tq, R):
        i1 = min(Tq, i0 + R)
        r = i1 - i0
        lo = q_pos0 + i0 - window + 1 if window > 0 else -FAR  # the oldest key the first row's window keeps
        hi = q_pos0 + i1 - 1 if causal else FAR                 # the newest key the last row may see
        (a1, b1), (a2, b2) = visible_range(pos1, S1, lo, hi), visible_range(pos2, S2, lo, hi)
        n1, n2 = b1 - a1, b2 - a2
        if n1 + n2 == 0:
            continue  # no row of the chunk sees a key: its output stays 0
        c2 = round_up(n1, ALIGN)
        Lc = round_up(c2 + n2, ALIGN)
        segments = ((k1, v1, S1, a1, n1, 0), (k2, v2, S2, a2, n2, c2))  # keys, values, length, first, count, column
        scores = xp.empty((BK, G, r, Lc), dtype=xp.float32)
        for g in range(G):
            for k, _, S, j0, n, col in segments:
                if n:  # scores[bk, g, :, col : col + n] = scale * q[bk, g, i0:i1] @ k[bk, j0 : j0 + n].T
                    ops.gemm(True, False, n, r, d, scale, k, j0 * d, d, S * d,
                             qb, (g * Tq + i0) * d, d, G * Tq * d,
                             0.0, scores, g * r * Lc + col, Lc, G * r * Lc, BK)
        probs = ops.softmax(scores, (n1, pos1 + a1, c2, n2, pos2 + a2), valid, q_pos0 + i0, causal, window, K, G)
        for g in range(G):
            beta = 0.0
            for _, v, S, j0, n, col in segments:
                if n:  # out[bk, g, i0:i1] (+)= probs[bk, g, :, col : col + n] @ v[bk, j0 : j0 + n]
                    ops.gemm(False, False, d, r, n, 1.0, v, j0 * d, d, S * d,
                             probs, g * r * Lc + col, Lc, G * r * Lc,
                             beta, out, (g * Tq + i0) * d, d, G * Tq * d, BK)
                    beta = 1.0
    return out
