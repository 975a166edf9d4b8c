"""The weight stack: which tensors a DiffusionGemma checkpoint holds, their shapes, and lazy access.

Names are the checkpoint's own. Encoder and decoder share one set of weights, stored once under
`model.decoder.*` (what `save_pretrained` writes) or `model.encoder.language_model.*` (which the
reference also loads); tinydg calls every shared weight by its `model.decoder.*` name. The LM
head is tied to `model.decoder.embed_tokens.weight`. Not shared: each side's `layer_scalar`
(`model.decoder.layers.{i}.layer_scalar`, `model.encoder.language_model.layers.{i}.layer_scalar`)
and the decoder-only `model.decoder.self_conditioning.*`.

The vision tower (`model.encoder.vision_tower.*`, transformers' Gemma4VisionModel) and its projector
into the language model (`model.encoder.embed_vision.*`) are stored once, under those names only, and
only a model with a `vision_config` has them (tinydg.vision_config). Their linears are wrapped
(Gemma4ClippableLinear), hence the `.linear.` in `self_attn.q_proj.linear.weight`.

Letters: V vocab, D hidden, I dense intermediate, E experts, Im expert intermediate, H query heads,
K KV heads, d head dim; for the vision tower Dv its hidden size, F its MLP width, p its patch side,
Sp its position table's rows.
"""

import numpy as np

from .errors import CheckpointError

DECODER = "model.decoder."
ENCODER = "model.encoder.language_model."
VISION = "model.encoder.vision_tower."
PROJECTOR = "model.encoder.embed_vision."
VISION_PREFIXES = (VISION, PROJECTOR)
EXPERTS = ("experts.gate_up_proj", "experts.down_proj")  # the MoE experts' stacked weights [E, ., .]
NORMS = ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm", "post_feedforward_layernorm",
         "post_feedforward_layernorm_1", "post_feedforward_layernorm_2", "pre_feedforward_layernorm_2")
VISION_NORMS = ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
                "post_feedforward_layernorm")



def is_expert(name) -> bool:
    """Whether the tensor `name` is an expert weight of the language model (the weights that float8 mode
    stores in float8). The vision tower's position table is 3-D too, and is not one."""
    return name.endswith(EXPERTS) and not name.startswith(VISION_PREFIXES)

def layer_shapes(text, i) -> dict:
    """{name inside layer i: shape} for a TextConfig `text`."""
    spec = text.layers[i]
    D, H, K, d = text.hidden_size, text.num_attention_heads, spec.num_key_value_heads, spec.head_dim
    E, Im, I = text.num_experts, text.moe_intermediate_size, text.intermediate_size
    shapes = {f"{n}.weight": (D,) for n in NORMS}
    shapes.update({
        "self_attn.q_proj.weight": (H * d, D),
        "self_attn.k_proj.weight": (K * d, D),
        "self_attn.o_proj.weight": (D, H * d),
        "self_attn.q_norm.weight": (d,),
        "self_attn.k_norm.weight": (d,),
        "mlp.gate_proj.weight": (I, D),
        "mlp.up_proj.weight": (I, D),
        "mlp.down_proj.weight": (D, I),
        "router.proj.weight": (E, D),
        "router.scale": (D,),
        "router.per_expert_scale": (E,),
        "experts.gate_up_proj": (E, 2 * Im, D),
        "experts.down_proj": (E, D, Im),
        "layer_scalar": (1,),
    })
    if spec.is_sliding:  # full layers have no v_proj: their values are the raw keys
        shapes["self_attn.v_proj.weight"] = (K * d, D)
    return shapes


def weight_shapes(text) -> dict:
    """{canonical name: shape} of every text weight the model needs."""
    V, D, I = text.vocab_size, text.hidden_size, text.intermediate_size
    shapes = {
        DECODER + "embed_tokens.weight": (V, D),
        DECODER + "norm.weight": (D,),
        DECODER + "self_conditioning.pre_norm.weight": (D,),
        DECODER + "self_conditioning.gate_proj.weight": (I, D),
        DECODER + "self_conditioning.up_proj.weight": (I, D),
        DECODER + "self_conditioning.down_proj.weight": (D, I),
    }
    for i in range(text.num_hidden_layers):
        for name, shape in layer_shapes(text, i).items():
            shapes[f"{DECODER}layers.{i}.{name}"] = shape
        shapes[f"{ENCODER}layers.{i}.layer_scalar"] = (1,)
    return shapes


def vision_layer_shapes(vision) -> dict:
    """{name inside vision layer i: shape} for a VisionConfig `vision` (Gemma4VisionEncoderLayer). The
    value norm and the projector's pre-norm have no weight: they are not stored."""
    Dv, F, H, K, d = (vision.hidden_size, vision.intermediate_size, vision.num_attention_heads,
                      vision.num_key_value_heads, vision.head_dim)
    shapes = {f"{n}.weight": (Dv,) for n in VISION_NORMS}
    shapes.update({
        "self_attn.q_proj.linear.weight": (H * d, Dv),
        "self_attn.k_proj.linear.weight": (K * d, Dv),
        "self_attn.v_proj.linear.weight": (K * d, Dv),
        "self_attn.o_proj.linear.weight": (Dv, H * d),
        "self_attn.q_norm.weight": (d,),
        "self_attn.k_norm.weight": (d,),
        "mlp.gate_proj.linear.weight": (F, Dv),
        "mlp.up_proj.linear.weight": (F, Dv),
        "mlp.down_proj.linear.weight": (Dv, F),
    })
    return shapes


