"""The shipped embedded model (weights/embedded/, made by tinydg.tools.embedded.train): it loads as the
default, solves held-out problems with the default sampler settings, holds conversations with
`reverse it` through the kept cache, thinks when asked, and the reference computes the same logits
on it."""

import io
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


def test_it_sorts_held_out_problems():
    """One problem per length from 4 to 12 digits, seed 0. The shipped model solves 100 % of 300 held-out
    first turns (weights/embedded/EVAL.md) and all nine here; eight of nine is the level held, one
    miss of margin for other BLAS builds (the model before it missed the 12-digit one)."""
    model = tinydg.load()
    solved = [solve(model, digits) for digits in PROBLEMS]
    assert sum(solved) >= 8, solved


def test_with_float8_experts_it_still_sorts():
    """dtype='float8' (tinydg.fp8): the experts quantized to e4m3 with row scales, on the NumPy path."""
    model = tinydg.load(dtype="float8")
    assert sum(solve(model, digits) for digits in PROBLEMS) >= 8


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
    model = tinydg.load()
    canvas = np.random.default_rng(0).integers(0, tokenizer.vocab_size, size=(1, model.config.canvas_length))
    _, cache = tinydg.encode(model, ids)
    ours = tinydg.denoise(model, canvas, cache)
    torch_model = reference.load_float32(EMBEDDED)
    with torch.no_grad():
        theirs = torch_model(input_ids=torch.as_tensor(ids), decoder_input_ids=torch.as_tensor(canvas)).logits.numpy()
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-4)


# ---------------------------------------------------------------- conversations and thinking

TWO = task.test_problems(np.random.default_rng(8), 2)  # held out


def chat_answers(model, turns, think=False, system=None, seed=0):
    session = tinydg.Chat(model, think=think, system=system)
    return [session.send(text, seed=seed + i) for i, text in enumerate(turns)]


def test_a_three_turn_conversation_with_reverse_it():
    """Through one tinydg.Chat (the KV cache kept, as --chat does): the second answer is only in the cache."""
    first, second = TWO
    replies = chat_answers(tinydg.load(), [task.prompt_text(first), task.REVERSE, task.prompt_text(second)])
    assert [r.text for r in replies] == [task.answer_text(first), " ".join(reversed(task.answer_text(first).split())),
                                         task.answer_text(second)]
    assert all(r.thought == "" for r in replies)


def test_reverse_it_twice_and_after_a_second_sort():
    first, second = TWO
    replies = chat_answers(tinydg.load(), [task.prompt_text(first), task.prompt_text(second), task.REVERSE,
                                           task.REVERSE], seed=5)
    backwards = " ".join(reversed(task.answer_text(second).split()))
    assert [r.text for r in replies] == [task.answer_text(first), task.answer_text(second), backwards,
                                         task.answer_text(second)]


def test_reverse_it_with_nothing_before():
    assert tinydg.chat(tinydg.load(), task.REVERSE, seed=0).text == task.NOTHING_TO_REVERSE


def test_thinking_writes_a_thought_then_the_answer():
    """Thinking on: a thought channel, then the answer, in as many canvases as they fill. The shipped model
    gets the digit counts exactly right on 99.7 % of held-out first turns and the answer on 100 %
    (weights/embedded/EVAL.md); on these nine held-out problems all nine of each at seed 0 (eight held)."""
    model = tinydg.load()
    replies = [tinydg.chat(model, task.prompt_text(d), think=True, seed=0) for d in PROBLEMS]
    assert all(r.thought for r in replies)
    assert sum(r.text == task.answer_text(d) for r, d in zip(replies, PROBLEMS)) >= 8
    assert sum(r.thought == task.histogram(d) for r, d in zip(replies, PROBLEMS)) >= 8
    for r, d in zip(replies, PROBLEMS):
        written = len(r.thought) + len(r.text) + 11  # <|channel>, "thought\n", <channel|>, <turn|>
        assert len(r.output.steps_per_canvas) == -(-written // model.config.canvas_length)  # the canvases they fill


def test_conversations_through_the_cache():
    """Eight held-out conversations sort, `reverse it`, sort: at least seven answered right in every turn."""
    problems = task.test_problems(np.random.default_rng(9), 16)
    right = 0
    for i in range(8):
        a, b = problems[2 * i], problems[2 * i + 1]
        replies = chat_answers(tinydg.load(), [task.prompt_text(a), task.REVERSE, task.prompt_text(b)], seed=10 * i)
        right += [r.text for r in replies] == [task.answer_text(a), " ".join(reversed(task.answer_text(a).split())),
                                               task.answer_text(b)]
    assert right >= 7


def test_thinking_through_a_conversation():
    first, _ = TWO
    replies = chat_answers(tinydg.load(), [task.prompt_text(first), task.REVERSE], think=True, seed=2)
    assert [(r.thought, r.text) for r in replies] == [
        (task.histogram(first), task.answer_text(first)),
        (f"{len(first)} digits", " ".join(reversed(task.answer_text(first).split())))]


@pytest.mark.parametrize("system", task.SYSTEMS)
def test_a_system_message_changes_little(system):
    """Measured on 300 held-out first turns (seed 1000 + i): 99.7 % right without a system message,
    100 % with each of these; all nine problems here at seed 1 (eight held)."""
    model = tinydg.load()
    right = [tinydg.chat(model, [{"role": "system", "content": system},
                                 {"role": "user", "content": task.prompt_text(d)}], seed=1).text == task.answer_text(d)
             for d in PROBLEMS]
    assert sum(right) >= 8, right


def test_the_command_line_chat_with_reverse_it():
    """`python -m tinydg --chat` on the default weights: three turns, each answer on its own line."""
    from tinydg import cli
    first, second = TWO
    out = io.StringIO()
    lines = "\n".join([task.prompt_text(first), task.REVERSE, task.prompt_text(second)]) + "\n"
    assert cli.main(["--chat", "--seed", "0"], stdin=io.StringIO(lines), stdout=out) == 0
    answers = [line for line in out.getvalue().splitlines() if not line.startswith("canvas ")]
    assert answers == [task.answer_text(first), " ".join(reversed(task.answer_text(first).split())),
                       task.answer_text(second)]


def test_the_command_line_thinks():
    from tinydg import cli
    digits = PROBLEMS[2]
    out = io.StringIO()
    assert cli.main(["--think", "--seed", "0", task.prompt_text(digits)], stdin=io.StringIO(), stdout=out) == 0
    assert out.getvalue().splitlines()[-2:] == [f"thought: {task.histogram(digits)}",
                                               f"answer: {task.answer_text(digits)}"]
