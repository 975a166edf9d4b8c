"""The embedded model's training data (tinydg.tools.embedded.task and .data): conversations of sort and
`reverse it` turns, and the model inputs made from them, which are the tokens tinydg.Chat sends."""

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinydg
from helpers import EMBEDDED, ROOT
from tinydg.errors import InputError
from tinydg.tokenizer import load_tokenizer
from tinydg.tools.embedded import data, task, training

DEMO = os.path.join(ROOT, "weights", "demo")
C = 32


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(EMBEDDED)


def shown(tokenizer, ids, valid):
    """The text of the ids, each masked token written as '_'."""
    return "".join(tokenizer.decode([int(i)]) if v else "_" for i, v in zip(ids, valid))


def test_the_thoughts_and_answers():
    assert task.histogram([7, 2, 9, 2, 4]) == "0020100101"
    assert task.histogram([5] * 12) == "00000c0000"
    assert task.sort_turn([7, 2, 9, 2, 4]) == task.Turn("sort 7 2 9 2 4", "0020100101", "2 2 4 7 9")
    assert task.reverse_turn([2, 2, 4, 7, 9]) == task.Turn("reverse it", "5 digits", "9 7 4 2 2")
    assert task.reverse_turn(None) == task.Turn("reverse it", "no answer yet", "nothing to reverse")


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), turns=st.integers(1, 4))
def test_a_conversation_reverses_the_answer_before(seed, turns):
    conversation = task.conversation(np.random.default_rng(seed), turns=turns, problem=task.held_out_problem)
    assert len(conversation) == turns
    previous = None
    for turn in conversation:
        if turn.user == task.REVERSE:
            assert turn.answer == (task.NOTHING_TO_REVERSE if previous is None else " ".join(reversed(previous.split())))
            previous = None if previous is None else turn.answer
        else:
            digits = [int(d) for d in turn.user.split()[1:]]
            assert task.is_held_out(digits) and turn.answer == task.answer_text(digits)
            assert turn.thought == task.histogram(digits)
            previous = turn.answer


def test_training_conversations_have_no_held_out_sort():
    rng = np.random.default_rng(0)
    for _ in range(200):
        for turn in task.conversation(rng):
            if turn.user != task.REVERSE:
                assert not task.is_held_out([int(d) for d in turn.user.split()[1:]])


def test_a_second_turn_is_what_chat_sends(tokenizer):
    """Spelled out: the first answer as written (empty thought channel, <eos> fill masked), then the new turn."""
    conversation = [task.sort_turn([7, 2, 9]), task.reverse_turn([2, 7, 9])]
    ids, valid, target = data.example(tokenizer, conversation, thinking=False, system="Be brief.", canvas_length=C,
                                      block=0)
    assert shown(tokenizer, ids, valid) == (
        "<bos><|turn>system\nBe brief.<turn|>\n<|turn>user\nsort 7 2 9<turn|>\n<|turn>model\n"
        "<|channel>thought\n<channel|>2 7 9<turn|>" + "_" * (C - 6) +
        "\n<|turn>user\nreverse it<turn|>\n<|turn>model\n<|channel>thought\n<channel|>")
    assert tokenizer.decode(target.tolist()) == "9 7 2<turn|>" + "<eos>" * (C - 6)


def test_a_thinking_answer_fills_two_canvases(tokenizer):
    """Thinking on: no pre-filled thought; the second canvas of an answer sees the first one, all valid."""
    conversation = [task.sort_turn([7, 2, 9, 1, 1, 1, 1, 1, 1, 1, 1, 1])]
    first, second = (data.example(tokenizer, conversation, thinking=True, system=None, canvas_length=C, block=b)
                     for b in (0, 1))
    prompt = "<bos><|turn>system\n<|think|>\n<turn|>\n<|turn>user\nsort 7 2 9 1 1 1 1 1 1 1 1 1<turn|>\n<|turn>model\n"
    written = "<|channel>thought\n0910000101<channel|>1 1 1 1 1 1 1 1 1 2 7 9<turn|>"
    assert shown(tokenizer, *first[:2]) == prompt
    assert shown(tokenizer, *second[:2]) == prompt + tokenizer.decode(first[2].tolist())
    assert tokenizer.decode(first[2].tolist() + second[2].tolist()) == written + "<eos>" * (2 * C - 44)
    with pytest.raises(InputError, match="block 2 of an answer that fills 2 canvases"):
        data.example(tokenizer, conversation, thinking=True, system=None, canvas_length=C, block=2)


