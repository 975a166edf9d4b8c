"""The GPU benchmark scripts' CPU paths: benchmarks/gpu_vs_transformers.py shares transformers'
weights with tinydg and compares the two; on the CPU it runs a tiny config through NumPy."""

import os
import sys

import numpy as np
import pytest

import tinydg

from helpers import ROOT


@pytest.mark.reference
def test_side_by_side_shares_the_weights_and_agrees(reference):
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        import gpu_vs_transformers
    finally:
        sys.path.pop(0)
    results = gpu_vs_transformers.run(prompt=12, repeats=1, device="cpu", tiny=True)
    assert results["tinydg"]["decoder_forward_ms"] > 0
    default = results["transformers"]["default"]
    assert "error" not in default
    assert default["max_abs_logit_diff_vs_tinydg"] < 1e-4  # the same weights, the same numbers
    for label, row in results["transformers"].items():
        assert "error" in row or row["max_abs_logit_diff_vs_tinydg"] < 1e-4, label


def test_full_scale_benchmark_dry_run(tmp_path):
    """benchmarks/gpu_full_scale.py --tiny: the GPU ops emulated on the CPU (every launcher its NumPy twin).
    Checks the arithmetic of the report: the breakdown adds up, the floor and tok/s follow their formulas."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        import gpu_full_scale
    finally:
        sys.path.pop(0)
    results, text = gpu_full_scale.run(str(tmp_path), [12, 40], 1, [], tiny=True, float8_prompts=[12])
    for name in ("full_scale.json", "full_scale.md", "full_scale.png"):
        assert (tmp_path / name).stat().st_size > 0
    rows = results["prompts"]
    paths = ("per-row", "gemm", "gemm+fused", "gemm+fused+cublas")
    assert [(r["dtype"], r["path"], r["prompt"]) for r in rows] == \
        [("bfloat16", p, P) for p in paths for P in (12, 40)] + [("float8", p, 12) for p in ("per-row", "gemm+fused")]
    assert not any("error" in r for r in rows)
    # float8 experts: a byte per weight and a scale per row, against bf16's two bytes
    assert rows[8]["must_move_bytes"]["weights"] < rows[0]["must_move_bytes"]["weights"]
    for r in rows:
        moved = r["must_move_bytes"]
        assert moved["total"] == moved["weights"] + moved["embedding_again"] + moved["kv_cache"] + moved["logits"]
        assert moved["logits"] == 2 * 32 * 370 * 4  # written, and read back as the next step's input
        assert r["floor_ms"] == pytest.approx(moved["total"] / results["copy_bandwidth_Bps"] * 1e3)
        assert r["roofline_ratio"] == pytest.approx(r["decoder_forward_ms"] / r["floor_ms"])
        assert r["tok_per_s"]["16"] == pytest.approx(32 / ((16 * r["decoder_forward_ms"] + r["commit_ms"]) * 1e-3))
    assert rows[1]["must_move_bytes"]["kv_cache"] > rows[0]["must_move_bytes"]["kv_cache"]  # longer prompt, bigger cache
    assert set(results["breakdown"]) == {f"bfloat16, {p}" for p in paths} | {"float8, per-row", "float8, gemm+fused"}
    for breakdown in results["breakdown"].values():
        assert sum(breakdown["ms"].values()) == pytest.approx(breakdown["total_ms"])
        assert {"attention", "experts: grouped GEMMs + combine", "vocabulary: LM head (cuBLAS)",
                "vocabulary: self-conditioning probs @ E (cuBLAS)", "router: softmax + top-k", "bf16 conversions",
                "RMSNorm", "RoPE", "gelu * up", "vocabulary: soft-capping"} <= set(breakdown["ms"])
        assert all(v > 0 for v in breakdown["ms"].values())
        assert breakdown["sampler_ms"] > 0
    assert "| bfloat16 | gemm+fused | 40 |" in text and "| float8 | per-row | 12 |" in text
    # generate end to end: exactly the steps asked for, on both canvases (no early stop, no end token)
    rates = results["generate"]
    assert {(g["dtype"], g["path"], g["steps"]) for g in rates} == \
        {("bfloat16", p, 16) for p in paths} | {("bfloat16", p, s) for p in paths[2:] for s in (12, 48)} | \
        {("float8", "gemm+fused", 16)}
    for g in rates:
        assert "error" not in g and g["forwards"] == 2 * g["steps"] and g["tok_per_s"] > 0


def test_profile_counts_nested_regions_once():
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        from forward_profile import REST, Profile
    finally:
        sys.path.pop(0)

    class Ticks:  # a clock that advances one unit per mark
        t = 0

        def mark(self):
            self.t += 1
            return self.t

        def ms(self, a, b):
            return float(b - a)

        def sync(self):
            pass

    prof = Profile(Ticks(), vocab_size=10, num_experts=4)
    with prof:
        inner = prof.region("inner", lambda: None)
        outer = prof.region("outer", lambda: inner())
        outer()
    # marks: start 1, outer 2..5 (inner 3..4), end 6
    assert prof.table() == {"outer": 2.0, "inner": 1.0, REST: 2.0}
    assert sum(prof.table().values()) == prof.total_ms() == 5.0


def test_profile_times_a_copy_of_the_model():
    """Profile.model times a copy of the model's ops: the same logits, the model it was made from
    left as it was."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        from forward_profile import REST, HostClock, Profile
    finally:
        sys.path.pop(0)
    model = tinydg.load()
    ops = model.ops
    _, cache = tinydg.encode(model, np.array([[1, 2, 3]]))
    canvas = np.zeros((1, model.config.canvas_length), dtype=np.int64)
    prof = Profile(HostClock(), model.text.vocab_size, model.text.num_experts)
    timed = prof.model(model)
    with prof:
        logits = tinydg.denoise(timed, canvas, cache)
    assert model.ops is ops and timed.weights is model.weights
    np.testing.assert_array_equal(logits, tinydg.denoise(model, canvas, cache))
    table = prof.table()
    assert {"attention", "RMSNorm", "vocabulary: LM head (cuBLAS)", REST} <= set(table)
    assert sum(table.values()) == pytest.approx(prof.total_ms())


