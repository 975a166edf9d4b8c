"""The array namespace: which module (numpy or cupy) computes on a given array.

Every layer function asks its input for its namespace (`xp = namespace(x)`) and then calls
`xp.matmul`, `xp.exp`, ... so the same readable code runs on NumPy arrays on the CPU and on
CuPy arrays on a GPU. Nothing here imports CuPy: an array that is not NumPy's brings its own
module (`cupy.ndarray` -> `cupy`), in the spirit of CuPy's `get_array_module`.
"""

import sys

import numpy as np


def namespace(x):
    """numpy for NumPy arrays (and Python scalars), otherwise the array's own top-level module."""
    if isinstance(x, (np.ndarray, np.generic)):
        return np
    top = type(x).__module__.split(".")[0]
    return sys.modules.get(top, np)

