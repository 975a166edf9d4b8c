"""Every CUDA source compiles for the H100 (sm_90) with NVRTC, on any machine, GPU or not."""

import pytest

from tinydg.gpu import compile_check, kernels


@pytest.mark.parametrize("name", kernels.SOURCES)
def test_kernel_source_compiles_for_sm90(name):
    ok, log = compile_check.compile_source(kernels.source(name), name)
    assert ok, f"{name} does not compile for {compile_check.ARCH}:\n{log}"


def test_a_broken_kernel_is_caught():
    broken = kernels.source("router.cu").replace("warp_max(peak);", "warp_max(peak)")
    ok, log = compile_check.compile_source(broken, "router.cu")
    assert not ok and "error" in log


def test_every_launched_kernel_exists():
    """Each name kernels.py launches is defined (extern "C", so unmangled) in the source it names."""
    import re
    launched = re.findall(r'_kernel\("(\w+\.cu)", f?"(\w+?)(\{variant\})?"\)', open(kernels.__file__).read())
    assert len(launched) >= 10
    for file, name, templated in launched:
        text = kernels.source(file)
        for full in ([name + "f32", name + "bf16"] if templated else [name]):
            assert re.search(rf'extern "C" __global__ void {full}\(', text) or re.search(rf"\w+\({full}, ", text), full