def test_an_earlier_thought_stays_in_the_input(tokenizer):
    """As in a chat: the cache holds the thought the model wrote; the chat format would have cut it."""
    conversation = [task.sort_turn([3, 1]), task.sort_turn([2, 0])]
    ids, valid, _ = data.example(tokenizer, conversation, thinking=True, system=None, canvas_length=C, block=0)
    assert shown(tokenizer, ids, valid) == (
        "<bos><|turn>system\n<|think|>\n<turn|>\n<|turn>user\nsort 3 1<turn|>\n<|turn>model\n"
        "<|channel>thought\n0101000000<channel|>1 3<turn|>" + "_" * (C - 24) +
        "\n<|turn>user\nsort 2 0<turn|>\n<|turn>model\n")


def test_pads_go_after_bos_and_are_masked():
    examples = [(np.array([2, 5, 6, 7]), np.array([1, 1, 0, 1], dtype=bool), np.zeros(C, dtype=np.int64)),
                (np.array([2, 8]), np.array([1, 1], dtype=bool), np.ones(C, dtype=np.int64))]
    ids, valid, targets = data.pad_after_bos(examples, pad_id=0)
    assert ids.tolist() == [[2, 5, 6, 7], [2, 0, 0, 8]]
    assert valid.tolist() == [[True, True, False, True], [True, False, False, True]]
    assert targets.tolist() == [[0] * C, [1] * C]


def test_what_the_masked_tokens_hold_changes_nothing(tokenizer):
    """The pads after <bos> and the <eos> fill of an earlier answer are invisible: other ids there give
    the same logits and the same losses."""
    model = tinydg.load(DEMO)
    rng = np.random.default_rng(0)
    examples = [data.example(tokenizer, conversation, thinking=False, system=None, canvas_length=C, block=0)
                for conversation in ([task.sort_turn([4, 1])], [task.sort_turn([4, 1, 5]), task.reverse_turn([1, 4, 5])])]
    ids, valid, targets = data.pad_after_bos(examples, tokenizer.token_to_id("<pad>"))
    assert (~valid).sum() > 30
    other = np.where(valid, ids, rng.integers(0, tokenizer.vocab_size, size=ids.shape))
    noise = training.draw_noise(rng, 2, C, tokenizer.vocab_size)
    # equal up to rounding: other tokens route to other experts, so BLAS multiplies groups of other sizes
    assert training.losses(model, ids, valid, targets, noise) == \
        pytest.approx(training.losses(model, other, valid, targets, noise), rel=1e-5)
    assert training.losses(model, ids, np.ones_like(valid), targets, noise) != \
        pytest.approx(training.losses(model, other, np.ones_like(valid), targets, noise), rel=1e-3)  # unmasked: seen


def test_a_batch_holds_similar_lengths(tokenizer):
    """Drawing 8 batches' worth and sorting them by length cuts the padding to well under half of what
    batches of random lengths need."""
    pad = tokenizer.token_to_id("<pad>")

    def pad_fraction(pool):
        batches = data.batches(tokenizer, np.random.default_rng(0), 16, C, pool=pool)
        fractions = []
        for _ in range(16):
            ids, valid, targets = next(batches)
            assert ids.shape[0] == 16 and targets.shape == (16, C) and valid[:, 0].all()
            fractions.append(np.mean(ids == pad))
        return np.mean(fractions)
    assert pad_fraction(8) < 0.4 * pad_fraction(1)
