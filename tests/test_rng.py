"""The torch-compatible generator reproduces torch's CPU random stream, draw for draw."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tinydg.errors import InputError
from tinydg.rng import TorchCPUGenerator

torch = pytest.importorskip("torch")


@settings(max_examples=25)
@given(st.integers(-2**63, 2**64 - 1), st.lists(st.tuples(st.sampled_from(["int", "exp"]), st.integers(1, 3000),
                                                     st.sampled_from([2, 128, 50_000, 262_144])), min_size=1, max_size=5))
def test_same_stream_as_torch(seed, draws):
    torch.manual_seed(seed)
    ours = TorchCPUGenerator(seed)
    for kind, n, high in draws:
        if kind == "int":
            np.testing.assert_array_equal(ours.integers(high, size=(n,)), torch.randint(0, high, (n,)).numpy())
        else:
            np.testing.assert_array_equal(ours.exponential(size=(n,)), torch.empty(n).exponential_().numpy())


def test_large_sampler_shapes():
    """The shapes the sampler draws: (B, C) ids and a (B, C, V) exponential race."""
    torch.manual_seed(7)
    ours = TorchCPUGenerator(7)
    np.testing.assert_array_equal(ours.integers(4096, size=(2, 64)), torch.randint(0, 4096, (2, 64)).numpy())
    np.testing.assert_array_equal(ours.exponential(size=(2, 64, 4096)), torch.empty(2, 64, 4096).exponential_().numpy())
    np.testing.assert_array_equal(ours.integers(4096, size=(2, 64)), torch.randint(0, 4096, (2, 64)).numpy())


def test_seed_must_be_an_integer():
    for bad in (1.5, "3", None, True):
        with pytest.raises(InputError, match="seed"):
            TorchCPUGenerator(bad)
