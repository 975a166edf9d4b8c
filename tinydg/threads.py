"""How many BLAS threads the NumPy backend's matrix products use during generation.

A product of the embedded model (hidden 128) takes microseconds: less than it takes to hand half
of it to a second BLAS thread. On a machine busy with other work, BLAS threads that wait for each
other make generation many times slower (benchmarks/RESULTS.md, "BLAS threads"). So `generate` and
`stream` run the products of small models on one BLAS thread; large models keep BLAS's own
choice, where more threads pay off.

    blas_threads="auto"   one thread when hidden_size <= SMALL_HIDDEN (and the numpy backend), else as is
    blas_threads=None     as is: whatever BLAS was started with (OPENBLAS_NUM_THREADS, ...)
    blas_threads=n        n threads

The limit holds only inside each forward pass and sampler step, never while the caller's code runs
between steps. threadpoolctl sets it on the BLAS library NumPy loaded.
"""

import contextlib
import functools

from .errors import InputError, is_int, shown

SMALL_HIDDEN = 512  # models up to this hidden size multiply on one BLAS thread with blas_threads="auto"


def blas_threads_for(model, blas_threads="auto"):
    """The number of BLAS threads to use for `model`, or None to leave BLAS as it is."""
    if blas_threads is None or (is_int(blas_threads) and blas_threads >= 1):
        return blas_threads if blas_threads is None else int(blas_threads)
    if blas_threads != "auto":
        raise InputError(f"blas_threads must be 'auto', None or an int >= 1, got {shown(blas_threads)}")
    small = model.backend == "numpy" and model.text.hidden_size <= SMALL_HIDDEN
    return 1 if small else None


def limited(threads):
    """A context manager in which BLAS uses `threads` threads (None: nothing changes)."""
    if threads is None:
        return contextlib.nullcontext()
    return _controller().limit(limits=threads, user_api="blas")


@functools.lru_cache(maxsize=1)
def _controller():
    """threadpoolctl's view of the loaded BLAS libraries, found once (finding them reads the process's
    library list; each limit then only sets a thread count)."""
    from threadpoolctl import ThreadpoolController
    return ThreadpoolController()
