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

from .backend import namespace


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
        if spec.is_sliding:
            keep = config.sliding_window - 1
            k, v = k[:, :, k.shape[2] - min(keep, k.shape[2]):], v[:, :, v.shape[2] - min(keep, v.shape[2]):]
        keys.append(k)
        values.append(v)
    valid = xp.concatenate([cache.valid, valid_new], axis=1)
    return KVCache(tuple(keys), tuple(values), cache.length + valid_new.shape[1], valid)

