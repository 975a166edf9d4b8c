"""The errors tinydg raises on bad input.

Every problem a user can cause (a damaged checkpoint, an inconsistent config, an impossible
setting, a prompt that does not fit) raises one of these with a message that names the problem.
They subclass ValueError so that generic callers can still catch them.
"""

import reprlib

import numpy as np


class TinyDGError(ValueError):
    """Base class of every error tinydg raises on bad input."""


class CheckpointError(TinyDGError):
    """A checkpoint folder or file is missing, damaged, or does not match its config."""


class ConfigError(TinyDGError):
    """config.json / generation_config.json is inconsistent or unsupported."""


class InputError(TinyDGError):
    """Arguments to encode / denoise / generate are out of range or of the wrong shape."""


_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 60


def shown(value) -> str:
    """A value as an error message shows it: a repr cut short (reprlib), since a bad argument may be a
    huge string, list or integer. Python refuses to print an int of more than 4300 digits at all."""
    try:
        return _SHORT.repr(value)
    except ValueError:
        return f"{type(value).__name__} value too large to print"


def is_int(value) -> bool:
    """An integer argument: a Python int or a NumPy integer scalar, not a bool (nor a timedelta64,
    which NumPy files under its integers)."""
    if isinstance(value, (bool, np.timedelta64)):
        return False
    return isinstance(value, (int, np.integer))