def vision_weight_shapes(vision, text_hidden_size) -> dict:
    """{name: shape} of every vision weight a VisionConfig `vision` needs: the tower, then the projector
    onto the text model's hidden size D."""
    Dv, p, Sp = vision.hidden_size, vision.patch_size, vision.position_embedding_size
    shapes = {
        VISION + "patch_embedder.input_proj.weight": (Dv, 3 * p * p),  # one patch: p rows x p columns x RGB
        VISION + "patch_embedder.position_embedding_table": (2, Sp, Dv),  # a row per column (x), a row per row (y)
    }
    if vision.standardize:  # buffers, stored like weights: (x - std_bias) * std_scale after pooling
        shapes[VISION + "std_bias"] = (Dv,)
        shapes[VISION + "std_scale"] = (Dv,)
    for i in range(vision.num_hidden_layers):
        for name, shape in vision_layer_shapes(vision).items():
            shapes[f"{VISION}encoder.layers.{i}.{name}"] = shape
    shapes[PROJECTOR + "embedding_projection.weight"] = (text_hidden_size, Dv)
    return shapes


def _is_shared(canonical):
    """Shared by encoder and decoder, so it may be stored under either prefix."""
    return (canonical.startswith(DECODER) and not canonical.startswith(DECODER + "self_conditioning.")
            and not canonical.endswith(".layer_scalar"))


def resolve(stored: dict, text) -> dict:
    """Map the stored tensors (name -> anything with .shape) to canonical names; check names and shapes.

    Raises CheckpointError naming every missing tensor, unexpected tensor, or wrong shape.
    """
    expected = weight_shapes(text)
    resolved, problems, used = {}, [], set()
    for name, shape in expected.items():
        candidates = [name]
        if _is_shared(name):
            candidates.append(ENCODER + name[len(DECODER):])
        found = next((c for c in candidates if c in stored), None)
        if found is None:
            problems.append(f"missing tensor {name}" + (f" (or {candidates[1]})" if len(candidates) > 1 else ""))
            continue
        used.update(c for c in candidates if c in stored)  # a duplicate under the other prefix is the same weight
        got = tuple(stored[found].shape)
        if got != tuple(shape):
            problems.append(f"tensor {found} has shape {list(got)}, expected {list(shape)}")
            continue
        resolved[name] = stored[found]
    for name in stored:
        if name in used or name.startswith(VISION_PREFIXES):  # vision weights: resolve_vision
            continue
        if name == "lm_head.weight":  # tied to the embedding; a stored copy must at least fit
            V, D = text.vocab_size, text.hidden_size
            if tuple(stored[name].shape) != (V, D):
                problems.append(f"tensor lm_head.weight has shape {list(stored[name].shape)}, expected {[V, D]}")
            continue
        problems.append(f"unexpected tensor {name}")
    _refuse(problems)
    return resolved


def resolve_vision(stored: dict, vision, text_hidden_size) -> dict:
    """The vision weights among the stored tensors (name -> anything with .shape), by name; names and
    shapes checked against `vision` (a VisionConfig, or None for a text-only model, which has none).

    Raises CheckpointError naming every missing tensor, unexpected tensor, or wrong shape.
    """
    names = sorted(name for name in stored if name.startswith(VISION_PREFIXES))
    if vision is None:
        if names:
            more = f" and {len(names) - 1} more" if len(names) > 1 else ""
            raise CheckpointError(f"checkpoint holds vision tensors ({names[0]}{more}) but config.json has no "
                                  "vision_config: add the vision_config they were saved with, or remove them "
                                  "for a text-only model")
        return {}
    if not names:
        raise CheckpointError("checkpoint holds none of the vision tensors its config.json's vision_config "
                              f"describes ({VISION}...): a text-only checkpoint has no vision_config")
    expected = vision_weight_shapes(vision, text_hidden_size)
    problems = [f"missing tensor {name}" for name in expected if name not in stored]
    problems += [f"tensor {name} has shape {list(stored[name].shape)}, expected {list(expected[name])}"
                 for name in expected if name in stored and tuple(stored[name].shape) != tuple(expected[name])]
    problems += [f"unexpected tensor {name}" for name in names if name not in expected]
    _refuse(problems, " (its vision_config)")
    return {name: stored[name] for name in expected}


def _refuse(problems, which=""):
    """A CheckpointError listing the first 20 problems, if there are any."""
    if problems:
        shown = "; ".join(problems[:20]) + (f"; and {len(problems) - 20} more" if len(problems) > 20 else "")
        raise CheckpointError(f"checkpoint does not match its config{which}: {shown}")


