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


def test_the_kernel_table_matches_the_sources():
    """kernels.KERNELS lists exactly the extern "C" kernels each source defines (macros expanded by
    looking for their instantiations), and every name the launchers use is in it."""
    import re
    for file, names in kernels.KERNELS.items():
        text = kernels.source(file)
        defined = set(re.findall(r'extern "C" __global__ void (\w+)\(', text))
        defined |= set(re.findall(r"^[A-Z_]+\((\w+), \w+\)$", text, flags=re.M))  # NAME(kernel, type) macros
        defined.discard("NAME")
        assert defined == set(names), file
    from tinydg.gpu.experimental import kernels as experimental
    launcher = open(kernels.__file__).read() + open(experimental.__file__).read()
    used = set(re.findall(r'"((?:expert|attention|router)_\w*?|f32_to_bf16|bf16_to_f32)(?:_\{dtype\})?"', launcher))
    assert {"router_topk", "expert_counts", "attention_combine", "attention_partial", "expert_gate_up_fp8",
            "attention_scores_softmax"} <= used
    listed = {n for names in kernels.KERNELS.values() for n in names}
    for name in used:
        assert name in listed or any(n.startswith(name + "_") for n in listed), name
