"""What several test files share: where the fixtures are; tinydg run through the reference's
recording protocol and compared with it (parity); the GPU assembly emulated on NumPy; the inputs
that the GPU tests reuse from the CPU tests (bf16 attention segments and their oracle, expert
routings, the embedded model's held-out problems, the recorded generation scenarios); and a chat's
turns recorded and checked against the full history (the command line's and tinydg.Chat's)."""

import json
import os

import numpy as np
from hypothesis import strategies as st

import tinydg
from tinydg import conversation
from tinydg.attention import causal_mask, padding_mask, softmax
from tinydg.bf16 import from_bits, round_to_bf16, to_bits
from tinydg.chat_format import encode_prompt, parse_response
from tinydg.tokenizer import load_tokenizer
from tinydg.tools.embedded import task

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "weights", "fixtures")
GENERATION = os.path.join(FIXTURES, "generation")
EMBEDDED = os.path.join(ROOT, "weights", "embedded")


def fixture_names():
    """The fixture checkpoints with a recorded reference (weights/fixtures/*/reference.npz)."""
    if not os.path.isdir(FIXTURES):
        return []
    return sorted(n for n in os.listdir(FIXTURES) if os.path.exists(os.path.join(FIXTURES, n, "reference.npz")))


# --- parity: what tinydg.tools.reference.record records, computed by tinydg and compared -------------

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


def run_tinydg(model, rec, images=None):
    """What record() records, computed by tinydg from the recorded inputs (as NumPy arrays); images:
    the prompt's images, as tinydg.encode takes them. logits_sc only where rec holds sc_logits."""
    mask = rec["attention_mask"]
    B, C = rec["canvas"].shape
    enc_trace, dec_trace = {}, {}
    enc_last, cache = tinydg.encode(model, rec["input_ids"], attention_mask=mask, images=images, trace=enc_trace)
    logits = tinydg.denoise(model, rec["canvas"], cache, trace=dec_trace)
    logits_sc = tinydg.denoise(model, rec["canvas"], cache, rec["sc_logits"]) if "sc_logits" in rec else None
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
        "logits_sc": None if logits_sc is None else host(logits_sc),
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
    with open(os.path.join(folder, "bf16_error.json")) as f:
        allowed = json.load(f)["max_abs_logit_error"]
    for name, bound in allowed.items():
        got = float(np.abs(np.asarray(ours[name], dtype=np.float32) - rec[name]).max())
        assert got <= factor * bound, (f"{name}: bf16 logits differ by {got:.3g}, the reference's own bf16 error "
                                       f"is {bound:.3g}")


# --- bf16 attention segments and the GEMM attention's oracle ------------------------------------------

def draw_inputs(data, rng, config, batch, prompt_len):
    """The inputs reference.record takes, drawn for `config`: ids and a left-padding mask [B, T] (every
    row keeps a real token), a canvas and the next canvas [B, C]."""
    V, C = config["text_config"]["vocab_size"], config["canvas_length"]
    ids = rng.integers(0, V, (batch, prompt_len))
    mask = np.ones((batch, prompt_len), bool)
    for b in range(batch):
        mask[b, :data.draw(st.integers(0, prompt_len - 1))] = False
    return ids, mask, rng.integers(0, V, (batch, C)), rng.integers(0, V, (batch, C))


def draw_segments(seed, B, K, G, Tq, S1, d, pad):
    """q [B, H, Tq, d] float32; a cache segment k1, v1 [B, K, S1, d] and this call's k2, v2 [B, K, Tq, d]
    as bf16 bits, at positions pos1 + j and pos2 + j = pos1 + S1 + j; valid [B, pos2 + Tq] with left
    padding when `pad`."""
    r = np.random.default_rng(seed)
    H = K * G
    q = r.standard_normal((B, H, Tq, d)).astype(np.float32)
    k1, v1 = (to_bits(r.standard_normal((B, K, S1, d)).astype(np.float32)) for _ in range(2))
    k2, v2 = (to_bits(r.standard_normal((B, K, Tq, d)).astype(np.float32)) for _ in range(2))
    start = int(r.integers(0, 5))
    pos1, pos2 = start, start + S1
    valid = np.ones((B, pos2 + Tq), dtype=bool)
    if pad:
        for b in range(B):
            valid[b, : int(r.integers(0, pos2 + Tq + 1))] = False
    return q, k1, v1, pos1, k2, v2, pos2, valid


def gemm_attention_oracle(q, k1, v1, pos1, k2, v2, pos2, q_pos0, causal, window, valid, scale):
    """The readable attention, rounding what the tensor cores see: q and the probabilities. The mask is
    built here from the small index functions, independently of tinydg.attention.Visibility."""
    B, H, Tq, d = q.shape
    K, S1, S2 = k1.shape[1], k1.shape[2], k2.shape[2]
    keys = np.concatenate([from_bits(k1), from_bits(k2)], axis=2)
    values = np.concatenate([from_bits(v1), from_bits(v2)], axis=2)
    k_pos = np.concatenate([np.arange(pos1, pos1 + S1), np.arange(pos2, pos2 + S2)])
    q_pos = np.arange(q_pos0, q_pos0 + Tq)
    mask = causal_mask(q_pos, k_pos) if causal else np.ones((Tq, S1 + S2), dtype=bool)
    if window > 0:
        mask = mask & (k_pos[None, :] > q_pos[:, None] - window)
    mask = mask[None, None] & padding_mask(valid.astype(bool), k_pos)
    G = H // K
    scores = (round_to_bf16(q).reshape(B, K, G * Tq, d) @ np.swapaxes(keys, -1, -2)).reshape(B, H, Tq, -1)
    scores = scores * np.float32(scale)
    p = round_to_bf16(softmax(np.where(mask, scores, np.float32(-np.inf)))).reshape(B, K, G * Tq, -1)
    return (p @ values).reshape(B, H, Tq, d)


