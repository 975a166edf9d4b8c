"""Whole generations against the reference's recorded `generate` (weights/fixtures/generation/).

No torch needed: the recorded random draws are replayed into tinydg, which must produce the same
tokens, the same tokens-per-forward and use exactly the recorded draws. The same runs are then
regenerated from the seed alone with the torch-compatible generator."""

import json
import os

import numpy as np
import pytest

import tinydg
from tinydg.generation import generate
from tinydg.rng import Replay, TorchCPUGenerator

from conftest import FIXTURES

GENERATION = os.path.join(FIXTURES, "generation")
SCENARIOS = sorted(f[:-4] for f in os.listdir(GENERATION) if f.endswith(".npz")) if os.path.isdir(GENERATION) else []


def load_scenario(name):
    with np.load(os.path.join(GENERATION, name + ".npz")) as f:
        data = {k: f[k] for k in f.files}
    draws = [(k.split("_", 2)[2], data[k]) for k in sorted(k for k in data if k.startswith("draw_"))]
    model = tinydg.load(os.path.join(FIXTURES, str(data["checkpoint"])))
    return model, data, draws, json.loads(str(data["settings"]))


def run(model, data, settings, rng):
    return generate(model, data["input_ids"], rng=rng, attention_mask=data["attention_mask"],
                    decoder_input_ids=data.get("decoder_input_ids"), **settings)


def test_scenarios_exist():
    assert set(SCENARIOS) >= {"early_stop", "many_accepted", "eos_left_padding", "canvases_start_canvas"}


@pytest.mark.parametrize("name", SCENARIOS)
def test_replayed_draws_give_the_reference_tokens(name):
    model, data, draws, settings = load_scenario(name)
    replay = Replay(draws)
    out = run(model, data, settings, replay)
    np.testing.assert_array_equal(out.sequences, data["sequences"])
    np.testing.assert_allclose(out.tokens_per_forward, data["tokens_per_forward"], rtol=1e-6)
    assert replay.finished(), "tinydg drew fewer random numbers than the reference"
    recorded = {"integers": sum(a.size for k, a in draws if k == "integers"),
                "exponential": sum(a.size for k, a in draws if k == "exponential")}
    assert replay.served == recorded


@pytest.mark.parametrize("name", SCENARIOS)
def test_seed_alone_reproduces_the_reference(name):
    model, data, _, settings = load_scenario(name)
    out = run(model, data, settings, TorchCPUGenerator(int(data["seed"])))
    np.testing.assert_array_equal(out.sequences, data["sequences"])


def test_scenarios_show_what_they_are_for():
    model, data, draws, settings = load_scenario("early_stop")
    out = run(model, data, settings, Replay(draws))
    assert out.steps_per_canvas.max() < settings["max_denoising_steps"]

    model, data, draws, settings = load_scenario("many_accepted")
    out = run(model, data, settings, Replay(draws))
    assert max(a.max() for a in out.accepted_per_step) >= 3

    model, data, draws, settings = load_scenario("eos_left_padding")
    out = run(model, data, settings, Replay(draws))
    new = out.sequences[:, data["input_ids"].shape[1]:]
    eos = settings["eos_token_id"]
    ended = [row for row in range(len(new)) if np.isin(new[row], eos).any()]
    assert ended and len(ended) < len(new), "one row should end on EOS while another goes on"
    assert (data["attention_mask"] == 0).any()
    for row in ended:
        first = int(np.flatnonzero(np.isin(new[row], eos))[0])
        assert (new[row, first + 1:] == settings["pad_token_id"]).all()

    model, data, draws, settings = load_scenario("canvases_start_canvas")
    out = run(model, data, settings, Replay(draws))
    C = model.config.canvas_length
    assert settings["max_new_tokens"] % C != 0
    assert out.sequences.shape[1] == data["input_ids"].shape[1] + C * -(-settings["max_new_tokens"] // C)