class Weights:
    """Canonical name -> array, converted to float32 when used.

    Values may be checkpoint references (anything with `.load()` returning a NumPy array) or arrays.
    `to_device` turns a host array into the backend's array (identity for NumPy). check_finite: refuse
    a tensor holding NaN or inf (on the host, before `to_device`, at its first conversion only).

    cache_bytes, which converted arrays are kept (`_arrays`):
      None   every one, so each tensor is converted once (float32: twice the RAM of a bf16 checkpoint);
      N >= 0 the first ones converted, until they hold N bytes; every other tensor is converted at each
             use, from the memory-mapped file, and dropped after it. 0 keeps none.
    A forward pass reads the weights in the same order every time, so keeping the first N bytes saves
    a conversion of each of them per forward; a least-recently-used cache of the same size would save
    none (the tensor it dropped last is always the next one needed).
    """

    def __init__(self, tensors: dict, to_device=lambda host, name: np.asarray(host), check_finite=True,
                 cache_bytes=None):
        self._tensors = dict(tensors)
        self._arrays = {}
        self._to_device = to_device
        self.check_finite = check_finite
        self.cache_bytes = cache_bytes
        self._finite = set()  # names that passed check_finite

    def __getitem__(self, name):
        array = self._arrays.get(name)
        if array is None:
            array = self._convert(name)
            self._keep(name, array)
        return array

    def _convert(self, name):
        """The tensor as the backend's array, read again from the checkpoint."""
        t = self._tensors[name]
        host = t.load() if hasattr(t, "load") else np.asarray(t, dtype=np.float32)
        if self.check_finite and name not in self._finite:
            check_finite(name, host, getattr(t, "path", None))
            self._finite.add(name)
        return self._to_device(host, name)

    def _keep(self, name, array):
        """Keep array under name if the mode allows: always (None), or while it fits in the bound."""
        if self.cache_bytes is None or self.kept_bytes() + int(array.nbytes) <= self.cache_bytes:
            self._arrays[name] = array

    def __contains__(self, name):
        return name in self._tensors

    def __iter__(self):
        return iter(self._tensors)

    def __len__(self):
        return len(self._tensors)

    def loaded(self) -> int:
        """How many converted tensors are kept now. cache_bytes None: every tensor converted so far
        (lazy loading at work); with a bound, those the cache holds now."""
        return len(self._arrays)

    def kept_bytes(self) -> int:
        """Bytes of the converted tensors kept now (at most cache_bytes, when that is set)."""
        return sum(int(a.nbytes) for a in self._arrays.values())

    def layer(self, i, encoder=False):
        return LayerWeights(self, i, encoder)


def check_finite(name, host, path=None):
    """Refuse a weight holding NaN or inf: every forward pass through it would be NaN. min and max
    propagate NaN and reach any inf, so two passes without a temporary array decide it."""
    if host.size == 0 or (np.isfinite(host.min()) and np.isfinite(host.max())):
        return
    bad = ~np.isfinite(host)
    first = tuple(int(i) for i in np.argwhere(bad)[0])
    where = f" in {path}" if path else ""
    raise CheckpointError(f"tensor {name}{where} holds {int(bad.sum())} NaN or inf values (the first at index "
                          f"{list(first)}: {host[first]}); the checkpoint is damaged")


class LayerWeights:
    """The weights of layer i, by their names inside the layer (`self_attn.q_proj.weight`).
    `layer_scalar` is the encoder's or the decoder's, the only per-side tensor of a layer."""

    def __init__(self, weights, i, encoder):
        self._weights, self._i, self._encoder = weights, i, encoder

    def __getitem__(self, name):
        prefix = ENCODER if (self._encoder and name == "layer_scalar") else DECODER
        return self._weights[f"{prefix}layers.{self._i}.{name}"]


def count_parameters(text) -> tuple[int, int]:
    """(total, active) text parameters for a TextConfig, from the shape table alone (no weights needed).

    Total counts every text weight once (the LM head is the tied embedding). Active counts what one
    token uses: everything except the experts it is not routed to, i.e. the expert weights scaled by
    top_k_experts / num_experts. For the real DiffusionGemma config (`weights/real/config.json`) this
    gives the published 25.2B total and 3.8B active, which leave out the vision tower
    (count_vision_parameters).
    """
    total = expert = 0
    for name, shape in weight_shapes(text).items():
        n = int(np.prod(shape, dtype=np.int64))
        total += n
        if ".experts." in name:
            expert += n
    active = total - expert + expert * text.top_k_experts // text.num_experts
    return total, active


def count_vision_parameters(vision, text_hidden_size) -> tuple[int, int]:
    """(tower, projector) parameters for a VisionConfig, from the shape table alone. The tower includes
    the standardize buffers std_bias and std_scale, which the checkpoint stores like weights. The real
    DiffusionGemma's: 569,550,384 and 3,244,032, together 0.57B beside the 25.2B of the text model."""
    tower = projector = 0
    for name, shape in vision_weight_shapes(vision, text_hidden_size).items():
        n = int(np.prod(shape, dtype=np.int64))
        if name.startswith(PROJECTOR):
            projector += n
        else:
            tower += n
    return tower, projector
