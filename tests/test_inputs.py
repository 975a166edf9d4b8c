"""Bad input gets a clear error that names the problem; nothing is half-loaded or silently wrong."""

import json
import os
import shutil

import numpy as np
import pytest

import tinydg
from helpers import FIXTURES
from tinydg.checkpoint import open_checkpoint
from tinydg.errors import CheckpointError, ConfigError, InputError
from tinydg.tools.safetensors_writer import save_safetensors
from tinydg.weights import resolve

F32 = os.path.join(FIXTURES, "sliding_full_f32")
SHARDED = os.path.join(FIXTURES, "bf16_sharded")


@pytest.fixture(scope="module")
def model():
    return tinydg.load(F32)


def copy_fixture(src, tmp_path):
    dst = tmp_path / "ckpt"
    shutil.copytree(src, dst)
    return dst


def test_token_ids_outside_the_vocabulary(model):
    with pytest.raises(InputError, match="token id 128, outside the vocabulary"):
        tinydg.encode(model, np.array([[1, 128]]))
    with pytest.raises(InputError, match="token id -1"):
        tinydg.encode(model, np.array([[-1, 3]]))
    _, cache = tinydg.encode(model, np.array([[1, 2]]))
    with pytest.raises(InputError, match="canvas_ids holds token id 999"):
        tinydg.denoise(model, np.full((1, 8), 999), cache)


def test_prompt_past_max_position_embeddings(model):
    limit = model.text.max_position_embeddings
    with pytest.raises(InputError, match="past max_position_embeddings"):
        tinydg.encode(model, np.ones((1, limit + 1), np.int64))
    _, cache = tinydg.encode(model, np.ones((1, limit - 4), np.int64))
    with pytest.raises(InputError, match="the canvas would reach position"):
        tinydg.denoise(model, np.ones((1, 8), np.int64), cache)


def test_shapes_and_batches(model):
    with pytest.raises(InputError, match="2-D"):
        tinydg.encode(model, np.array([1, 2, 3]))
    with pytest.raises(InputError, match="integer token ids"):
        tinydg.encode(model, np.array([[1.0, 2.0]]))
    with pytest.raises(InputError, match="attention_mask must have the shape"):
        tinydg.encode(model, np.array([[1, 2]]), attention_mask=np.ones((1, 3)))
    _, cache = tinydg.encode(model, np.array([[1, 2], [3, 4]]))
    with pytest.raises(InputError, match="batch size 1 but the cache holds 2"):
        tinydg.denoise(model, np.ones((1, 8), np.int64), cache)
    with pytest.raises(InputError, match="needs the cache"):
        tinydg.denoise(model, np.ones((2, 8), np.int64), None)
    with pytest.raises(InputError, match="self_conditioning_logits must have shape"):
        tinydg.denoise(model, np.ones((2, 8), np.int64), cache, np.zeros((2, 8, 5), np.float32))


def test_denoise_never_changes_the_cache(model):
    _, cache = tinydg.encode(model, np.array([[5, 6, 7]]))
    before = [k.copy() for k in cache.keys]
    tinydg.denoise(model, np.arange(8)[None], cache)
    assert all(np.array_equal(a, b) for a, b in zip(before, cache.keys)) and cache.length == 3


def test_missing_folder_and_pickles(tmp_path):
    with pytest.raises(InputError, match="not found"):
        tinydg.load(str(tmp_path / "nope"))
    ckpt = copy_fixture(F32, tmp_path)
    os.remove(ckpt / "model.safetensors")
    (ckpt / "pytorch_model.bin").write_bytes(b"\x80\x04 not to be unpickled")
    with pytest.raises(CheckpointError, match="pickle"):
        tinydg.load(str(ckpt))


def test_missing_and_truncated_shard(tmp_path):
    ckpt = copy_fixture(SHARDED, tmp_path)
    shard = sorted(p for p in os.listdir(ckpt) if p.startswith("model-"))[1]
    data = (ckpt / shard).read_bytes()
    (ckpt / shard).write_bytes(data[:-10])
    with pytest.raises(CheckpointError, match="truncated"):
        tinydg.load(str(ckpt))
    os.remove(ckpt / shard)
    with pytest.raises(CheckpointError, match=shard):
        tinydg.load(str(ckpt))


