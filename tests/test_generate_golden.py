"""Whole generations against the reference's recorded `generate` (weights/fixtures/generation/).

No torch needed: the recorded random draws are replayed into tinydg, which must produce the same
tokens, the same tokens-per-forward and use exactly the recorded draws. The same runs are then
regenerated from the seed alone with the torch-compatible generator."""

import numpy as np
import pytest

from helpers import SCENARIOS, load_scenario, run_scenario
from tinydg.rng import Replay, TorchCPUGenerator


def test_scenarios_exist():
    assert set(SCENARIOS) >= {"early_stop", "many_accepted", "eos_left_padding", "canvases_start_canvas"}


@pytest.mark.parametrize("name", SCENARIOS)
def test_replayed_draws_give_the_reference_tokens(name):
    model, data, draws, settings = load_scenario(name)
    replay = Replay(draws)
    out = run_scenario(model, data, settings, replay)
    np.testing.assert_array_equal(out.sequences, data["sequences"])
    np.testing.assert_allclose(out.tokens_per_forward, data["tokens_per_forward"], rtol=1e-6)
    assert replay.finished(), "tinydg drew fewer random numbers than the reference"
    recorded = {"integers": sum(a.size for k, a in draws if k == "integers"),
                "exponential": sum(a.size for k, a in draws if k == "exponential")}
    assert replay.served == recorded


@pytest.mark.parametrize("name", SCENARIOS)
def test_seed_alone_reproduces_the_reference(name):
    model, data, _, settings = load_scenario(name)
    out = run_scenario(model, data, settings, TorchCPUGenerator(int(data["seed"])))
    np.testing.assert_array_equal(out.sequences, data["sequences"])


def test_scenarios_show_what_they_are_for():
    model, data, draws, settings = load_scenario("early_stop")
    out = run_scenario(model, data, settings, Replay(draws))
    assert out.steps_per_canvas.max() < settings["max_denoising_steps"]

    model, data, draws, settings = load_scenario("many_accepted")
    out = run_scenario(model, data, settings, Replay(draws))
    assert max(a.max() for a in out.accepted_per_step) >= 3

    model, data, draws, settings = load_scenario("eos_left_padding")
    out = run_scenario(model, data, settings, Replay(draws))
    new = out.sequences[:, data["input_ids"].shape[1]:]
    eos = settings["eos_token_id"]
    ended = [row for row in range(len(new)) if np.isin(new[row], eos).any()]
    assert ended and len(ended) < len(new), "one row should end on EOS while another goes on"
    assert (data["attention_mask"] == 0).any()
    for row in ended:
        first = int(np.flatnonzero(np.isin(new[row], eos))[0])
        assert (new[row, first + 1:] == settings["pad_token_id"]).all()

    model, data, draws, settings = load_scenario("canvases_start_canvas")
    out = run_scenario(model, data, settings, Replay(draws))
    C = model.config.canvas_length
    assert settings["max_new_tokens"] % C != 0
    assert out.sequences.shape[1] == data["input_ids"].shape[1] + C * -(-settings["max_new_tokens"] // C)
