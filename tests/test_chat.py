"""The tokenizer and the Gemma 4 chat format: exact prompt ids, round trips, the template sandbox.

A tokenizer with the real special ids (`build_tokenizer(real_ids=True)`) stands in for the real
262144-token vocabulary: control tokens land on the real ids, text is one token per character.
The expected prompts are written out from the documented format (facts sheet, section 6).
"""

import importlib.util
import json
import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinydg.chat_format import (CHAT_TEMPLATE, Response, encode_prompt, format_prompt, parse_response,
                         render_template, split_special)
from tinydg.errors import CheckpointError, InputError
from tinydg.tokenizer import DEFAULT_ALPHABET, SPECIAL_TOKENS, build_tokenizer, load_tokenizer

needs_jinja = pytest.mark.skipif(importlib.util.find_spec("jinja2") is None, reason="jinja2 not installed")

ESSAY = "Write a long essay about Portugal."

# The prompt ids that transformers' test_modeling_diffusion_gemma.py pins for ESSAY with the real
# checkpoint's tokenizer (test_diffusion_gemma_chat_template[_with_thinking]). Our vocabulary
# differs for text, so only their skeleton (control ids, and where text runs are) is compared.
PINNED_THINKING_OFF = [2, 105, 2364, 107, 6974, 496, 1440, 20494, 1003, 23613, 236761, 106, 107,
                       105, 4368, 107, 100, 45518, 107, 101]
PINNED_THINKING_ON = [2, 105, 9731, 107, 98, 107, 106, 107, 105, 2364, 107, 6974, 496, 1440, 20494,
                      1003, 23613, 236761, 106, 107, 105, 4368, 107]

# Text that contains no control-token string (so it cannot be mistaken for structure).
plain_text = st.text(alphabet=DEFAULT_ALPHABET, max_size=40).filter(
    lambda s: not any(token in s for token in SPECIAL_TOKENS))


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """A tokenizer with Gemma 4's special ids, saved and loaded back."""
    folder = tmp_path_factory.mktemp("real_ids")
    build_tokenizer(real_ids=True, chat_template=CHAT_TEMPLATE).save(folder)
    return load_tokenizer(folder)


@pytest.fixture(scope="module")
def packed():
    return build_tokenizer()


def skeleton(ids):
    """Control ids kept, each run of text ids replaced by "T": [2, 105, 7, 9, 106] -> [2, 105, "T", 106]."""
    out = []
    for i in ids:
        if i in SPECIAL_TOKENS.values():
            out.append(i)
        elif not out or out[-1] != "T":
            out.append("T")
    return out


# ---------------------------------------------------------------- the tokenizer

def test_real_ids_layout(real):
    for token, token_id in SPECIAL_TOKENS.items():
        assert real.token_to_id(token) == token_id
        assert real.id_to_token(token_id) == token
        assert real.encode(token) == [token_id]
    assert real.vocab_size > max(SPECIAL_TOKENS.values()) + len(DEFAULT_ALPHABET)
    assert real.id_to_token(3) == "<unused3>"
    assert real.chat_template == CHAT_TEMPLATE


def test_packed_layout(packed):
    assert [packed.token_to_id(t) for t in SPECIAL_TOKENS] == list(range(len(SPECIAL_TOKENS)))
    assert (packed.token_to_id("<pad>"), packed.token_to_id("<eos>"), packed.token_to_id("<bos>")) == (0, 1, 2)
    assert packed.encode("ab") == [packed.token_to_id("a"), packed.token_to_id("b")]
    assert packed.chat_template is None


@given(st.text(max_size=60), st.sampled_from(sorted(SPECIAL_TOKENS)))
def test_packed_round_trip(packed, text, special):
    # Any text, even outside the alphabet (byte fallback), decodes back to itself; a control-token
    # string is one id wherever it appears.
    assert packed.decode(packed.encode(text)) == text
    ids = packed.encode(text + special + text)
    assert ids == packed.encode(text) + [packed.token_to_id(special)] + packed.encode(text)
    assert packed.decode(ids, skip_special_tokens=True) == text + text


def test_save_load_round_trip(packed, tmp_path):
    packed.save(tmp_path)
    loaded = load_tokenizer(tmp_path)
    text = "<bos><|turn>user\nHi é<turn|>\n"
    assert loaded.encode(text) == packed.encode(text) and loaded.vocab_size == packed.vocab_size


