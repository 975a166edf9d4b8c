"""Peak memory of one sampler step at the real model's sizes (V = 262144, C = 256, D = 2816).

Measures, with tracemalloc (NumPy reports its buffers to it), the memory a generation step
allocates on top of what it is given: the sampler on the processed logits [B, C, V] (softmax,
entropy, the exponential race, acceptance, renoise, stopping) and the self-conditioning soft
embedding softmax(logits) @ E, and the LM head that makes the logits. The inputs themselves are one [C, V] float32 array each (268 MB
at B = 1); the point of the row chunking is that the step adds only a small fraction of that.

    python benchmarks/sampler_memory.py [--vocab 262144 --canvas 256 --hidden 2816]
"""

import argparse
import os
import platform
import sys
import time
import tracemalloc

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tinydg import sampler  # noqa: E402
from tinydg.model import lm_head, soft_embedding  # noqa: E402
from tinydg.ops import numpy_ops  # noqa: E402
from tinydg.rng import TorchCPUGenerator  # noqa: E402
from tinydg.weights import DECODER  # noqa: E402


def peak_of(fn):
    """(result, seconds, peak bytes allocated by fn beyond what existed before)."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    t = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - t
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return out, seconds, peak


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vocab", type=int, default=262_144)
    ap.add_argument("--canvas", type=int, default=256)
    ap.add_argument("--hidden", type=int, default=2816)
    ap.add_argument("--batch", type=int, default=1)
    args = ap.parse_args()
    B, C, V, D = args.batch, args.canvas, args.vocab, args.hidden
    rng = np.random.default_rng(0)
    processed = (rng.standard_normal((B, C, V), dtype=np.float32) * 4)
    one = processed.nbytes
    rows = TorchCPUGenerator(0)

    def step():
        proposal, draft, entropy = sampler.propose(processed, rows)
        accepted = sampler.accept(entropy, 0.1)
        canvas = sampler.renoise(np.where(accepted, proposal, draft), accepted, rows, V)
        return sampler.stable_and_confident(None, draft, entropy, 1, 0.005), canvas

    _, t_step, peak_step = peak_of(step)
    E = rng.standard_normal((V, D), dtype=np.float32) * 0.02
    weights = {DECODER + "embed_tokens.weight": E}
    ops = numpy_ops()
    _, t_soft, peak_soft = peak_of(lambda: soft_embedding(ops, weights, processed, D))
    hidden = rng.standard_normal((B, C, D), dtype=np.float32)
    _, t_head, peak_head = peak_of(lambda: lm_head(ops, weights, hidden, 30.0))

    print(f"B={B} C={C} V={V} D={D}; one [B, C, V] float32 array = {one / 2**20:.0f} MiB")
    print(f"sampler step:   peak {peak_step / 2**20:7.1f} MiB = {peak_step / one:.3f} x [C, V], {t_step:.2f} s")
    print(f"soft embedding: peak {peak_soft / 2**20:7.1f} MiB = {peak_soft / one:.3f} x [C, V], {t_soft:.2f} s")
    print(f"LM head:        peak {peak_head / 2**20:7.1f} MiB = {peak_head / one:.3f} x [C, V], {t_head:.2f} s"
          " (its output, the logits, is one [C, V])")
    print(f"rows per chunk {sampler.ROWS_PER_CHUNK}; {platform.processor() or platform.machine()}, "
          f"Python {platform.python_version()}, NumPy {np.__version__}")


if __name__ == "__main__":
    main()
