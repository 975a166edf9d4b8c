"""The KV cache the encoder writes and the decoder reads (transformers `DynamicCache` semantics).

Letters: B batch, K key/value heads, S cached positions, d head dim.

- `length` counts every position ever encoded; new tokens get positions length, length+1, ...
- full-attention layers keep every position; sliding layers keep only the last
  `sliding_window - 1` (all a future query can still see: it sees itself plus window - 1 more);
  layer l's entries hold the positions [length - S_l, length).
- `valid` [B, length] marks real tokens; left padding is False and masked everywhere.

A cache is a value: `encode` returns a new one and never changes the one it was given, and the
decoder only reads it.
"""

from dataclasses import dataclass

import numpy as np

from .backend import namespace
from .errors import InputError, is_int, shown


@dataclass(frozen=True)
class KVCache:
    keys: tuple  # per layer [B, K, S_l, d]
    values: tuple  # per layer [B, K, S_l, d]
    length: int  # positions encoded so far
    valid: object  # [B, length] bool

    @property
    def batch_size(self) -> int:
        return self.valid.shape[0]

    def layer_length(self, layer: int) -> int:
        return self.keys[layer].shape[2]


def empty_cache(config, batch_size, xp, dtype):
    """A cache holding nothing, with the right shapes for `config` (a TextConfig)."""
    keys = tuple(xp.zeros((batch_size, s.num_key_value_heads, 0, s.head_dim), dtype=dtype) for s in config.layers)
    return KVCache(keys=keys, values=keys, length=0, valid=xp.zeros((batch_size, 0), dtype=bool))


def append(cache, layer_keys, layer_values, valid_new, config):
    """A new cache with T more positions: layer_keys/values per layer [B, K, T, d]; valid_new [B, T]."""
    xp = namespace(valid_new)
    keys, values = [], []
    for spec, old_k, old_v, k, v in zip(config.layers, cache.keys, cache.values, layer_keys, layer_values):
        k = xp.concatenate([old_k, k], axis=2)
        v = xp.concatenate([old_v, v], axis=2)
        first = k.shape[2] - kept(config, spec, k.shape[2])  # a sliding layer drops its oldest positions
        k, v = k[:, :, first:], v[:, :, first:]
        keys.append(k)
        values.append(v)
    valid = xp.concatenate([cache.valid, valid_new], axis=1)
    return KVCache(tuple(keys), tuple(values), cache.length + valid_new.shape[1], valid)


def kept(config, spec, length):
    """How many positions a layer keeps after `length` have been encoded (see `append`)."""
    return min(length, config.sliding_window - 1) if spec.is_sliding else length


def check_cache(cache, config, batch_size, xp, dtype, what):
    """Refuse a cache that is not this model's: a KVCache whose valid is a bool [batch_size, length]
    array and whose keys and values are, per layer of `config`, [batch_size, K, S_l, d] arrays of the
    module xp holding `dtype`. `what` names the argument that gave batch_size. Only shapes and types
    are read, so nothing comes back from a GPU."""
    if not isinstance(cache, KVCache):
        raise InputError(f"cache must be a tinydg.KVCache (from encode, or Output.cache), got {type(cache).__name__}")
    length, valid = cache.length, cache.valid
    if not (is_int(length) and length >= 0):
        raise InputError(f"cache.length must be an integer >= 0, got {shown(length)}")
    if not (isinstance(valid, xp.ndarray) and valid.dtype == bool and valid.shape[1:] == (length,)):
        raise InputError(f"cache.valid must be a {xp.__name__} bool array [batch, {shown(length)}] (cache.length), "
                         f"got {_describe(valid)}")
    if valid.shape[0] != batch_size:
        raise InputError(f"{what} has batch size {batch_size} but the cache holds {valid.shape[0]} rows")
    for field in ("keys", "values"):
        _check_layers(getattr(cache, field), field, config, batch_size, length, xp, dtype)


def _check_layers(arrays, field, config, batch_size, length, xp, dtype):
    n = len(config.layers)
    if not isinstance(arrays, (tuple, list)) or len(arrays) != n:
        got = f"{len(arrays)} layers" if isinstance(arrays, (tuple, list)) else type(arrays).__name__
        raise InputError(f"cache.{field} must hold one array per layer of this model ({n}), got {got}")
    for i, (spec, a) in enumerate(zip(config.layers, arrays)):
        name = f"cache.{field}[{i}]"
        if not isinstance(a, xp.ndarray):
            raise InputError(f"{name} must be a {xp.__name__} array (this model computes with {xp.__name__}), "
                             f"got {_describe(a)}")
        if a.dtype != dtype:
            raise InputError(f"{name} holds {a.dtype}, but this model's cache holds {np.dtype(dtype)}")
        want = (batch_size, spec.num_key_value_heads, kept(config, spec, length), spec.head_dim)
        if tuple(a.shape) != want:
            raise InputError(f"{name} has shape {tuple(a.shape)}, but layer {i} of this model keeps {want} "
                             "[batch, KV heads, positions, head dim]")


def _describe(a):
    if hasattr(a, "shape") and hasattr(a, "dtype"):
        return f"a {type(a).__module__.split('.')[0]} array of shape {tuple(a.shape)} and dtype {a.dtype}"
    return type(a).__name__
