"""The Gemma 4 chat format that DiffusionGemma was trained on, as pure functions.

A conversation is a list of {"role": "system" | "user" | "assistant" | "model", "content": str}.
`format_prompt` writes it as one string, `encode_prompt` turns that into ids, `parse_response`
splits what the model wrote into its thought and its answer, and `render_template` runs a
checkpoint's own `chat_template.jinja` in a sandbox, in bounded time and memory.

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
import math
import re
import string
import time
import types
from collections import abc
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

def check_messages(messages):
    """An InputError naming the message at fault unless messages is a non-empty list (or tuple) of
    {"role": one of ROLES, "content": str} dicts; returns None."""
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
    check_messages(messages)
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


# A chat template is a program that comes with the checkpoint. The sandbox keeps it away from files
# and from Python's internals; these limits keep it from running for ever or filling memory. A
# template that reaches one fails with an InputError that names the limit.
MAX_TEMPLATE_CHARS = 2**17  # the template's own text (real ones: tens of KB); parsing and compiling, which
                            # no check can interrupt, take a couple of seconds at most at this size
MAX_RENDER_SECONDS = 5.0    # wall clock for one render, checked at every loop step, call, filter and output piece
MAX_RANGE = 100_000         # items one range() may produce (as in Jinja's own sandbox)
MAX_TEXT = 2**22            # characters a template may make beyond the size of its input: in the rendered text,
                            # and in any one value it builds (a string, list or dict, sized as str() writes it)
MAX_INT_BITS = 2**16        # bits of an integer that `*` or `**` may make

# str and int methods a template may not call: they make bytes (whose methods would need bounds of
# their own), or a result that grows with the product of two arguments; no chat needs them.
_REFUSED_METHODS = frozenset({"encode", "expandtabs", "maketrans", "to_bytes", "translate"})
# Filters left out: their cost grows faster than their text (pprint repeats an indent per level,
# striptags copies the rest of the text per tag), or is a Python loop per character (urlize, wordwrap);
# no chat needs them.
_DROPPED_FILTERS = frozenset({"pprint", "striptags", "urlize", "wordwrap"})
_OTHER_SIZE = 100  # str() of any other value a template holds (a float, None, a range, a macro, a
                   # namespace): a short text


def _raise_exception(message):
    raise InputError(f"chat template refused the input: {message}")


def _size(value, limit):
    """An upper bound on len(str(value)), counted only until it passes limit (so it costs O(limit) at
    most). A part that appears twice counts twice, as str() writes it twice: [s, s] is twice s. (repr
    may escape a character of a string inside a list into up to 10; that factor is left out.)"""
    total, todo = 0, [value]
    while todo and total <= limit:
        v = todo.pop()
        if isinstance(v, str):
            total += len(v)
        elif isinstance(v, bool):
            total += 5
        elif isinstance(v, int):                    # digits (log10(2) < 1/3) and a sign
            total += v.bit_length() // 3 + 2
        elif isinstance(v, dict):
            total += 2 + 8 * len(v)                 # braces; per item ": ", ", " and quotes
            todo += [*v.keys(), *v.values()]
        elif isinstance(v, (list, tuple, set, frozenset, abc.KeysView, abc.ValuesView, abc.ItemsView)):
            total += 2 + 4 * len(v)                 # brackets; per item ", " and quotes
            todo.extend(v)
        else:
            total += _OTHER_SIZE
    return total


def _depth(value):
    """How deeply lists and dicts nest in value (1 for a string or number)."""
    depth, level = 0, [value]
    while level:
        depth += 1
        level = [child for v in level if isinstance(v, (dict, list, tuple))
                 for child in (v.values() if isinstance(v, dict) else v)]
    return depth


def _range(*args):
    """range() with at most MAX_RANGE items."""
    items = range(*args)
    try:
        n = len(items)
    except OverflowError:  # more items than an index can count
        n = MAX_RANGE + 1
    if n > MAX_RANGE:
        raise InputError(f"chat template asked for a range of more than MAX_RANGE ({MAX_RANGE:,}) items")
    return items


def _int_bits(operator, left, right):
    """An upper bound on the bits of `left operator right` for integers `*` and `**` (0 otherwise)."""
    if not (isinstance(left, int) and isinstance(right, int)):
        return 0
    if operator == "*":
        return left.bit_length() + right.bit_length()
    if operator == "**" and abs(left) > 1:
        return left.bit_length() * max(right, 0)
    return 0


_PRINTF_FIELD = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d*)(?:\.(\*|\d*))?")


def _printf_size(fmt, args, limit):
    """An upper bound on the size of `fmt % args`."""
    fields = _PRINTF_FIELD.findall(fmt)
    return _fields_size(fmt, len(fields), [n for field in fields for n in field], args, limit)


def _format_size(fmt, args, limit):
    """An upper bound on the size of fmt.format(...) given all its arguments, keywords included."""
    specs = [spec for _, name, spec, _ in string.Formatter().parse(fmt) if name is not None]
    return _fields_size(fmt, len(specs), [n for spec in specs for n in re.findall(r"\d+|\{", spec)], args, limit)


def _fields_size(fmt, count, widths, args, limit):
    """The format string, plus for each of its `count` fields its widest width or precision and all
    the arguments (a field prints at most one of them, padded)."""
    if "*" in widths or "{" in widths:
        raise InputError("chat template: a format width taken from the arguments ('%*d', '{:{}}') is not supported")
    widest = max((int(w) if len(w) <= len(str(limit)) else limit + 1 for w in widths if w), default=0)
    return len(fmt) + count * (widest + _size(args, limit))


def _repeat_size(left, right, limit):
    """The size of `left * right` when it repeats a string, list or tuple (0 otherwise)."""
    for items, n in ((left, right), (right, left)):
        if isinstance(items, (str, list, tuple)) and isinstance(n, int):
            return _size(items, limit) * max(n, 0)
    return 0


def _binop_size(operator, left, right, limit):
    """An upper bound on the size of `left operator right` where it can far outgrow both (0 otherwise)."""
    if operator == "*":
        return _repeat_size(left, right, limit)
    if operator == "%" and isinstance(left, str):
        return _printf_size(left, right, limit)
    return 0


def _replace_size(s, old, new, count=-1):
    """The size of s.replace(old, new, count)."""
    n = s.count(old)  # len(s) + 1 for old == ""
    return len(s) + (n if count < 0 else min(n, count)) * len(new)


def _indent_size(s, width=4):
    """An upper bound on the size of s | indent(width): every line indented."""
    return len(s) + (s.count("\n") + 2) * max(len(width) if isinstance(width, str) else width, 0)


# str methods whose result can outgrow the string and its arguments together: name -> an upper bound on
# its size, given the size limit (to stop counting at), the string and the call's arguments.
_STR_METHOD_SIZES = {
    "join": lambda limit, s, items: len(s) * len(items) + _size(items, limit),
    "replace": lambda limit, s, old, new, count=-1: _replace_size(s, old, new, count),
}
# The same for filters: name -> an upper bound, given the limit, the filter's value and its arguments.
_FILTER_SIZES = {
    "format": lambda limit, value, *args, **kwargs: _printf_size(str(value), kwargs or args, limit),
    "indent": lambda limit, s, width=4, first=False, blank=False: _indent_size(str(s), width),
    "join": lambda limit, items, d="", attribute=None: _size(items, limit) + len(items) * _size(d, limit),
    "replace": lambda limit, s, old, new, count=None: _replace_size(str(s), str(old), str(new),
                                                                    -1 if count is None else count),
}


class _Budget:
    """What one render may spend: time until a deadline, and MAX_TEXT characters beyond its input's size
    for any one value and for the rendered text."""

    def __init__(self, input_size):
        self.deadline = time.monotonic() + MAX_RENDER_SECONDS
        self.limit = MAX_TEXT + input_size

    def tick(self):
        if time.monotonic() > self.deadline:
            raise InputError(f"chat template ran longer than MAX_RENDER_SECONDS ({MAX_RENDER_SECONDS} s)")

    def check(self, size, what):
        """Refuse to make `what` when (an upper bound on) its size is past the limit."""
        if size > self.limit:
            raise InputError(f"chat template: {what} would pass {self.limit:,} characters "
                             f"(MAX_TEXT, {MAX_TEXT:,}, beyond the size of its input)")

    def check_ints(self, values, what):
        """Refuse numbers past MAX_TEXT as arguments: a width, a count or a length that large can only
        make a value past the limit."""
        if any(isinstance(v, int) and abs(v) > MAX_TEXT for v in values):
            raise InputError(f"chat template: {what} got a number past MAX_TEXT ({MAX_TEXT:,})")

    def checked(self, value, what):
        self.tick()
        self.check(_size(value, self.limit), what)
        return value

    def iterate(self, items):
        """items, one at a time, each after a time check."""
        for item in items:
            self.tick()
            yield item

    def join(self, pieces, what):
        """"".join(pieces), checked piece by piece as they come."""
        kept, size = [], 0
        for piece in pieces:
            self.tick()
            size += len(piece)
            self.check(size, what)
            kept.append(piece)
        return "".join(kept)


def _tojson(budget, value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    # As transformers: plain json.dumps, without Jinja's HTML escaping. Written piece by piece under the
    # budget; one piece, a line's indent, is the indent times the nesting depth, so that is checked first.
    encoder = json.JSONEncoder(ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)
    if indent is not None:
        width = len(indent) if isinstance(indent, str) else indent
        budget.check(width * _depth(value), "tojson's indent")
    return budget.join(encoder.iterencode(value), "tojson's result")


def _bounded_filter(budget, name, f):
    """Filter f under the budget: a time check; a value that is an iterator (map, select) read out
    first, so its size is known; numbers past MAX_TEXT refused as arguments; the result's size checked
    before (for filters in _FILTER_SIZES) and after it runs."""
    skip = 1 if getattr(f, "jinja_pass_arg", None) else 0  # the context or environment Jinja passes first
    bound = _FILTER_SIZES.get(name)

    @functools.wraps(f)  # keeps jinja_pass_arg
    def bounded(*args, **kwargs):
        budget.tick()
        passed, (value, *rest) = args[:skip], args[skip:]
        if isinstance(value, abc.Iterator):
            value = list(budget.iterate(value))
        budget.check_ints([*rest, *kwargs.values()], f"the {name} filter")
        if bound:
            budget.check(bound(budget.limit, value, *rest, **kwargs), f"the {name} filter's result")
        return budget.checked(f(*passed, value, *rest, **kwargs), f"the {name} filter's result")
    return bounded


@functools.cache
def _sandbox():
    """The Environment class that renders a template under a _Budget (built on first use: jinja2 is an
    optional dependency)."""
    try:
        import jinja2.ext
        from jinja2 import nodes
        from jinja2.runtime import markup_join, str_join
        from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError
        from jinja2.utils import Namespace
        from jinja2.visitor import NodeTransformer
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

    class ShortNamespace(Namespace):
        # Printed short, so that its size (_OTHER_SIZE) does not depend on its attributes: a list that
        # holds it many times cannot print them all.
        def __repr__(self):
            return "<namespace>"

    def guarded(node, name):
        return nodes.Filter(node, name, [], [], None, None, lineno=node.lineno)

    class Guard(NodeTransformer):
        """Rewrites a parsed template so the budget sees what Python would otherwise do unseen: every loop
        step (for the time), every `~` and every list, tuple or dict written in the template (for the
        size: `{% set b = [a, a] %}` written 40 times would make 2**40 copies of a to print)."""

        def visit_For(self, node):
            self.generic_visit(node)
            node.iter = guarded(node.iter, "_budget_iterate")
            return node

        def visit_Concat(self, node):
            self.generic_visit(node)
            return guarded(nodes.List(node.nodes, lineno=node.lineno), "_budget_concat")

        def visit_List(self, node):  # and Dict, and Tuple when it is read (not assigned to)
            self.generic_visit(node)
            return guarded(node, "_budget_check") if getattr(node, "ctx", "load") == "load" else node

        visit_Dict = visit_Tuple = visit_List

    class Sandbox(ImmutableSandboxedEnvironment):
        """An immutable sandbox with no loader (so `include`, `import` and `extends` reach no file),
        whose every operation that can take long or make much runs under the budget."""

        intercepted_binops = frozenset({"+", "*", "**", "%"})

        def __init__(self, budget):
            super().__init__(loader=None, trim_blocks=True, lstrip_blocks=True, undefined=RefusingUndefined,
                             extensions=[jinja2.ext.loopcontrols])
            self.budget = budget
            del self.globals["lipsum"]  # a Python loop as long as its argument asks
            self.globals.update(range=_range, namespace=ShortNamespace, raise_exception=_raise_exception)
            jinja_sum = self.filters["sum"]

            @jinja2.pass_environment
            def bounded_sum(env, items, attribute=None, start=0):  # one C loop: timed item by item
                return jinja_sum(env, budget.iterate(items), attribute, start)

            self.filters.update(tojson=functools.partial(_tojson, budget), sum=bounded_sum)
            self.filters = {name: _bounded_filter(budget, name, f) for name, f in self.filters.items()
                            if name not in _DROPPED_FILTERS}
            self.filters.update(_budget_iterate=budget.iterate, _budget_check=self._check, _budget_concat=self._concat)

        def _generate(self, source, *args, **kwargs):
            # Jinja's hook between parsing and compiling
            tree = Guard().visit(source)
            tree.set_environment(self)
            return super()._generate(tree, *args, **kwargs)

        def _check(self, value):
            return self.budget.checked(value, "a list, tuple or dict")

        @jinja2.pass_eval_context
        def _concat(self, eval_ctx, parts):  # `a ~ b`, as Jinja compiles it
            self.budget.check(_size(parts, self.budget.limit), "a ~ concatenation")
            return (markup_join if eval_ctx.autoescape else str_join)(parts)

        def concat(self, pieces):  # Jinja joins all output, and each block's and macro's, with this
            return self.budget.join(pieces, "the rendered text")

        def is_safe_attribute(self, obj, attr, value):
            refused = isinstance(obj, (str, int)) and attr in _REFUSED_METHODS
            return not refused and super().is_safe_attribute(obj, attr, value)

        def wrap_str_format(self, value):
            format_ = super().wrap_str_format(value)
            if format_ is None:
                return None
            budget, fmt = self.budget, value.__self__

            def bounded(*args, **kwargs):
                budget.check(_format_size(fmt, [*args, *kwargs.values()], budget.limit), "str.format's result")
                return format_(*args, **kwargs)
            return functools.update_wrapper(bounded, format_)

        def call_binop(self, context, operator, left, right):
            budget = self.budget
            budget.tick()
            if _int_bits(operator, left, right) > MAX_INT_BITS:
                raise InputError(f"chat template: {operator} would make an integer of more than "
                                 f"MAX_INT_BITS ({MAX_INT_BITS:,}) bits")
            budget.check(_binop_size(operator, left, right, budget.limit), f"the result of {operator}")
            return budget.checked(super().call_binop(context, operator, left, right), f"the result of {operator}")

        def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 (Jinja's names: a call may pass `self=`)
            budget, name = __self.budget, getattr(__obj, "__name__", "a call")
            budget.tick()
            if isinstance(__obj, types.BuiltinMethodType):  # a method of a str, list, dict or number
                args = tuple(list(budget.iterate(a)) if isinstance(a, abc.Iterator) else a for a in args)
                budget.check_ints([*args, *kwargs.values()], f"{name}()")
                bound = _STR_METHOD_SIZES.get(name) if isinstance(__obj.__self__, str) else None
                if bound:
                    budget.check(bound(budget.limit, __obj.__self__, *args, **kwargs), f"the result of {name}()")
            return budget.checked(super().call(__context, __obj, *args, **kwargs), f"the result of {name}()")

    return Sandbox


def render_template(template_text, messages, *, add_generation_prompt=True, enable_thinking=False,
                    bos_token=BOS, **extra):
    """Render a chat template the way transformers' apply_chat_template does, in a sandbox.

    The template sees a JSON copy of messages and extra (only dicts, lists, strings, numbers),
    so it cannot reach methods of the caller's objects. It renders in bounded time and memory: see
    MAX_TEMPLATE_CHARS, MAX_RENDER_SECONDS, MAX_RANGE, MAX_TEXT and MAX_INT_BITS. Every failure
    (syntax, a refused attribute, a missing file, raise_exception, a limit) becomes an InputError
    naming it."""
    if not isinstance(template_text, str):
        raise InputError(f"a chat template must be a str, got {type(template_text).__name__}")
    if len(template_text) > MAX_TEMPLATE_CHARS:
        raise InputError(f"chat template of {len(template_text):,} characters is longer than "
                         f"MAX_TEMPLATE_CHARS ({MAX_TEMPLATE_CHARS:,})")
    if not isinstance(messages, (list, tuple)) or not all(isinstance(m, dict) for m in messages):
        raise InputError("messages must be a list of dicts")
    try:
        context = json.loads(json.dumps(dict(extra, messages=list(messages))))
    except (TypeError, ValueError) as e:
        raise InputError(f"messages and template arguments must be plain JSON data ({e})") from None
    context.update(add_generation_prompt=add_generation_prompt, enable_thinking=enable_thinking,
                   bos_token=bos_token)
    env = _sandbox()(_Budget(_size(context, math.inf)))
    from jinja2 import TemplateSyntaxError

    try:
        return env.from_string(template_text).render(**context)
    except InputError:
        raise
    except TemplateSyntaxError as e:
        raise InputError(f"chat template does not parse: line {e.lineno}: {e.message}") from None
    except Exception as e:  # anything the template does wrong: sandbox refusal, no loader, 1/0 ...
        raise InputError(f"chat template failed: {type(e).__name__}: {e}") from None
