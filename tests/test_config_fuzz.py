"""Fuzzing config.json and generation_config.json: with any JSON value in any field (one to three
fields of a real fixture's file replaced or removed), `load_config` either succeeds or raises a
TinyDGError, never another exception, and returns in bounded time; when it succeeds, `tinydg.load`
of the folder loads (and the model runs a short forward pass) or raises a TinyDGError too.

The suite runs FUZZ_EXAMPLES examples per test, the same ones every run (the default hypothesis
profile is derandomized). A long search:

    TINYDG_FUZZ_EXAMPLES=5000 python -m pytest -q tests/test_config_fuzz.py
"""

import copy
import json
import os
import shutil
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import tinydg
from helpers import EMBEDDED, FIXTURES
from tinydg.config import load_config
from tinydg.errors import TinyDGError

FUZZ_EXAMPLES = int(os.environ.get("TINYDG_FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=FUZZ_EXAMPLES, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SECONDS = 10  # per example: a config must be refused or loaded (and run) well within this
BASES = {"f32": os.path.join(FIXTURES, "sliding_full_f32"), "embedded": EMBEDDED}

# A fuzzed config that forces its last layer to full attention is warned about, as the reference does.
pytestmark = pytest.mark.filterwarnings("ignore:config. the last layer must use")

WORDS = st.sampled_from(["sliding_attention", "full_attention", "default", "proportional", "vision", "all",
                         "gelu_pytorch_tanh", "diffusion_gemma", "EntropyBoundSamplerConfig", "head_dim",
                         "num_key_value_heads", "rope_theta", "factor", "01", "1", ""])
EDGES = st.sampled_from([0, 1, -1, 2, 3, 7, 8, 16, 2**12 + 1, 2**24, 2**24 + 1, 2**31, 2**63, 2**64, 10**400, -10**400,
                         0.0, -0.0, 0.5, 1.0, 1e-45, 1e-38, 5e-324, 1e-300, 3.5e38, 1e308, 1e400])
SCALARS = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10) | WORDS | EDGES)
JSON_VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=5)
                           | st.dictionaries(st.text(max_size=8) | WORDS, inner, max_size=5), max_leaves=12)
DELETE = object()  # a mutation that removes the key (or list entry) instead of replacing its value


def read(folder, name):
    with open(os.path.join(folder, name)) as f:
        return json.load(f)


def paths(doc, prefix=(), skip=("vision_config",)):
    """Every key path into doc (list indices too); below `skip` only the key itself."""
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    out = []
    for key, value in items:
        out.append(prefix + (key,))
        if key not in skip:
            out.extend(paths(value, prefix + (key,), skip))
    return out


# Keys the fixtures leave out, so that their absence is not all the fuzzer sees.
CONFIG_EXTRAS = [("text_config", k) for k in ("global_head_dim", "num_global_key_value_heads",
                                              "final_logit_softcapping", "hidden_activation")] + [
    ("text_config", "per_layer_config", "0"), ("text_config", "rope_parameters", "full_attention", "factor"),
    ("text_config", "rope_parameters", "sliding_attention", "partial_rotary_factor"), ()]
GENERATION_EXTRAS = [(k,) for k in ("max_new_tokens", "max_denoising_steps", "t_min", "t_max", "stability_threshold",
                                    "confidence_threshold", "eos_token_id", "pad_token_id", "bos_token_id")] + [
    ("sampler_config", "entropy_bound"), ("sampler_config", "_cls_name"), ()]


def put(doc, path, value):
    """doc with the value at `path` replaced (or removed, for DELETE); () is the whole document. A path
    through something that is no longer a container leaves doc as it is."""
    if not path:
        return doc if value is DELETE else value
    node = doc
    for key in path[:-1]:
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, list) and isinstance(key, int) and key < len(node):
            node = node[key]
        else:
            return doc
    last = path[-1]
    if isinstance(node, dict):
        node.pop(last, None) if value is DELETE else node.__setitem__(last, value)
    elif isinstance(node, list) and isinstance(last, int) and last < len(node):
        node.pop(last) if value is DELETE else node.__setitem__(last, value)
    return doc


def mutations(doc, extras):
    candidates = sorted(set(paths(doc)) | set(extras), key=repr)
    change = st.tuples(st.sampled_from(candidates), JSON_VALUES | st.just(DELETE))
    return st.lists(change, min_size=1, max_size=3)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """One scratch checkpoint per base: its weights, and the config files each example rewrites."""
    out = {}
    for name, src in BASES.items():
        dst = tmp_path_factory.mktemp(name)
        shutil.copy(os.path.join(src, "model.safetensors"), dst)
        out[name] = str(dst)
    return out


def write(folder, name, doc):
    with open(os.path.join(folder, name), "w") as f:
        json.dump(doc, f)  # NaN and Infinity are written as such (allow_nan), as Python's json reads them


def loads_or_refuses(folder, forward=False):
    """load_config, then tinydg.load (and with `forward` a short forward pass), each succeeding or raising
    a TinyDGError."""
    start = time.perf_counter()
    try:
        config, _ = load_config(folder)
        model = tinydg.load(folder)
        if not forward:
            return event("loaded")
        ids = np.arange(1, 4)[None] % config.text_config.vocab_size
        _, cache = tinydg.encode(model, ids)
        if config.canvas_length <= 64:  # a long canvas is valid but slow to run here
            tinydg.denoise(model, np.zeros((1, config.canvas_length), np.int64), cache)
        event("loaded and ran")
    except TinyDGError as e:
        event(f"refused: {type(e).__name__}")  # pytest --hypothesis-show-statistics counts the outcomes
    finally:
        assert time.perf_counter() - start < SECONDS


def fuzz(folders, data, name, extras, forward=False):
    base = data.draw(st.sampled_from(sorted(BASES)))
    folder = folders[base]
    original = read(BASES[base], name)
    doc = copy.deepcopy(original)
    for path, value in data.draw(mutations(original, extras)):
        doc = put(doc, path, value)
    write(folder, name, doc)
    try:
        loads_or_refuses(folder, forward and base == "f32")  # the small model: its forward pass is quick
    finally:
        write(folder, name, original)


@FUZZ
@given(st.data())
def test_fuzz_config_fields(folders, data):
    fuzz(folders, data, "config.json", CONFIG_EXTRAS, forward=True)


@FUZZ
@given(st.data())
def test_fuzz_generation_config_fields(folders, data):
    fuzz(folders, data, "generation_config.json", GENERATION_EXTRAS)


@FUZZ
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_fuzz_config_bytes(folders, content):
    folder = folders["f32"]
    with open(os.path.join(folder, "config.json"), "wb") as f:
        f.write(content)
    try:
        loads_or_refuses(folder)
    finally:
        write(folder, "config.json", read(BASES["f32"], "config.json"))
