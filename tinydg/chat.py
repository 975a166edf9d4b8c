"""The Gemma 4 chat format that DiffusionGemma was trained on, as pure functions.

A conversation is a list of {"role": "system" | "user" | "assistant" | "model", "content": str}.
`format_prompt` writes it as one string, `encode_prompt` turns that into ids, `parse_response`
splits what the model wrote into its thought and its answer, and `render_template` runs a
checkpoint's own `chat_template.jinja` in a sandbox.

The rules below are those of Google's Gemma 4 chat template (the 26B/31B variant that
`google/diffusiongemma-26B-A4B-it` ships), restated in our words for the text-only case:

1. The prompt starts with <bos>.
2. A system turn comes first when thinking is on or the first message is a system message:
   `<|turn>system\\n`, then `<|think|>\\n` if thinking is on, then the system text, then `<turn|>\\n`.
   So thinking on and a system message share ONE turn, the switch before the text.
3. Every other message is a turn `<|turn>{role}\\n{text}<turn|>\\n`; "assistant" is written "model".
   Texts are stripped of surrounding whitespace.
4. A model turn from the history loses its thought channel: every `<|channel>...<channel|>` is
   cut out of its text before stripping (the model never sees its old thoughts again).
5. A message whose role is "assistant" directly continues the model turn: a model message right
   after it gets no `<|turn>model\\n` header of its own (the template does this to chain tool
   calls; it is keyed on the raw role "assistant", not "model").
6. The generation prompt is `<|turn>model\\n`; with thinking off the template also pre-fills an
   empty thought channel `<|channel>thought\\n<channel|>`, so the model answers at once (the
   small Gemma 4 templates, E2B/E4B, do not pre-fill; DiffusionGemma's does).
7. The model then writes `<|channel>thought\\n{thought}<channel|>{answer}<turn|>` (the channel
   only when thinking); generation ends at <turn|> or <eos> (or <|tool_response>, when the model
   waits for a tool), and the rest of the canvas is <pad>.

    thinking off:  <bos><|turn>user\\nHi<turn|>\\n<|turn>model\\n<|channel>thought\\n<channel|>
    thinking on:   <bos><|turn>system\\n<|think|>\\n<turn|>\\n<|turn>user\\nHi<turn|>\\n<|turn>model\\n

Tools and images (`<|tool>`, `<|tool_call>`, `<|image|>`, ...) are left to `render_template`.
Sources: Gemma 4 `chat_template.jinja`; transformers' `utils/chat_template_utils.py` (sandbox,
`raise_exception`, `tojson`) and its Gemma 4 response parser (`cli/serving/utils.py`); the
prompt ids pinned by `tests/models/diffusion_gemma/test_modeling_diffusion_gemma.py`.
"""

import functools
import json
import re
from typing import NamedTuple

from .errors import InputError
from .tokenizer import SPECIAL_TOKENS

BOS, EOS, PAD = "<bos>", "<eos>", "<pad>"
TURN_OPEN, TURN_CLOSE = "<|turn>", "<turn|>"
CHANNEL_OPEN, CHANNEL_CLOSE = "<|channel>", "<channel|>"
THINK = "<|think|>"
TOOL_RESPONSE_OPEN = "<|tool_response>"
EMPTY_THOUGHT = CHANNEL_OPEN + "thought\n" + CHANNEL_CLOSE
ROLES = ("system", "user", "assistant", "model")


class Response(NamedTuple):
    thought: "str | None"   # None when the model wrote no thought channel
    answer: str


# ---------------------------------------------------------------- format and encode

def _check_messages(messages):
    if not isinstance(messages, (list, tuple)) or not messages:
        raise InputError("messages must be a non-empty list of {'role': ..., 'content': ...} dicts")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise InputError(f"messages[{i}] must be a dict with 'role' and 'content', got {m!r}")
        if m["role"] not in ROLES:
            raise InputError(f"messages[{i}] has unknown role {m['role']!r}; expected one of {ROLES}")
        if not isinstance(m["content"], str):
            raise InputError(f"messages[{i}] content must be a str, got {type(m['content']).__name__}")