def test_unknown_dtype_is_named(tmp_path):
    ckpt = copy_fixture(F32, tmp_path)
    raw = (ckpt / "model.safetensors").read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    name = next(k for k in header if k != "__metadata__")
    header[name]["dtype"] = "Q4"
    new = json.dumps(header, separators=(",", ":")).encode()
    new += b" " * (n - len(new))  # keep the data offsets valid
    (ckpt / "model.safetensors").write_bytes(raw[:8] + new[:n] + raw[8 + n:])
    with pytest.raises(CheckpointError, match="Q4"):
        tinydg.load(str(ckpt))


def test_weights_not_matching_the_config(tmp_path):
    ckpt = copy_fixture(F32, tmp_path)
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["text_config"]["hidden_size"] = 48
    (ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"model.decoder.embed_tokens.weight has shape \[128, 32\], "
                                              r"expected \[128, 48\]"):
        tinydg.load(str(ckpt))


def test_missing_and_unexpected_tensors_are_named():
    text = tinydg.load(F32).text
    stored = dict(open_checkpoint(F32))
    del stored["model.decoder.layers.1.experts.down_proj"]
    stored["model.decoder.layers.9.mlp.gate_proj.weight"] = np.zeros((2, 2))
    with pytest.raises(CheckpointError) as e:
        resolve(stored, text)
    assert "missing tensor model.decoder.layers.1.experts.down_proj" in str(e.value)
    assert "unexpected tensor model.decoder.layers.9.mlp.gate_proj.weight" in str(e.value)
    stored = dict(open_checkpoint(F32))
    del stored["model.encoder.language_model.layers.0.layer_scalar"]  # not shared: the decoder's cannot stand in
    with pytest.raises(CheckpointError, match="missing tensor model.encoder.language_model.layers.0.layer_scalar"):
        resolve(stored, text)


def test_tied_lm_head_and_vision_weights_are_accepted(tmp_path):
    text = tinydg.load(F32).text
    stored = dict(open_checkpoint(F32))
    stored["lm_head.weight"] = np.zeros((text.vocab_size, text.hidden_size))
    stored["model.encoder.vision_tower.anything.weight"] = np.zeros(3)
    assert len(resolve(stored, text)) == len(resolve(dict(open_checkpoint(F32)), text))
    stored["lm_head.weight"] = np.zeros((3, 3))
    with pytest.raises(CheckpointError, match="lm_head.weight has shape"):
        resolve(stored, text)


def test_all_mode_is_refused_at_load(tmp_path):
    ckpt = copy_fixture(F32, tmp_path)
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["text_config"]["use_bidirectional_attention"] = "all"
    (ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="'all' is not supported"):
        tinydg.load(str(ckpt))


def test_save_and_reload_through_our_writer(tmp_path):
    """A checkpoint written by tinydg's own safetensors writer, in bf16, loads and computes the same as
    the bf16 fixture it was copied from."""
    src = tinydg.load(SHARDED)
    out = tmp_path / "copy"
    shutil.copytree(SHARDED, out, ignore=shutil.ignore_patterns("model*.safetensors*"))
    save_safetensors(str(out / "model.safetensors"), {k: v.raw() for k, v in open_checkpoint(SHARDED).items()},
                     dtype="BF16")
    ids = np.array([[7, 8, 9, 10]])
    _, c1 = tinydg.encode(src, ids)
    _, c2 = tinydg.encode(tinydg.load(str(out)), ids)
    np.testing.assert_array_equal(c1.keys[0], c2.keys[0])


def test_cuda_graph_needs_the_gpu_backend(model):
    with pytest.raises(InputError, match="cuda_graph=True needs the model on the cupy backend"):
        tinydg.generate(model, np.array([[1, 2, 3]]), seed=0, cuda_graph=True)