def routing(r, N, E, A, skew):
    """idx [N, A] int32: distinct experts per token; with skew, expert 0 is in almost every token's choice."""
    p = np.ones(E) / E
    if skew:
        p = np.full(E, 0.1 / max(E - 1, 1))
        p[0] = 0.9 if E > 1 else 1.0
        p /= p.sum()
    return np.stack([r.choice(E, A, replace=False, p=p) for _ in range(N)]).astype(np.int32)


# --- the recorded generation scenarios (weights/fixtures/generation/) ---------------------------------

SCENARIOS = sorted(f[:-4] for f in os.listdir(GENERATION) if f.endswith(".npz")) if os.path.isdir(GENERATION) else []


def load_scenario(name):
    """(model, recorded arrays, recorded random draws [(kind, array)], generation settings)."""
    with np.load(os.path.join(GENERATION, name + ".npz")) as f:
        data = {k: f[k] for k in f.files}
    draws = [(k.split("_", 2)[2], data[k]) for k in sorted(k for k in data if k.startswith("draw_"))]
    model = tinydg.load(os.path.join(FIXTURES, str(data["checkpoint"])))
    return model, data, draws, json.loads(str(data["settings"]))


def run_scenario(model, data, settings, rng):
    return tinydg.generate(model, data["input_ids"], rng=rng, attention_mask=data["attention_mask"],
                           decoder_input_ids=data.get("decoder_input_ids"), **settings)


# --- the embedded model's held-out problems -----------------------------------------------------------

PROBLEMS = task.test_problems(np.random.default_rng(7), 9)  # one per length from 4 to 12 digits, held out


def prompt_ids(tokenizer, digits):
    return np.array([encode_prompt(tokenizer, [{"role": "user", "content": task.prompt_text(digits)}])])


def solve(model, digits):
    """True when generate (the checkpoint's own sampler settings) sorts the digits, in parallel:
    more than 1.5 tokens per decoder forward."""
    tokenizer = load_tokenizer(EMBEDDED)
    ids = prompt_ids(tokenizer, digits)
    out = tinydg.generate(model, ids, seed=0)
    answer = parse_response(tokenizer.decode(out.sequences[0, ids.shape[1]:].tolist())).answer
    return answer == task.answer_text(digits) and out.tokens_per_forward[0] > 1.5


# --- a chat's turns: recorded, and checked against the full history ---------------------------------

def record_turns(monkeypatch):
    """A list that fills with one (model, input_ids, keyword arguments, Output) per stream call that a
    chat turn makes (tinydg.conversation.take_turn: the command line's turns and tinydg.Chat's)."""
    made, original = [], conversation.stream

    def recording(model, input_ids, *args, **kwargs):
        out = yield from original(model, input_ids, *args, **kwargs)
        made.append((model, np.asarray(input_ids), kwargs, out))
        return out

    monkeypatch.setattr(conversation, "stream", recording)
    return made


def assert_second_turn_is_the_full_history(tokenizer, first, second, images=None):
    """A chat's second turn (first and second: record_turns entries) sent only what the cache lacks (the
    last canvas, its stop and pad tokens masked, and the new user turn) and got the same tokens and
    cache as generating from the whole history encoded from scratch (with images: the images of both
    turns, which that one call encodes). Returns that history [1, L] and its mask [1, L] (what the model
    has seen, as one prompt)."""
    (model, _, _, out1), (_, ids2, kw2, out2) = first, second
    C = model.config.canvas_length
    assert kw2["cache"] is out1.cache
    assert out1.cache.length == out1.sequences.shape[1] - C
    np.testing.assert_array_equal(ids2[0, :C], out1.sequences[0, -C:])
    hidden = [tokenizer.token_to_id(t) for t in ("<pad>", "<eos>", "<|tool_response>")]
    mask2 = kw2["attention_mask"]
    np.testing.assert_array_equal(mask2[0, :C], ~np.isin(out1.sequences[0, -C:], hidden))

    history = np.concatenate([out1.sequences[:, :-C], ids2], axis=1)
    mask = np.concatenate([out1.cache.valid, mask2], axis=1)
    settings = {k: v for k, v in kw2.items() if k not in ("cache", "attention_mask")}
    if images is not None:
        settings["images"] = images
    assert ids2.shape[1] < history.shape[1] and out1.cache.length > 0
    scratch = tinydg.generate(model, history, attention_mask=mask, **settings)
    np.testing.assert_array_equal(scratch.sequences[:, history.shape[1]:], out2.sequences[:, ids2.shape[1]:])
    assert scratch.cache.length == out2.cache.length
    np.testing.assert_array_equal(scratch.cache.valid, out2.cache.valid)
    for ours, theirs in zip(out2.cache.keys + out2.cache.values, scratch.cache.keys + scratch.cache.values):
        np.testing.assert_allclose(ours, theirs, atol=1e-4)
    return history, mask
