"""Random numbers exactly as torch's CPU generator draws them, so that a NumPy sampler seeded with
s reproduces transformers' CPU generations after `torch.manual_seed(s)`.

torch's CPU generator is a Mersenne Twister (MT19937) seeded like `numpy.random.RandomState(seed)`.
From its stream of 32-bit words:
- `torch.randint(0, V, size)` (V < 2**32) takes one word per element: `word % V`;
- `tensor.exponential_()` (float32) takes two words per element: u = ((w0 << 32 | w1) mod 2**53) / 2**53,
  then float32(-log1p(-u)).
Elements are drawn in row-major order. The sampler uses these through the protocol
`integers(high, size=...)` and `exponential(size=...)`, which `numpy.random.Generator` also has.
"""

import math

import numpy as np

from .errors import InputError, is_int, shown

_MASK_53 = np.uint64(2**53 - 1)
_BLOCK = 1 << 20  # exponentials made per block
SEEDS = (-2**63, 2**64)  # what torch.manual_seed accepts: [-0x8000_0000_0000_0000, 0xffff_ffff_ffff_ffff]


def check_seed(seed) -> int:
    """seed as a Python int: an integer (a NumPy integer too; not a bool) in torch.manual_seed's range."""
    if not is_int(seed):
        raise InputError(f"seed must be an integer, got {shown(seed)}")
    if not SEEDS[0] <= int(seed) < SEEDS[1]:
        raise InputError(f"seed must be in [-2**63, 2**64), the range torch.manual_seed takes, got {shown(seed)}")
    return int(seed)


class TorchCPUGenerator:
    """A NumPy stand-in for `torch.Generator()` on the CPU after `manual_seed(seed)`."""

    def __init__(self, seed):
        seed = check_seed(seed)
        # torch keeps the seed modulo 2**64 and MT19937 uses its low 32 bits
        key = np.random.RandomState(seed % 2**32).get_state()[1]  # MT19937 state after torch's (= numpy's legacy) seeding
        self._bits = np.random.MT19937()
        self._bits.state = {"bit_generator": "MT19937", "state": {"key": key, "pos": 624}}

    def _words(self, n):
        """The next n 32-bit words of the stream, as uint64."""
        return self._bits.random_raw(n) & np.uint64(0xFFFFFFFF)

    def integers(self, high, size):
        """Like `torch.randint(0, high, size)`: int64 in [0, high)."""
        if not 0 < high < 2**32:
            raise ValueError(f"high must be in (0, 2**32), got {high}")
        n = math.prod(size) if isinstance(size, tuple) else int(size)
        return (self._words(n) % np.uint64(high)).astype(np.int64).reshape(size)

    def exponential(self, size):
        """Like `torch.empty(size).exponential_()`: float32 Exponential(1) samples. Made in blocks, so
        the 64-bit intermediates never outgrow a fraction of the float32 result."""
        n = math.prod(size) if isinstance(size, tuple) else int(size)
        out = np.empty(n, dtype=np.float32)
        for lo in range(0, n, _BLOCK):
            w = self._words(2 * min(_BLOCK, n - lo))
            u = ((w[0::2] << np.uint64(32)) | w[1::2]) & _MASK_53
            out[lo:lo + _BLOCK] = -np.log1p(-(u.astype(np.float64) / 2.0**53))
        return out.reshape(size)


class Replay:
    """Serves recorded draws back in order: `draws` is a list of ("integers", int array) and
    ("exponential", float32 array) in the order they were drawn. An exponential record may be
    consumed in row chunks (the sampler asks for [rows, V] slices); anything out of order, of the
    wrong size, or left over is an error, so a replay proves the draw sequence as well as the result."""

    def __init__(self, draws):
        self._draws = [(kind, np.asarray(a)) for kind, a in draws]
        self._next = 0  # index of the record being consumed
        self._offset = 0  # elements of it already served
        self.served = {"integers": 0, "exponential": 0}

    def _take(self, kind, size):
        size = tuple(size) if isinstance(size, tuple) else (int(size),)
        n = math.prod(size)
        if self._next >= len(self._draws):
            raise AssertionError(f"{kind}{size} requested after all {len(self._draws)} recorded draws were used")
        rec_kind, rec = self._draws[self._next]
        if rec_kind != kind:
            raise AssertionError(f"draw {self._next}: {kind}{size} requested, but the record holds {rec_kind}{rec.shape}")
        flat = rec.reshape(-1)
        if self._offset + n > flat.size:
            raise AssertionError(f"draw {self._next}: {kind}{size} overruns the recorded {rec_kind}{rec.shape}")
        out = flat[self._offset:self._offset + n].reshape(size)
        self._offset += n
        if self._offset == flat.size:
            self._next, self._offset = self._next + 1, 0
        self.served[kind] += n
        return out

    def integers(self, high, size):
        out = self._take("integers", size)
        if out.size and (out.min() < 0 or out.max() >= high):
            raise AssertionError(f"recorded integers fall outside [0, {high})")
        return out.astype(np.int64)

    def exponential(self, size):
        return self._take("exponential", size).astype(np.float32)

    def finished(self) -> bool:
        """True when every recorded draw has been served, whole."""
        return self._next == len(self._draws) and self._offset == 0