@pytest.mark.reference
def test_long_prompt_benchmark_smoke(reference, tmp_path):
    """benchmarks/long_prompt.py on one short prompt (blocked attention, one block and a part): each side
    in its own capped process, both fit, their decoder logits agree, and the table and plot are written."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        import long_prompt
    finally:
        sys.path.pop(0)
    plot = tmp_path / "long_prompt.png"
    rows, text = long_prompt.run([("tiny", [600])], threads=1, limit_gb=8, timeout=300, repeats=1,
                                 plot_path=str(plot), log=lambda line: None)
    assert [(r["config"], r["prompt"], r["side"]) for r in rows] == [("tiny", 600, s) for s in long_prompt.SIDES]
    for r in rows:
        assert "error" not in r, r
        assert r["encode_s"] > 0 and r["denoise_s"] > 0 and r["peak_rss_mib"] >= r["rss_before_mib"] > 0
        assert 0 <= r["hwm_extra_mib"] <= r["peak_rss_mib"]
        assert r["logit_diff"] < 1e-4  # the same weights, the same numbers
    assert "| tiny | 600 | tinydg |" in text and "| tiny | 600 | transformers |" in text
    assert plot.stat().st_size > 0


def test_long_prompt_failures_are_named():
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        import long_prompt
    finally:
        sys.path.pop(0)
    assert long_prompt.outcome("MemoryError: Unable to allocate 2.00 GiB") == "did not fit"
    assert long_prompt.outcome("RuntimeError: DefaultCPUAllocator: can't allocate memory") == "did not fit"
    assert long_prompt.outcome("killed (signal 9)") == "did not fit"
    assert long_prompt.outcome("timed out after 60 s") == "did not finish"
    assert long_prompt.brief("RuntimeError: [enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't "
                             "allocate memory: you tried to allocate 4294967296 bytes.") == \
        "RuntimeError: could not allocate 4.0 GiB"
