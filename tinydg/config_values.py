"""The checks every value read from config.json passes: its type and its range.

config.json comes from anywhere, so tinydg checks each value it uses before using it: an integer where
the reference wants one (a NumPy integer scalar too, never a bool), a finite number where it wants a
float, true or false where it wants a bool. A value that fails raises a ConfigError naming the field,
so that a damaged or hostile file cannot cause a crash, a NaN or an absurd allocation later. Used by
tinydg.config (the text model and generation settings) and tinydg.vision_config (the vision tower).
"""

import math

import numpy as np

from .errors import ConfigError, is_int, shown

# The model computes in float32: a float setting beyond its largest value would turn into inf, and a
# positive one below its smallest normal value would vanish or lose its precision.
FLOAT32_MAX = float(np.finfo(np.float32).max)
FLOAT32_TINY = float(np.finfo(np.float32).tiny)


def integer(value, name, minimum, maximum, prefix="config: "):
    """An integer (a NumPy integer scalar too, never a bool) in [minimum, maximum], as a Python int."""
    if not (is_int(value) and minimum <= value <= maximum):
        raise ConfigError(f"{prefix}`{name}` must be an integer in [{minimum}, {maximum}], got {shown(value)}")
    return int(value)


def as_float(value):
    """A real number (int, float or NumPy scalar, not a bool) as a Python float, inf for an integer too
    large for one; None for anything else."""
    if is_int(value):
        try:
            return float(value)
        except OverflowError:  # 10**400 is a valid JSON integer
            return math.inf
    return float(value) if isinstance(value, (float, np.floating)) else None


def real(value, name, *, above=None, at_least=None, at_most=FLOAT32_MAX, prefix="config: "):
    """A finite number with above < value (or at_least <= value) and value <= at_most, as a float."""
    x = as_float(value)
    low_ok = x is not None and (above is None or x > above) and (at_least is None or x >= at_least)
    if not (low_ok and math.isfinite(x) and x <= at_most):
        low = f"> {above:g}" if above is not None else f">= {at_least:g}"
        raise ConfigError(f"{prefix}`{name}` must be a finite number {low} and <= {at_most:g}, got {shown(value)}")
    return x


def boolean(value, name, prefix="config: "):
    """true or false (a JSON bool), as it is."""
    if not isinstance(value, bool):
        raise ConfigError(f"{prefix}`{name}` must be true or false, got {shown(value)}")
    return value
