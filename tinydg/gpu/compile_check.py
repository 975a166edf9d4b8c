"""Compile every CUDA source for the H100 (sm_90) without a GPU, so that a broken kernel fails CI.

Uses NVRTC, the compiler CuPy itself runs, from the pip package nvidia-cuda-nvrtc (part of the
`test` extra) or a CUDA toolkit's lib64; the options are the ones kernels.py compiles with.

    python -m tinydg.gpu.compile_check        -> one line per source, exit 1 on any error
"""

import ctypes
import glob
import os
import sys

from .kernels import SOURCES, source

ARCH = "sm_90"
OPTIONS = ("--std=c++17", f"--gpu-architecture={ARCH}")


def find_nvrtc():
    """Path of libnvrtc: a pip-installed nvidia package first, then a CUDA toolkit, else None."""
    candidates = []
    try:
        import nvidia
        for root in nvidia.__path__:
            candidates += glob.glob(os.path.join(root, "*", "lib", "libnvrtc.so*"))
    except ImportError:
        pass
    for root in (os.environ.get("CUDA_HOME", ""), "/usr/local/cuda"):
        if root:
            candidates += glob.glob(os.path.join(root, "lib64", "libnvrtc.so*"))
    libs = sorted(c for c in candidates if "builtins" not in c and "alt" not in os.path.basename(c))
    return libs[0] if libs else None


def compile_source(text, name, lib=None):
    """NVRTC-compile one source for sm_90. Returns (ok, log)."""
    lib = lib or find_nvrtc()
    if lib is None:
        raise RuntimeError("NVRTC not found: pip install nvidia-cuda-nvrtc (the `test` extra), or set CUDA_HOME")
    nvrtc = ctypes.CDLL(lib)
    program = ctypes.c_void_p()
    status = nvrtc.nvrtcCreateProgram(ctypes.byref(program), text.encode(), name.encode(), 0, None, None)
    if status:
        raise RuntimeError(f"nvrtcCreateProgram failed with status {status}")
    try:
        options = (ctypes.c_char_p * len(OPTIONS))(*(o.encode() for o in OPTIONS))
        status = nvrtc.nvrtcCompileProgram(program, len(OPTIONS), options)
        size = ctypes.c_size_t()
        nvrtc.nvrtcGetProgramLogSize(program, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        nvrtc.nvrtcGetProgramLog(program, log)
        return status == 0, log.value.decode(errors="replace").strip()
    finally:
        nvrtc.nvrtcDestroyProgram(ctypes.byref(program))


def main():
    lib = find_nvrtc()
    failed = 0
    for name in SOURCES:
        ok, log = compile_source(source(name), name, lib)
        failed += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {name} ({ARCH})" + (f"\n{log}" if log else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
