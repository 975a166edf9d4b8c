"""The text-level API (tinydg.conversation): `tinydg.chat` answers once, `tinydg.Chat` keeps a
conversation's KV cache between turns with the command line's own code, `model.tokenizer` comes
with the checkpoint, and what a user can get wrong is one of tinydg's errors naming it.

The embedded model (weights/embedded) sorts digits and reverses its last answer: here its turns are
checked for what the cache does (tests/test_embedded.py checks its conversations' answers). The command-line comparisons run on the
random demo checkpoint (weights/demo) with 4 denoising steps, as tests/test_cli.py does. No torch needed.
"""

import dataclasses
import io
import os

import numpy as np
import pytest

import tinydg
from helpers import (EMBEDDED, FIXTURES, PROBLEMS, ROOT, assert_second_turn_is_the_full_history, prompt_ids,
                     record_turns)
from tinydg import cli, conversation
from tinydg.chat_format import EMPTY_THOUGHT, encode_prompt, format_prompt
from tinydg.errors import CheckpointError, ConfigError, InputError
from tinydg.tokenizer import load_tokenizer
from tinydg.tools.embedded import task

DEMO = os.path.join(ROOT, "weights", "demo")

TURNS = ("Hi", "How are you?", "Tell me more.")


@pytest.fixture(scope="module")
def embedded():
    return tinydg.load(EMBEDDED)


@pytest.fixture(scope="module")
def demo():
    return tinydg.load(DEMO)


@pytest.fixture
def calls(monkeypatch):
    return record_turns(monkeypatch)


# ---------------------------------------------------------------- tinydg.chat

@pytest.mark.parametrize("digits", PROBLEMS[:3], ids=lambda d: "".join(map(str, d)))
def test_chat_sorts_with_the_embedded_model(embedded, digits):
    reply = tinydg.chat(embedded, task.prompt_text(digits), seed=0)
    assert reply.text == task.answer_text(digits) and reply.thought == ""
    assert isinstance(reply.output, tinydg.Output)


def test_chat_is_generate_on_the_formatted_prompt(embedded):
    """The text goes through the chat format and the model's own tokenizer to `generate`, nothing else."""
    reply = tinydg.chat(embedded, "sort 7 2 9 2 4", seed=3, max_denoising_steps=2)
    ids = prompt_ids(load_tokenizer(EMBEDDED), [7, 2, 9, 2, 4])
    out = tinydg.generate(embedded, ids, seed=3, max_denoising_steps=2)
    np.testing.assert_array_equal(reply.output.sequences, out.sequences)
    as_list = tinydg.chat(embedded, [{"role": "user", "content": "sort 7 2 9 2 4"}], seed=3, max_denoising_steps=2)
    assert as_list == reply  # the same text and thought (a Reply compares by those)
    np.testing.assert_array_equal(as_list.output.sequences, out.sequences)


def test_chat_takes_a_history_and_a_system_message(demo, calls):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello<|channel>old thought<channel|>"},
                {"role": "user", "content": "And now?"}]
    tinydg.chat(demo, messages, seed=0, max_denoising_steps=2)
    (_, ids, kwargs, _), = calls
    assert ids[0].tolist() == encode_prompt(demo.tokenizer, messages)
    assert kwargs["cache"] is None and kwargs["attention_mask"].all()


def test_thinking_mode_returns_the_thought_channel(demo, calls):
    reply = tinydg.chat(demo, "Hi", think=True, seed=2, max_new_tokens=32, max_denoising_steps=4)
    (_, ids, _, out), = calls
    assert demo.tokenizer.decode(ids[0].tolist()) == format_prompt([{"role": "user", "content": "Hi"}], thinking=True)
    written = demo.tokenizer.decode(out.sequences[0, ids.shape[1]:].tolist())
    assert isinstance(reply.thought, str) and isinstance(reply.text, str)
    if reply.thought:  # a thought only from a channel the model wrote
        assert written.startswith("<|channel>")


