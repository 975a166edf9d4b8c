"""CPU benchmark: generation with the embedded model, BLAS left as it is against one BLAS thread
(`generate(..., blas_threads=None)` against the default "auto"), on a quiet machine and beside a
CPU load (one busy process per core), the two settings interleaved.

    python benchmarks/blas_threads.py [--repeats 10]

Each repeat generates the answer to one sorting problem (seed fixed, so the work is the same every
time) once with each setting; reported are the medians, and the median of the per-pair ratios.
"""

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np
from threadpoolctl import threadpool_info

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import tinydg  # noqa: E402
from tinydg.chat_format import encode_prompt  # noqa: E402

PROMPT = "sort 9 0 3 7 1 8 2 6 4 5 3 1"


def busy_processes(n):
    """n processes that each keep one core busy until killed."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def timed(model, ids, setting):
    t = time.perf_counter()
    tinydg.generate(model, ids, seed=0, blas_threads=setting)
    return time.perf_counter() - t


def measure(model, ids, repeats):
    times = {None: [], "auto": []}
    for _ in range(repeats):
        for setting in times:
            times[setting].append(timed(model, ids, setting))
    ratio = statistics.median(a / b for a, b in zip(times["auto"], times[None]))
    return statistics.median(times[None]), statistics.median(times["auto"]), ratio


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    model = tinydg.load()
    ids = np.array([encode_prompt(model.tokenizer, [{"role": "user", "content": PROMPT}])])
    for setting in (None, "auto"):
        timed(model, ids, setting)  # warm-up
    blas = [lib for lib in threadpool_info() if lib["user_api"] == "blas"]
    print(f"# {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}, numpy {np.__version__}, "
          f"BLAS {blas[0]['internal_api']} {blas[0]['version']} started with {blas[0]['num_threads']} threads")
    print("| machine | BLAS as it is (None) s | one thread (\"auto\") s | auto / None (median of pairs) |")
    print("|---|---|---|---|")
    for label, load in (("quiet", 0), (f"{os.cpu_count()} busy processes", os.cpu_count())):
        procs = busy_processes(load)
        try:
            time.sleep(0.5)
            none, auto, ratio = measure(model, ids, args.repeats)
        finally:
            for p in procs:
                p.kill()
                p.wait()
        print(f"| {label} | {none:.3f} | {auto:.3f} | {ratio:.2f} |", flush=True)


if __name__ == "__main__":
    main()
