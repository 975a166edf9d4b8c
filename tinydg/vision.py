"""The vision tower and its projector: one image's patches -> soft tokens in the language model's width.

Follows transformers 5.23 `Gemma4VisionModel` (models/gemma4/modeling_gemma4.py), which DiffusionGemma
runs as `model.encoder.vision_tower`, and `DiffusionGemmaMultimodalEmbedder` (`model.encoder.embed_vision`),
as `get_image_features` (models/diffusion_gemma/modeling_diffusion_gemma.py) chains them:

    h = W_in (2 pixels - 1) + T[0][x] + T[1][y]                 patch embedding + factorized position table
    h = layer(h), num_hidden_layers times, each a sandwich:     no final norm
        h = h + post_attention_layernorm( attn( input_layernorm(h) ) )
        h = h + post_feedforward_layernorm( geglu( pre_feedforward_layernorm(h) ) )
      attn: q, k RMS-normed with weights, v without; 2-D axial RoPE (tinydg.vision_rope);
            scale 1.0; every patch sees every patch of the image
    y = mean of each k x k cell of patches * sqrt(Dv)          pooling by patch position
    y = (y - std_bias) * std_scale                              when vision_config.standardize
    e = rms_norm(y) @ W_proj.T                                  projector: its norm has no weight

Every RMSNorm multiplies by its stored weight as it is (no 1 + w). The soft tokens e are NOT multiplied by
the text embedding scale sqrt(D). Only the image's own patches are computed: the reference pads every
image to max_soft_tokens k^2 patches, masks the padding as keys and drops it before pooling, so its
output does not depend on it. Every array operation comes from `model.ops` (tinydg.ops), as in
tinydg/layer.py: the readable functions on NumPy, CuPy arrays on a GPU.

Letters: N patches of the image, t = N / k^2 soft tokens, Dv the tower's hidden size, F its MLP width,
H query heads, K key/value heads, d head dim, p patch side, k pooling kernel, D the text hidden size.
"""

from .attention import Visibility
from .backend import namespace
from .errors import InputError, shown
from .mlp import gated_mlp
from .model import as_array
from .vision_rope import apply_axial_rope, axial_inv_freq, axial_tables
from .weights import PROJECTOR, VISION, vision_layer_shapes


# --- the pieces -------------------------------------------------------------------------------------

def patch_embed(ops, pixel_values, positions, input_proj, position_table):
    """pixel_values [N, p p 3] in [0, 1]; positions [N, 2] (x, y) -> [N, Dv].
    input_proj [Dv, p p 3]; position_table [2, Sp, Dv]: a row per column x, a row per row y."""
    xp = ops.xp
    h = ops.linear(xp.float32(2) * (pixel_values - xp.float32(0.5)), input_proj)  # [0, 1] -> [-1, 1]; [N, Dv]
    position = ops.embedding(position_table[0], positions[:, 0]) + ops.embedding(position_table[1], positions[:, 1])
    return h + position  # [N, Dv]


def vision_attention(ops, x, lw, vision, tables):
    """x [1, N, Dv] -> [1, N, Dv]: multi-head attention of every patch over every patch, scale 1.0.
    lw: one layer's weights by name (layer_weights); tables: the 2-D RoPE tables (axial_tables)."""
    xp, eps, d = ops.xp, vision.rms_norm_eps, vision.head_dim
    N = x.shape[1]
    q = ops.linear(x, lw["self_attn.q_proj.linear.weight"]).reshape(1, N, -1, d)  # [1, N, H, d]
    k = ops.linear(x, lw["self_attn.k_proj.linear.weight"]).reshape(1, N, -1, d)  # [1, N, K, d]
    v = ops.linear(x, lw["self_attn.v_proj.linear.weight"]).reshape(1, N, -1, d)  # [1, N, K, d]
    q = apply_axial_rope(ops, ops.rms_norm(q, lw["self_attn.q_norm.weight"], eps), tables)
    k = apply_axial_rope(ops, ops.rms_norm(k, lw["self_attn.k_norm.weight"], eps), tables)
    v = ops.rms_norm(v, None, eps)  # v_norm has no weight
    heads_first = (0, 2, 1, 3)  # [1, N, heads, d] -> [1, heads, N, d]
    q, k, v = xp.transpose(q, heads_first), xp.transpose(k, heads_first), xp.transpose(v, heads_first)
    k, v = ops.to_cache(k), ops.to_cache(v)  # the keys and values as ops.attend reads them (bf16 on a bf16 GPU)
    nothing_cached = xp.empty((1, k.shape[1], 0, d), dtype=k.dtype)
    everything = Visibility(q_start=0, cached=0, causal=False, window=0, valid=xp.ones((1, N), dtype=bool))
    o = ops.attend(q, nothing_cached, nothing_cached, k, v, everything)  # [1, H, N, d]
    o = xp.transpose(o, heads_first).reshape(1, N, -1)  # [1, N, H d]
    return ops.linear(o, lw["self_attn.o_proj.linear.weight"])