def test_chat_template_sources(packed, tmp_path):
    packed.save(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": "from config"}))
    assert load_tokenizer(tmp_path).chat_template == "from config"
    (tmp_path / "tokenizer_config.json").write_text(
        json.dumps({"chat_template": [{"name": "tool_use", "template": "t"}, {"name": "default", "template": "d"}]}))
    assert load_tokenizer(tmp_path).chat_template == "d"
    (tmp_path / "chat_template.jinja").write_text("from jinja file")
    assert load_tokenizer(tmp_path).chat_template == "from jinja file"


def test_tokenizer_bad_input(packed, tmp_path):
    with pytest.raises(CheckpointError, match="tokenizer.json"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="tokenizer.json"):
        load_tokenizer(tmp_path)
    packed.save(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="tokenizer_config.json"):
        load_tokenizer(tmp_path)
    with pytest.raises(InputError, match="<start_of_turn>"):
        packed.token_to_id("<start_of_turn>")
    with pytest.raises(InputError, match="outside the vocabulary"):
        packed.decode([0, packed.vocab_size])
    with pytest.raises(InputError, match="outside the vocabulary"):
        packed.id_to_token(-1)
    with pytest.raises(InputError, match="integers"):
        packed.decode(["a"])
    with pytest.raises(InputError, match="str"):
        packed.encode([1, 2])
    with pytest.raises(InputError, match="alphabet"):
        build_tokenizer("")


@pytest.mark.parametrize("text, where", [("\ud800", "U+D800) at index 0"), ("ok \udcff", "U+DCFF) at index 3")])
def test_encode_refuses_lone_surrogates(packed, text, where):
    # a Python str can hold one (bytes that are not UTF-8, decoded with surrogateescape); the library
    # would raise a bare TypeError
    with pytest.raises(InputError, match=re.escape(where)):
        packed.encode(text)


@pytest.mark.parametrize("ids, match", [
    ([1.0], "must be integers, got 1.0"),
    ([True], "must be integers, got True"),
    (np.array([[1, 2]]), "must be integers"),
    ("ab", "sequence of integers, got str"),
    (7, "sequence of integers, got int"),
    ([10**5000], "int value too large to print, outside the vocabulary"),
])
def test_decode_takes_integers_only(packed, ids, match):
    with pytest.raises(InputError, match=match):
        packed.decode(ids)


def test_decode_takes_numpy_integers(packed):
    assert packed.decode(np.array([1, 2], np.int32)) == packed.decode([1, 2]) == "<eos><bos>"
    with pytest.raises(InputError, match="skip_special_tokens"):
        packed.decode([1], skip_special_tokens="yes")


# ---------------------------------------------------------------- prompts, id for id

def test_prompt_thinking_off(real):
    messages = [{"role": "user", "content": ESSAY}]
    assert format_prompt(messages) == (
        "<bos><|turn>user\n" + ESSAY + "<turn|>\n<|turn>model\n<|channel>thought\n<channel|>")
    enc = real.encode
    expected = ([2, 105] + enc("user\n" + ESSAY) + [106] + enc("\n") + [105] + enc("model\n")
                + [100] + enc("thought\n") + [101])
    ids = encode_prompt(real, messages)
    assert ids == expected
    assert skeleton(ids) == skeleton(PINNED_THINKING_OFF)
    assert ids == real.encode(format_prompt(messages))      # the library's added-token handling agrees


def test_prompt_thinking_on(real):
    messages = [{"role": "user", "content": ESSAY}]
    assert format_prompt(messages, thinking=True) == (
        "<bos><|turn>system\n<|think|>\n<turn|>\n<|turn>user\n" + ESSAY + "<turn|>\n<|turn>model\n")
    enc = real.encode
    expected = ([2, 105] + enc("system\n") + [98] + enc("\n") + [106] + enc("\n")
                + [105] + enc("user\n" + ESSAY) + [106] + enc("\n") + [105] + enc("model\n"))
    ids = encode_prompt(real, messages, thinking=True)
    assert ids == expected
    assert skeleton(ids) == skeleton(PINNED_THINKING_ON)


def test_prompt_multi_turn(real):
    # A system message shares the thinking switch's turn; the earlier answer loses its thought.
    messages = [
        {"role": "system", "content": "  Be brief.\n"},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "<|channel>thought\nsay hello<channel|>Hello!"},
        {"role": "user", "content": "Bye"},
    ]
    text = ("<bos><|turn>system\n<|think|>\nBe brief.<turn|>\n<|turn>user\nHi<turn|>\n"
            "<|turn>model\nHello!<turn|>\n<|turn>user\nBye<turn|>\n<|turn>model\n")
    assert format_prompt(messages, thinking=True) == text
    enc = real.encode
    expected = ([2, 105] + enc("system\n") + [98] + enc("\nBe brief.") + [106] + enc("\n")
                + [105] + enc("user\nHi") + [106] + enc("\n")
                + [105] + enc("model\nHello!") + [106] + enc("\n")
                + [105] + enc("user\nBye") + [106] + enc("\n") + [105] + enc("model\n"))
    assert encode_prompt(real, messages, thinking=True) == expected
    # Thinking off: the system turn keeps only the system text; the empty thought is pre-filled.
    assert format_prompt(messages[:2]) == (
        "<bos><|turn>system\nBe brief.<turn|>\n<|turn>user\nHi<turn|>\n<|turn>model\n<|channel>thought\n<channel|>")
    assert format_prompt(messages[1:3], add_generation_prompt=False) == (
        "<bos><|turn>user\nHi<turn|>\n<|turn>model\nHello!<turn|>\n")


