"""Run tinydg through the same protocol as `tinydg.tools.reference.record` and compare the two."""

import numpy as np

import tinydg


def host(a):
    """A NumPy array (CuPy arrays, from a model on the GPU, are copied down)."""
    return a.get() if hasattr(a, "get") and not isinstance(a, np.ndarray) else np.asarray(a)


def on_emulated_gpu(folder, dtype, kernels=None):
    """The checkpoint run by the GPU assembly on the CPU: tinydg.gpu.ops.gpu_ops with every kernel and
    cuBLAS product replaced by its NumPy twin, weights stored as the GPU stores them (float32; bf16
    bits for "bfloat16"; and the experts as tinydg.fp8.Float8Rows for "float8")."""
    from tinydg.gpu.ops import gpu_ops
    model = tinydg.load(folder)
    return tinydg.move(model, ops=gpu_ops(dtype, kernels, emulate=True, text=model.text))


def run_tinydg(model, rec):
    """What record() records, computed by tinydg from the recorded inputs (as NumPy arrays)."""
    mask = rec["attention_mask"]
    B, C = rec["canvas"].shape
    enc_trace, dec_trace = {}, {}
    enc_last, cache = tinydg.encode(model, rec["input_ids"], attention_mask=mask, trace=enc_trace)
    logits = tinydg.denoise(model, rec["canvas"], cache, trace=dec_trace)
    logits_sc = tinydg.denoise(model, rec["canvas"], cache, rec["sc_logits"])
    length = cache.length
    commit_hidden, grown = tinydg.encode(model, rec["commit_canvas"], cache, attention_mask=np.ones((B, C), bool))
    assert cache.length == length and grown.length == length + C  # encode returns a new cache
    next_logits = tinydg.denoise(model, rec["next_canvas"], grown)
    return {
        "enc_hidden": np.stack([host(a) for a in enc_trace["hidden"]]),
        "enc_last_hidden": host(enc_last),
        "dec_hidden": np.stack([host(a) for a in dec_trace["hidden"]]),
        "router_idx": np.stack([host(a) for a in dec_trace["router_idx"]]),
        "router_w": np.stack([host(a) for a in dec_trace["router_w"]]),
        "logits": host(logits),
        "logits_sc": host(logits_sc),
        "commit_hidden": host(commit_hidden),
        "next_logits": host(next_logits),
        "cache_lengths": np.array([grown.layer_length(i) for i in range(len(grown.keys))]),
        "argmax": host(logits).argmax(-1),
    }


FLOAT_KEYS = ("enc_hidden", "enc_last_hidden", "dec_hidden", "router_w", "logits", "logits_sc", "next_logits",
              "commit_hidden")


def float32_noise(rec32, rec64):
    """Per array, the largest difference between the reference run in float32 and in float64: how much
    float32 rounding alone moves that output in this model."""
    valid = rec32["attention_mask"].astype(bool)
    noise = {}
    for k in FLOAT_KEYS:
        diff = np.abs(rec32[k].astype(np.float64) - rec64[k])
        noise[k] = float(np.max(diff[..., valid, :] if k.startswith("enc_") else diff))  # padded rows are junk
    return noise


def compare(ours, rec, atol=1e-4, noise=None):
    """Assert tinydg's numbers agree with the reference's recording: within `atol`, or, where `noise` (from
    float32_noise) is given, within twice the reference's own float32 error when that is larger."""
    noise = noise or {}

    def tol(name):
        return max(atol, 2 * noise.get(name, 0.0))

    valid = rec["attention_mask"].astype(bool)  # left-padding rows attend to nothing: compare real tokens only
    for name in ("enc_hidden", "enc_last_hidden"):
        got, want = ours[name], rec[name]
        np.testing.assert_allclose(got[..., valid, :], want[..., valid, :], rtol=1e-4, atol=tol(name), err_msg=name)
    np.testing.assert_allclose(ours["dec_hidden"], rec["dec_hidden"], rtol=1e-4, atol=tol("dec_hidden"),
                               err_msg="dec_hidden")
    np.testing.assert_array_equal(ours["router_idx"], rec["router_idx"], err_msg="router_idx")
    np.testing.assert_allclose(ours["router_w"], rec["router_w"], rtol=1e-4, atol=tol("router_w") / 100,
                               err_msg="router_w")
    for name in ("logits", "logits_sc", "next_logits"):
        np.testing.assert_allclose(ours[name], rec[name], rtol=0, atol=tol(name), err_msg=name)
    np.testing.assert_array_equal(ours["argmax"], rec["commit_canvas"], err_msg="argmax canvas")
    np.testing.assert_allclose(ours["commit_hidden"], rec["commit_hidden"], rtol=1e-4, atol=tol("commit_hidden"),
                               err_msg="commit_hidden")
    np.testing.assert_array_equal(ours["cache_lengths"], rec["cache_lengths"], err_msg="cache_lengths")


def assert_within_bf16_error(ours, rec, folder, factor=1.5):
    """A bf16 run's logits may move from the float32 recording about as far as the reference's own bf16
    run did (weights/fixtures/*/bf16_error.json, from weights/make_bf16_error.py): at most `factor`
    times that, since both are one draw of rounding noise of the same size."""
    import json
    import os
    with open(os.path.join(folder, "bf16_error.json")) as f:
        allowed = json.load(f)["max_abs_logit_error"]
    for name, bound in allowed.items():
        got = float(np.abs(np.asarray(ours[name], dtype=np.float32) - rec[name]).max())
        assert got <= factor * bound, (f"{name}: bf16 logits differ by {got:.3g}, the reference's own bf16 error "
                                       f"is {bound:.3g}")