def vision_layer(ops, x, lw, vision, tables):
    """One encoder layer (Gemma4VisionEncoderLayer), four sandwich norms. x [1, N, Dv] -> [1, N, Dv]."""
    eps = vision.rms_norm_eps
    a = vision_attention(ops, ops.rms_norm(x, lw["input_layernorm.weight"], eps), lw, vision, tables)
    h = x + ops.rms_norm(a, lw["post_attention_layernorm.weight"], eps)
    m = gated_mlp(ops, ops.rms_norm(h, lw["pre_feedforward_layernorm.weight"], eps), lw["mlp.gate_proj.linear.weight"],
                  lw["mlp.up_proj.linear.weight"], lw["mlp.down_proj.linear.weight"])  # gelu_tanh GeGLU, width F
    return h + ops.rms_norm(m, lw["post_feedforward_layernorm.weight"], eps)


def pooling_cells(positions, k):
    """positions [N, 2] (x, y) -> [N] int: the k x k cell of each patch, numbered row-major over the
    pooled grid of this image (its width from the largest x). An InputError unless every one of the
    N / k^2 cells holds exactly k^2 patches (the patches tile a grid whose sides are multiples of k)."""
    xp = namespace(positions)
    t = len(positions) // k**2
    columns = int(xp.max(positions[:, 0])) + 1  # the patch grid's width
    cell = positions // k  # [N, 2]
    idx = cell[:, 0] + (columns // k) * cell[:, 1]  # [N]
    if int(xp.max(idx)) >= t or bool(xp.any(xp.bincount(idx, minlength=t) != k**2)):
        raise InputError(f"positions do not tile a grid of {k} x {k} cells (pooling_kernel_size {k}): each of the "
                         f"{t} soft tokens needs exactly {k * k} patches, as process_image makes them")
    return idx


def pool(h, cells, k):
    """h [N, Dv]; cells [N] (pooling_cells) -> [t, Dv]: the mean of the k^2 patches of each cell."""
    xp = namespace(h)
    t = len(cells) // k**2
    weights = (cells[None, :] == xp.arange(t)[:, None]).astype(xp.float32) / xp.float32(k**2)  # [t, N]
    return weights @ h


def standardize(y, std_bias, std_scale):
    """[t, Dv] -> (y - std_bias) * std_scale: a learned per-channel standardization."""
    return (y - std_bias) * std_scale


def embed_vision(ops, y, embedding_projection, eps):
    """The projector into the language model: [t, Dv] -> rms_norm(y) @ W.T [t, D]; W [D, Dv], its norm weightless."""
    return ops.linear(ops.rms_norm(y, None, eps), embedding_projection)


# --- one image ----------------------------------------------------------------------------------------

def layer_weights(weights, vision, i):
    """{name inside the layer: array}: vision layer i's weights ("self_attn.q_proj.linear.weight": ...)."""
    return {name: weights[f"{VISION}encoder.layers.{i}.{name}"] for name in vision_layer_shapes(vision)}


def vision_tower(model, pixel_values, positions):
    """One image's patches -> its soft tokens in the tower's width [t, Dv] (Gemma4VisionModel's output).
    pixel_values [N, p p 3] in [0, 1], positions [N, 2] (x, y): the image's own patches, as
    tinydg.image_processor.process_image returns them (no padding), in any order that tiles the grid."""
    vision, ops, w = _vision_config(model), model.ops, model.weights
    pixels, positions = check_patches(vision, pixel_values, positions, ops.xp)
    cells = pooling_cells(positions, vision.pooling_kernel_size)
    tables = axial_tables(positions, ops.xp.asarray(axial_inv_freq(vision.head_dim,
                                                                   vision.rope_parameters["rope_theta"])))
    h = patch_embed(ops, pixels, positions, w[VISION + "patch_embedder.input_proj.weight"],
                    w[VISION + "patch_embedder.position_embedding_table"])[None]  # [1, N, Dv]
    for i in range(vision.num_hidden_layers):
        h = vision_layer(ops, h, layer_weights(w, vision, i), vision, tables)
    y = pool(h[0], cells, vision.pooling_kernel_size) * ops.xp.float32(vision.hidden_size ** 0.5)  # [t, Dv]
    if vision.standardize:
        y = standardize(y, w[VISION + "std_bias"], w[VISION + "std_scale"])
    return y


def image_features(model, pixel_values, positions):
    """One image's patches -> its soft tokens in the language model's width [t, D], float32: what replaces
    the image's t <|image|> placeholders in the encoder's input embeddings (not scaled by sqrt(D)).
    Arguments as `vision_tower`."""
    y = vision_tower(model, pixel_values, positions)
    return embed_vision(model.ops, y, model.weights[PROJECTOR + "embedding_projection.weight"],
                        _vision_config(model).rms_norm_eps)


# --- inputs -------------------------------------------------------------------------------------------

def check_patches(vision, pixel_values, positions, xp):
    """(pixel_values as float32 [N, p p 3], positions as int64 [N, 2]) on xp, or an InputError naming the
    argument: N a positive multiple of k^2, finite pixels, positions inside the position table."""
    p, k, rows = vision.patch_size, vision.pooling_kernel_size, vision.position_embedding_size
    pixels = as_array(pixel_values, "pixel_values", xp)
    if pixels.ndim != 2 or pixels.shape[1] != 3 * p * p or pixels.dtype.kind not in "fiu":
        raise InputError(f"pixel_values must be numbers of shape [patches, {3 * p * p}] (patch_size {p}: {p} x {p} "
                         f"pixels x RGB), got shape {tuple(pixels.shape)} of {pixels.dtype}")
    N = pixels.shape[0]
    if N == 0 or N % k**2:
        raise InputError(f"pixel_values holds {N} patches: the tower pools {k} x {k} patches into each soft token "
                         f"(pooling_kernel_size {k}), so it needs a positive multiple of {k * k}")
    pixels = pixels.astype(xp.float32, copy=False)
    if not bool(xp.isfinite(pixels).all()):
        raise InputError("pixel_values holds NaN or inf")
    where = as_array(positions, "positions", xp)
    if tuple(where.shape) != (N, 2) or where.dtype.kind not in "iu":
        raise InputError(f"positions must be integers of shape [{N}, 2] (x, y of each patch of pixel_values), got "
                         f"shape {tuple(where.shape)} of {where.dtype}")
    lo, hi = int(xp.min(where)), int(xp.max(where))
    if lo < 0 or hi >= rows:
        raise InputError(f"positions holds {shown(lo if lo < 0 else hi)}, outside the position table [0, {rows}) "
                         "(vision_config.position_embedding_size); pass only the image's own patches, without "
                         "the reference's (-1, -1) padding")
    return pixels, where.astype(xp.int64, copy=False)


def _vision_config(model):
    if model.config.vision_config is None:
        raise InputError("this model has no vision tower: its config.json has no vision_config")
    return model.config.vision_config