def test_a_reply_is_a_small_frozen_value(embedded):
    reply = tinydg.chat(embedded, "sort 3 1 2", seed=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        reply.text = "x"
    assert repr(reply) == "Reply(text='1 2 3', thought='')"  # no arrays in the repr


# ---------------------------------------------------------------- tinydg.Chat

def test_chat_send_gives_the_command_lines_tokens(demo, calls):
    """Chat.send is the command line's chat: turn n with seed s + n gives the same input, mask and tokens."""
    code = cli.main(["--weights", DEMO, "--chat", "--seed", "5", "--steps", "4"], stdin=io.StringIO("\n".join(TURNS)),
                    stdout=io.StringIO())
    assert code == 0 and len(calls) == len(TURNS)
    by_cli = list(calls)
    calls.clear()
    session = tinydg.Chat(demo)
    replies = [session.send(text, seed=5 + n, max_denoising_steps=4) for n, text in enumerate(TURNS)]
    assert len(calls) == len(TURNS)
    for (_, ids_cli, kw_cli, out_cli), (_, ids, kw, out), reply in zip(by_cli, calls, replies):
        np.testing.assert_array_equal(ids, ids_cli)
        np.testing.assert_array_equal(kw["attention_mask"], kw_cli["attention_mask"])
        assert kw["seed"] == kw_cli["seed"]
        np.testing.assert_array_equal(out.sequences, out_cli.sequences)
        assert reply.output is out
    assert [m["role"] for m in session.messages] == ["user", "model"] * len(TURNS)
    assert [m["content"] for m in session.messages[::2]] == list(TURNS)
    assert [m["content"] for m in session.messages[1::2]] == [r.text for r in replies]


@pytest.mark.parametrize("seed, stop", [(5, "<turn|>"), (2, "<|tool_response>"), (3, None)],
                         ids=["closed its turn", "other stop token", "length limit"])
def test_turn_two_through_the_cache_is_the_full_history(demo, calls, seed, stop):
    """What tests/test_cli.py asserts of the command line's second turn, for Chat.send: after a first
    answer that ended in each of the ways an answer can end."""
    session = tinydg.Chat(demo)
    session.send("Hi", seed=seed, max_denoising_steps=4)
    session.send("How are you?", seed=seed + 1, max_denoising_steps=4)
    (_, ids1, _, out1), _ = calls
    written = [demo.tokenizer.id_to_token(int(t)) for t in out1.sequences[0, ids1.shape[1]:]]
    assert [t for t in written if t in ("<eos>", "<turn|>", "<|tool_response>")] == ([stop] if stop else [])
    assert_second_turn_is_the_full_history(demo.tokenizer, *calls)
    assert session.cache is calls[1][3].cache


def test_the_embedded_model_runs_a_second_turn_and_the_cache_grows(embedded, calls):
    """A second turn runs on the kept cache, which grows by what that call encoded."""
    session = tinydg.Chat(embedded)
    assert session.cache is None and session.messages == []
    assert session.send("sort 7 2 9 2 4", seed=0).text == "2 2 4 7 9"
    first = session.cache.length
    reply = session.send("sort 9 8 7", seed=1)
    C = embedded.config.canvas_length
    (_, ids1, _, out1), (_, ids2, _, out2) = calls
    assert ids1[0].tolist() == encode_prompt(embedded.tokenizer, [{"role": "user", "content": "sort 7 2 9 2 4"}])
    assert first == ids1.shape[1]  # the first prompt; its answer (one canvas) is not in the cache yet
    # the second call sent only the last canvas and the new turn, and the cache grew by all it encoded
    np.testing.assert_array_equal(ids2[0, :C], out1.sequences[0, -C:])
    assert embedded.tokenizer.decode(ids2[0, C:].tolist()) == \
        "\n<|turn>user\nsort 9 8 7<turn|>\n<|turn>model\n" + EMPTY_THOUGHT
    assert session.cache.length == first + ids2.shape[1] + (len(out2.steps_per_canvas) - 1) * C
    assert reply.text == "7 8 9" and len(session.messages) == 4
    assert "Chat(" in repr(session) and "turns=2" in repr(session)


def test_a_system_message_opens_the_conversation(demo, calls):
    system = {"role": "system", "content": "Be brief."}
    session = tinydg.Chat(demo, system="Be brief.")
    assert session.messages == [system]
    session.send("Hi", seed=0, max_denoising_steps=2)
    (_, ids, _, _), = calls
    assert ids[0].tolist() == encode_prompt(demo.tokenizer, [system, {"role": "user", "content": "Hi"}])
    assert session.messages[0] == system and [m["role"] for m in session.messages] == ["system", "user", "model"]


# ---------------------------------------------------------------- the tokenizer comes with the model

def test_the_model_brings_its_tokenizer(embedded):
    assert embedded.tokenizer is embedded.tokenizer  # read once
    assert embedded.tokenizer.encode("sort 1 2") == load_tokenizer(EMBEDDED).encode("sort 1 2")
    assert embedded.tokenizer.chat_template


def test_a_model_without_tokenizer_json_fails_when_the_tokenizer_is_used():
    model = tinydg.load(os.path.join(FIXTURES, "bf16_sharded"))  # token-level fixtures have no tokenizer: loading is fine
    for use in (lambda: model.tokenizer, lambda: tinydg.Chat(model), lambda: tinydg.chat(model, "Hi")):
        with pytest.raises(CheckpointError, match="tokenizer.json"):
            use()
    with pytest.raises(CheckpointError, match="path is None"):
        dataclasses.replace(model, path=None).tokenizer


# ---------------------------------------------------------------- what a user can get wrong

@pytest.mark.parametrize("messages, name", [("", "messages"), ("  \n\t", "messages"),
                                            ([{"role": "user", "content": " "}], r"messages\[0\]\['content'\]")])
def test_chat_refuses_an_empty_prompt_before_generating(embedded, monkeypatch, messages, name):
    monkeypatch.setattr(conversation, "stream", lambda *a, **k: pytest.fail("generated for an empty prompt"))
    with pytest.raises(InputError, match=f"the prompt is empty.*{name}"):
        tinydg.chat(embedded, messages)


def test_send_refuses_an_empty_turn_and_leaves_the_conversation_as_it_was(embedded):
    session = tinydg.Chat(embedded)
    session.send("sort 3 1 2", seed=0)
    before, cache = session.messages, session.cache
    for bad, error, match in [("", InputError, "the prompt is empty.*text"), (" \n", InputError, "prompt is empty"),
                              (None, InputError, "text must be a str"),
                              ("sort 2 1", ConfigError, "max_denoising_steps")]:
        with pytest.raises(error, match=match):
            session.send(bad, max_denoising_steps=0 if error is ConfigError else None)
        assert session.messages == before and session.cache is cache


@pytest.mark.parametrize("call, match", [
    (lambda m: tinydg.chat(m, [{"role": "user", "content": "Hi"}, {"role": "model", "content": "Hello"}]),
     r"messages\[1\] must be the user turn"),
    (lambda m: tinydg.chat(m, [{"role": "robot", "content": "Hi"}]), "unknown role 'robot'"),
    (lambda m: tinydg.chat(m, []), "non-empty"),
    (lambda m: tinydg.chat(m, "Hi", temperature=0.5), r"unknown sampler settings \['temperature'\]"),
    (lambda m: tinydg.chat(m, "Hi", think="yes"), "think must be True or False"),
    (lambda m: tinydg.chat(m, "Hi", seed=1.5), "seed must be an integer"),
    (lambda m: tinydg.chat("weights/embedded", "Hi"), "model must be a tinydg.Model"),
    (lambda m: tinydg.Chat(m, system=["x"]), "system must be a str or None"),
    (lambda m: tinydg.Chat(m).send("Hi", attention_mask=None), r"unknown sampler settings \['attention_mask'\]"),
])
def test_bad_arguments_are_named(embedded, call, match):
    with pytest.raises(InputError, match=match):
        call(embedded)


# ---------------------------------------------------------------- the turn logic the CLI shares

@pytest.mark.parametrize("closed", [True, False])
def test_next_turn_closes_the_model_turn_as_the_format_does(closed):
    tokenizer = load_tokenizer(DEMO)
    model_turn = tokenizer.encode("Hello there" + ("<turn|><pad><pad>" if closed else "<eos><pad>"))
    masked = [tokenizer.token_to_id(t) for t in ("<pad>", "<eos>")]
    conv = conversation.Conversation(thinking=True, masked_ids=masked, cache=object(), closed=closed,
                                     last_canvas=np.asarray(model_turn),
                                     messages=[{"role": "user", "content": "Hi"},
                                               {"role": "model", "content": "Hello there"}])
    ids, valid = conversation.next_input(tokenizer, conv, "  Next?  ")
    first = format_prompt(conv.messages[:1], thinking=True)
    full = format_prompt(conv.messages + [{"role": "user", "content": "Next?"}], thinking=True)
    assert tokenizer.decode(tokenizer.encode(first) + list(ids[valid])) == full


def test_the_command_line_runs_its_turns_through_the_shared_code():
    assert cli.take_turn is conversation.take_turn and cli.Conversation is conversation.Conversation