def test_assistant_message_continues_model_turn():
    # The real template writes no new header for a model message right after an "assistant" one.
    messages = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"},
                {"role": "assistant", "content": "b"}, {"role": "model", "content": "c"}]
    assert format_prompt(messages, add_generation_prompt=False) == (
        "<bos><|turn>user\nq<turn|>\n<|turn>model\na<turn|>\nb<turn|>\nc<turn|>\n")


@given(plain_text, st.booleans())
def test_prompt_round_trip(real, text, thinking):
    messages = [{"role": "user", "content": text}]
    prompt = format_prompt(messages, thinking=thinking)
    ids = encode_prompt(real, messages, thinking=thinking)
    assert real.decode(ids) == prompt
    pieces = split_special(prompt, SPECIAL_TOKENS)
    controls = [i for i in ids if i in SPECIAL_TOKENS.values()]
    assert controls == [real.token_to_id(p) for p in pieces if p in SPECIAL_TOKENS]
    assert real.decode(ids, skip_special_tokens=True) == "".join(p for p in pieces if p not in SPECIAL_TOKENS)


def test_split_special():
    assert split_special("<bos><|turn>user\nHi<turn|>", SPECIAL_TOKENS) == ["<bos>", "<|turn>", "user\nHi", "<turn|>"]


@pytest.mark.parametrize("messages, match", [
    ([], "non-empty"),
    ("hello", "non-empty"),
    ([{"role": "user"}], "'role' and 'content'"),
    ([{"role": "bot", "content": "x"}], "unknown role 'bot'"),
    ([{"role": "user", "content": ["x"]}], "must be a str"),
    ([{"role": "user", "content": "x"}, "y"], r"messages\[1\]"),
])
def test_bad_messages(messages, match):
    with pytest.raises(InputError, match=match):
        format_prompt(messages)


# ---------------------------------------------------------------- the model's answer

@given(plain_text, plain_text)
def test_parse_response_inverts_the_answer_shape(real, thought, answer):
    text = "<|channel>thought\n" + thought + "<channel|>" + answer + "<turn|><eos><pad><pad>"
    assert parse_response(text) == Response(thought, answer)
    assert parse_response(real.encode(text), real) == Response(thought, answer)
    assert parse_response(answer + "<turn|>\n<pad>") == Response(None, answer)


def test_parse_response_edges(real):
    assert parse_response("<|channel>thought\nstill going") == Response("still going", "")
    assert parse_response("done<eos>junk<turn|>") == Response(None, "done")
    call = "<|tool_call>call:f{}<tool_call|>"
    assert parse_response(call + "<|tool_response>") == Response(None, call)
    assert parse_response("<pad>") == Response(None, "")
    with pytest.raises(InputError, match="tokenizer"):
        parse_response([1, 2, 3])


# ---------------------------------------------------------------- render_template

@needs_jinja
@given(st.lists(st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant", "model"]),
                                       "content": st.sampled_from(["", " hi ", "a<|channel>t<channel|>b",
                                                                   "x<channel|>y", "é\nz"]) | plain_text}),
                min_size=1, max_size=5),
       st.booleans(), st.booleans())
def test_our_template_renders_format_prompt(messages, thinking, generation):
    assert render_template(CHAT_TEMPLATE, messages, enable_thinking=thinking, add_generation_prompt=generation) \
        == format_prompt(messages, thinking=thinking, add_generation_prompt=generation)


@needs_jinja
def test_template_filters_and_errors():
    assert render_template("{{ messages[0]['content'] | tojson }}", [{"content": "<é>"}]) == '"<é>"'
    with pytest.raises(InputError, match="unknown role bot"):
        render_template(CHAT_TEMPLATE, [{"role": "user", "content": "x"}, {"role": "bot", "content": "y"}])
    with pytest.raises(InputError, match="does not parse: line 1"):
        render_template("{% if %}", [])
    with pytest.raises(InputError, match="plain JSON"):
        render_template("x", [{"content": object()}])
    with pytest.raises(InputError, match="list of dicts"):
        render_template("x", ["not a dict"])
    with pytest.raises(InputError, match="ZeroDivisionError"):
        render_template("{{ 1 / 0 }}", [])


@needs_jinja
@pytest.mark.parametrize("template", [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ messages.__class__ }}",
    "{{ raise_exception.__globals__ }}",
    "{% set _ = messages.append(1) %}",
    "{% include SECRET %}",
    "{% import SECRET as s %}",
    "{% extends SECRET %}",
])
def test_template_sandbox(template, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT")
    with pytest.raises(InputError) as refused:
        render_template(template, [{"role": "user", "content": "x"}], SECRET=str(secret))
    assert "TOP-SECRET-CONTENT" not in str(refused.value)