def strip_thought(text):
    """Cut every `<|channel>...<channel|>` out of a model turn (rule 4), then strip."""
    return "".join(part.split(CHANNEL_OPEN)[0] for part in text.split(CHANNEL_CLOSE)).strip()


def format_prompt(messages, *, thinking=False, add_generation_prompt=True):
    """The conversation as the Gemma 4 prompt string (see the module docstring for the rules)."""
    _check_messages(messages)
    out = [BOS]
    rest = list(messages)
    if thinking or messages[0]["role"] == "system":                 # rule 2
        out.append(TURN_OPEN + "system\n" + (THINK + "\n" if thinking else ""))
        if messages[0]["role"] == "system":
            out.append(rest.pop(0)["content"].strip())
        out.append(TURN_CLOSE + "\n")
    for i, m in enumerate(rest):
        role = "model" if m["role"] == "assistant" else m["role"]   # rule 3
        continues = role == "model" and i > 0 and rest[i - 1]["role"] == "assistant"   # rule 5
        if not continues:
            out.append(TURN_OPEN + role + "\n")
        out.append(strip_thought(m["content"]) if role == "model" else m["content"].strip())
        out.append(TURN_CLOSE + "\n")
    if add_generation_prompt:                                       # rule 6
        out.append(TURN_OPEN + "model\n" + ("" if thinking else EMPTY_THOUGHT))
    return "".join(out)


def split_special(text, special_tokens):
    """Split text around the given special token strings, keeping them as separate pieces.
    "<bos><|turn>user\\nHi" -> ["<bos>", "<|turn>", "user\\nHi"]"""
    pattern = "|".join(re.escape(t) for t in sorted(special_tokens, key=len, reverse=True))
    return [piece for piece in re.split(f"({pattern})", text) if piece]


def encode_prompt(tokenizer, messages, *, thinking=False, add_generation_prompt=True):
    """The prompt as token ids: each control token becomes its one id (looked up by its string),
    the text between them is encoded as plain text. Equal to tokenizer.encode(format_prompt(...)),
    since the tokenizer also recognizes special strings; spelled out here to show the structure.
    Like the Hugging Face tokenizer, a control-token string typed inside a message is read as
    that control token."""
    text = format_prompt(messages, thinking=thinking, add_generation_prompt=add_generation_prompt)
    ids = []
    for piece in split_special(text, SPECIAL_TOKENS):
        ids += [tokenizer.token_to_id(piece)] if piece in SPECIAL_TOKENS else tokenizer.encode(piece)
    return ids


# ---------------------------------------------------------------- parse the model's answer

def parse_response(output, tokenizer=None):
    """What the model wrote -> Response(thought, answer).

    output: the decoded text with special tokens kept, or ids (then tokenizer decodes them).
    Shape (rule 7): [<|channel>thought\\n{thought}<channel|>]{answer}<turn|><eos><pad>...
    Pads are dropped, everything from the first stop token on is cut (<turn|>, <eos>, or
    <|tool_response>: the three ids of the real generation_config's eos_token_id), and the texts are
    returned exactly as written (no whitespace stripping). A thought channel that never closes
    (the canvas ran out) is all thought and no answer.
    """
    if isinstance(output, str):
        text = output
    else:
        if tokenizer is None:
            raise InputError("parse_response got token ids: pass the tokenizer to decode them")
        text = tokenizer.decode(output, skip_special_tokens=False)
    text = text.replace(PAD, "")
    for stop in (TURN_CLOSE, EOS, TOOL_RESPONSE_OPEN):
        text = text.split(stop)[0]
    if not text.startswith(CHANNEL_OPEN):
        return Response(None, text)
    thought, closed, answer = text[len(CHANNEL_OPEN):].partition(CHANNEL_CLOSE)
    return Response(thought.removeprefix("thought\n"), answer if closed else "")


# ---------------------------------------------------------------- run a checkpoint's template

