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
Which keys a query sees comes from its tinydg.attention.Visibility: `key_range` bounds the columns a
chunk multiplies, and the masked softmax kernel applies the rule per row from the same launch
arguments as kernels.attention. `lib` is the launcher namespace, tinydg.gpu.launchers (cuBLAS and
CUDA) or tinydg.gpu.twins, which runs the very same code on NumPy (cuBLAS's column-major addressing
emulated), which is how it is tested without a GPU.
"""

ALIGN = 8                  # score columns per segment start: 8 bf16 = 16 bytes
SCORE_BYTES = 256 << 20    # float32 scores of one chunk of query rows, at most (about)
FAR = 1 << 62              # a position bound that never binds


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


def attention(q, past_k, past_v, k, v, visibility, lib, *, scale=1.0, score_bytes=SCORE_BYTES):
    """The GPU ops' `attend` on cuBLAS: q [B, H, T, d] float32; past_k, past_v [B, K, S, d] (the cache, at
    positions q_start - S + j) and k, v [B, K, T, d] (this call's tokens, at q_start + j) as bf16 bits,
    two segments never concatenated; visibility: a tinydg.attention.Visibility. -> [B, H, T, d] float32."""
    xp = lib.array_module()
    B, H, Tq, d = q.shape
    K, S1, S2 = past_k.shape[1], past_k.shape[2], k.shape[2]
    G, BK = H // K, B * K
    q_pos0 = visibility.q_start
    pos1, pos2 = q_pos0 - S1, q_pos0
    causal, window = visibility.causal, visibility.window
    qb = lib.to_bf16(q)  # [B, H, Tq, d] = [BK, G, Tq, d], bf16
    k1, v1, k2, v2 = (xp.ascontiguousarray(a) for a in (past_k, past_v, k, v))
    valid = xp.ascontiguousarray(visibility.valid, dtype=xp.uint8)
    out = xp.zeros((B, H, Tq, d), dtype=xp.float32)
    R = rows_per_chunk(Tq, BK, G, S1 + S2, window, score_bytes)
    for i0 in range(0, Tq, R):
        i1 = min(Tq, i0 + R)
        r = i1 - i0
        lo, hi = visibility.key_range(q_pos0 + i0, q_pos0 + i1 - 1)  # the keys any row of the chunk may see
        lo, hi = -FAR if lo is None else lo, FAR if hi is None else hi
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
                    lib.gemm_strided(True, False, n, r, d, scale, k, j0 * d, d, S * d,
                                     qb, (g * Tq + i0) * d, d, G * Tq * d,
                                     0.0, scores, g * r * Lc + col, Lc, G * r * Lc, BK)
        probs = lib.masked_softmax(scores, (n1, pos1 + a1, c2, n2, pos2 + a2), valid, q_pos0 + i0, causal, window, K, G)
        for g in range(G):
            beta = 0.0
            for _, v, S, j0, n, col in segments:
                if n:  # out[bk, g, i0:i1] (+)= probs[bk, g, :, col : col + n] @ v[bk, j0 : j0 + n]
                    lib.gemm_strided(False, False, d, r, n, 1.0, v, j0 * d, d, S * d,
                                     probs, g * r * Lc + col, Lc, G * r * Lc,
                                     beta, out, (g * Tq + i0) * d, d, G * Tq * d, BK)
                    beta = 1.0
    return out
