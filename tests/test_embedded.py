"""The shipped embedded model (weights/embedded/, made by tinydg.tools.embedded.train): it loads as the
default, solves held-out problems with the default sampler settings, and the reference computes
the same logits on it."""

import os

import numpy as np
import pytest

import tinydg
from helpers import EMBEDDED, PROBLEMS, prompt_ids, solve
from tinydg.tokenizer import load_tokenizer
from tinydg.tools.embedded import task


def test_it_is_the_default_and_small():
    assert tinydg.load().path == EMBEDDED
    files = os.listdir(EMBEDDED)
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
            "chat_template.jinja"} <= set(files)
    assert sum(os.path.getsize(os.path.join(EMBEDDED, f)) for f in files) < 20e6


def test_the_problems_are_held_out():
    assert all(task.is_held_out(d) for d in PROBLEMS) and len({len(d) for d in PROBLEMS}) == 9


@pytest.mark.parametrize("digits", PROBLEMS, ids=[task.prompt_text(d) for d in PROBLEMS])
def test_it_sorts_held_out_problems(digits):
    assert solve(tinydg.load(), digits)


def test_with_float8_experts_it_still_sorts():
    """dtype='float8' (tinydg.fp8): the experts quantized to e4m3 with row scales, on the NumPy path."""
    model = tinydg.load(dtype="float8")
    assert all(solve(model, digits) for digits in PROBLEMS)


def test_the_training_loss_went_down():
    import csv
    with open(os.path.join(EMBEDDED, "training_log.csv")) as f:
        rows = list(csv.DictReader(f))
    first, last = float(rows[0]["diffusion_loss"]), float(rows[-1]["diffusion_loss"])
    assert last < first / 20


@pytest.mark.reference
def test_the_reference_computes_the_same_logits(reference):
    import torch
    tokenizer = load_tokenizer(EMBEDDED)
    ids = prompt_ids(tokenizer, PROBLEMS[3])
    canvas = np.random.default_rng(0).integers(0, tokenizer.vocab_size, size=(1, 32))
    model = tinydg.load()
    _, cache = tinydg.encode(model, ids)
    ours = tinydg.denoise(model, canvas, cache)
    torch_model = reference.load_float32(EMBEDDED)
    with torch.no_grad():
        theirs = torch_model(input_ids=torch.as_tensor(ids), decoder_input_ids=torch.as_tensor(canvas)).logits.numpy()
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-4)
