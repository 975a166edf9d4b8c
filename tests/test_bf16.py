"""tinydg.bf16, the one host bf16 codec, bit for bit against torch (the reference) over every bf16
pattern and over float32 values of every kind: normals, subnormals, ties, overflow, infinities, and
NaNs of both signs with any payload. For NaNs torch has two answers: its scalar conversion
(c10 `round_to_nearest_even`, and CUDA's) gives 0x7FC0, its vectorized CPU loop 0xFFFF. tinydg
follows the scalar rule, which the GPU kernel shares."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinydg.bf16 import from_bits, round_to_bf16, to_bits

torch = pytest.importorskip("torch")


def torch_bits(x):
    """float32 -> torch's bf16 bits: the vectorized conversion, and for NaNs the scalar one."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    bits = torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16).copy()
    for i in np.flatnonzero(np.isnan(x)):
        bits[i] = torch.tensor(x[i]).to(torch.bfloat16).view(torch.int16).item() & 0xFFFF
    return bits


def special_float32_bits():
    """Bit patterns where rounding is easy to get wrong."""
    return np.array([
        0x00000000, 0x80000000,  # zeros
        0x00000001, 0x00008000, 0x00018000, 0x807FFFFF,  # subnormals, subnormal ties
        0x3F808000, 0x3F818000, 0x3F80FFFF, 0x3F807FFF,  # ties to even (down, up), just off ties
        0x7F7F7FFF, 0x7F7F8000, 0x7F7FFFFF, 0xFF7FFFFF,  # near the largest bf16: stays, rounds to inf
        0x7F800000, 0xFF800000,  # infinities
        0x7F800001, 0xFF800001, 0x7FC00000, 0xFFC00000, 0x7FFFFFFF, 0xFFFFFFFF, 0x7F80FFFF,  # NaNs
    ], dtype=np.uint32)


def test_widening_matches_torch_for_every_pattern():
    patterns = np.arange(2**16, dtype=np.uint16)
    theirs = torch.from_numpy(patterns.view(np.int16)).view(torch.bfloat16).float().numpy()
    np.testing.assert_array_equal(from_bits(patterns).view(np.uint32), theirs.view(np.uint32))


def test_narrowing_matches_torch_on_special_values():
    x = special_float32_bits().view(np.float32)
    np.testing.assert_array_equal(to_bits(x), torch_bits(x))


def test_narrowing_matches_torch_on_random_bit_patterns():
    # random bits: about 1 in 256 is a NaN or an infinity, and ties and overflows come up far more
    # often than among normal values
    bits = np.random.default_rng(0).integers(0, 2**32, size=200_000, dtype=np.uint64).astype(np.uint32)
    x = bits.view(np.float32)
    assert np.isnan(x).sum() > 100
    np.testing.assert_array_equal(to_bits(x), torch_bits(x))


@given(st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=64))
def test_narrowing_matches_torch_on_drawn_patterns(values):
    x = np.array(values, dtype=np.uint32).view(np.float32)
    np.testing.assert_array_equal(to_bits(x), torch_bits(x))


@given(st.lists(st.integers(0, 0xFFFF), max_size=64))
def test_widening_is_exact_and_round_trips(values):
    u16 = np.array(values, dtype=np.uint16)
    got = from_bits(u16)
    assert got.dtype == np.float32 and got.shape == u16.shape
    # the float's top half is the pattern (NaN payloads included), the bottom half zero
    np.testing.assert_array_equal(got.view(np.uint32) >> 16, u16)
    np.testing.assert_array_equal(got.view(np.uint32) & 0xFFFF, 0)
    nan = np.isnan(got)
    np.testing.assert_array_equal(to_bits(got)[~nan], u16[~nan])
    assert (to_bits(got)[nan] == 0x7FC0).all()
    np.testing.assert_array_equal(round_to_bf16(got)[~nan], got[~nan])


def test_widening_refuses_other_dtypes():
    with pytest.raises(TypeError, match="uint16"):
        from_bits(np.zeros(3, np.float32))