# Our own template for the rules above, in the Hugging Face style (text turns only, no tools).
# render_template(CHAT_TEMPLATE, messages, enable_thinking=t) == format_prompt(messages, thinking=t)
CHAT_TEMPLATE = r"""{{- bos_token -}}
{%- set turns = messages -%}
{%- if enable_thinking or messages[0]['role'] == 'system' -%}
    {{- '<|turn>system\n' -}}
    {%- if enable_thinking -%}{{- '<|think|>\n' -}}{%- endif -%}
    {%- if messages[0]['role'] == 'system' -%}
        {{- messages[0]['content'] | trim -}}
        {%- set turns = messages[1:] -%}
    {%- endif -%}
    {{- '<turn|>\n' -}}
{%- endif -%}
{%- for message in turns -%}
    {%- if message['role'] not in ['system', 'user', 'assistant', 'model'] -%}
        {{- raise_exception('unknown role ' + message['role']) -}}
    {%- endif -%}
    {%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}
    {%- if not (role == 'model' and loop.previtem is defined and loop.previtem['role'] == 'assistant') -%}
        {{- '<|turn>' + role + '\n' -}}
    {%- endif -%}
    {%- if role == 'model' -%}
        {%- set kept = namespace(text='') -%}
        {%- for part in message['content'].split('<channel|>') -%}
            {%- set kept.text = kept.text + part.split('<|channel>')[0] -%}
        {%- endfor -%}
        {{- kept.text | trim -}}
    {%- else -%}
        {{- message['content'] | trim -}}
    {%- endif -%}
    {{- '<turn|>\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{- '<|turn>model\n' -}}
    {%- if not enable_thinking -%}{{- '<|channel>thought\n<channel|>' -}}{%- endif -%}
{%- endif -%}
"""


def _raise_exception(message):
    raise InputError(f"chat template refused the input: {message}")


def _tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    # As transformers: plain json.dumps, without Jinja's HTML escaping.
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


@functools.cache
def _environment():
    """A Jinja environment that can run a template from the Hub and nothing more: sandboxed and
    immutable (no dunder attributes, no mutating methods), and with no loader, so `include`,
    `import` and `extends` cannot reach any file."""
    try:
        import jinja2.ext
        from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError
    except ImportError:
        raise ImportError("render_template needs jinja2: pip install 'jinja2>=3.1.6'") from None

    class RefusingUndefined(jinja2.Undefined):
        # The sandbox answers a forbidden attribute with an Undefined that would quietly print as
        # ""; we raise its SecurityError at once, so such a template fails instead.
        __slots__ = ()

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            if self._undefined_exception is SecurityError:
                self._fail_with_undefined_error()

    env = ImmutableSandboxedEnvironment(loader=None, trim_blocks=True, lstrip_blocks=True,
                                        undefined=RefusingUndefined, extensions=[jinja2.ext.loopcontrols])
    env.globals["raise_exception"] = _raise_exception
    env.filters["tojson"] = _tojson
    return env


def render_template(template_text, messages, *, add_generation_prompt=True, enable_thinking=False,
                    bos_token=BOS, **extra):
    """Render a chat template the way transformers' apply_chat_template does, in a sandbox.

    The template sees a JSON copy of messages and extra (only dicts, lists, strings, numbers),
    so it cannot reach methods of the caller's objects. Every failure (syntax, a refused
    attribute, a missing file, raise_exception) becomes an InputError naming it."""
    if not isinstance(template_text, str):
        raise InputError(f"a chat template must be a str, got {type(template_text).__name__}")
    if not isinstance(messages, (list, tuple)) or not all(isinstance(m, dict) for m in messages):
        raise InputError("messages must be a list of dicts")
    try:
        context = json.loads(json.dumps(dict(extra, messages=list(messages))))
    except (TypeError, ValueError) as e:
        raise InputError(f"messages and template arguments must be plain JSON data ({e})") from None
    context.update(add_generation_prompt=add_generation_prompt, enable_thinking=enable_thinking,
                   bos_token=bos_token)
    env = _environment()
    from jinja2 import TemplateSyntaxError

    try:
        return env.from_string(template_text).render(**context)
    except InputError:
        raise
    except TemplateSyntaxError as e:
        raise InputError(f"chat template does not parse: line {e.lineno}: {e.message}") from None
    except Exception as e:  # anything the template does wrong: sandbox refusal, no loader, 1/0 ...
        raise InputError(f"chat template failed: {type(e).__name__}: {e}") from None
