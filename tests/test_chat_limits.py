"""A checkpoint's chat template renders in bounded time and memory (tinydg.chat_format's MAX_
limits): what would pass a limit fails at once with an InputError naming it, and the same features
used within the limits render as before."""

import time

import pytest

from tinydg import chat_format
from tinydg.chat_format import CHAT_TEMPLATE, MAX_RANGE, format_prompt, render_template
from tinydg.errors import InputError

pytest.importorskip("jinja2")

HI = [{"role": "user", "content": "hi"}]
BIG = "{% set s = 'x' * 400000 %}"  # a tenth of MAX_TEXT


def chain(step, n=40):
    """A template that sets a1 = step(a0), a2 = step(a1), ... and prints the last: a size that doubles
    n times, when step doubles it."""
    sets = "".join(f"{{% set a{i + 1} = {step.format(a=f'a{i}')} %}}" for i in range(n))
    return "{% set a0 = 'x' * 1000 %}" + sets + f"{{{{ a{n} }}}}"


def refused(template, limit):
    start = time.monotonic()
    with pytest.raises(InputError, match=limit):
        render_template(template, HI)
    return time.monotonic() - start


@pytest.mark.parametrize("template, limit", [
    ("{{ range(10**6) | list }}", "MAX_RANGE"),
    ("{{ range(10**30) }}", "MAX_RANGE"),
    ("{{ 'a' * 10**9 }}", "MAX_TEXT"),
    ("{{ 10**9 * [0] }}", "MAX_TEXT"),
    ("{{ 10 ** (10 ** 8) }}", "MAX_INT_BITS"),
    ("{% set ns = namespace(x=3) %}{% for i in range(40) %}{% set ns.x = ns.x * ns.x %}{% endfor %}", "MAX_INT_BITS"),
    ("{{ '%999999999d' % 1 }}", "MAX_TEXT"),
    (BIG + "{{ ('%(a)s' * 100) % {'a': s} }}", "MAX_TEXT"),
    ("{{ '%*d' % (999999999, 1) }}", "format width"),
    ("{{ '{:>999999999}'.format(1) }}", "MAX_TEXT"),
    (BIG + "{{ ('{0}' * 100).format(s) }}", "MAX_TEXT"),
    ("{{ '{:{}}'.format(1, 999999999) }}", "format width"),
    ("{{ '%999999999s' | format(1) }}", "MAX_TEXT"),
    ("{{ 'x' | center(10**9) }}", "MAX_TEXT"),
    ("{{ 'x'.ljust(10**9) }}", "MAX_TEXT"),
    ("{{ [1] | batch(10**9, 0) | list }}", "MAX_TEXT"),
    (BIG + "{{ s.join(['a'] * 100) }}", "MAX_TEXT"),
    (BIG + "{{ (['a'] * 100) | join(s) }}", "MAX_TEXT"),
    (BIG + "{{ s.replace('', 'y' * 10) }}", "MAX_TEXT"),
    (BIG + "{{ s | replace('x', s) }}", "MAX_TEXT"),
    ("{{ ('\n' * 100000) | indent(1000, true, true) }}", "MAX_TEXT"),
    ("{{ [[[[1]]]] | tojson(indent=2000000) }}", "MAX_TEXT"),
    (chain("{a} ~ {a}"), "MAX_TEXT"),
    (chain("[{a}, {a}]"), "MAX_TEXT"),
    (chain("{a} + {a}"), "MAX_TEXT"),
    (chain("{{'k': {a}, 'v': {a}}}"), "MAX_TEXT"),
    ("{% set ns = namespace(s='x') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}", "MAX_TEXT"),
    ("{% macro d(s, n) %}{{ d([s, s], n - 1) if n else s }}{% endmacro %}{{ d('x' * 100000, 60) }}", "MAX_TEXT"),
    ("{% for i in range(100000) %}{{ 'x' * 100000 }}{% endfor %}", "MAX_TEXT"),
    ("{{ ('\t' * 1000).expandtabs(100000) }}", "unsafe"),
    ("{{ 'a'.translate({}) }}", "unsafe"),
    ("{{ 'a'.encode() }}", "unsafe"),
    ("{{ lipsum(10**6) }}", "'lipsum' is undefined"),
    ("{{ 'a' | wordwrap(1) }}", "No filter named 'wordwrap'"),
    ("{{ '<a>' | striptags }}", "No filter named 'striptags'"),
    ("x" * (chat_format.MAX_TEMPLATE_CHARS + 1), "MAX_TEMPLATE_CHARS"),
], ids=lambda v: v[:40] if isinstance(v, str) else None)
def test_what_would_pass_a_limit_is_refused_at_once(template, limit):
    assert refused(template, limit) < 2.0


@pytest.mark.parametrize("template", [
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    BIG + "{% for a in s %}{% for b in s %}{% endfor %}{% endfor %}",  # loops with no call in them
    "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(60) }}",
    "{{ range(100000) | batch(1) | list | sum(start=[]) | length }}",  # one C loop, quadratic in time
])
def test_a_template_that_runs_long_stops_at_the_time_budget(monkeypatch, template):
    monkeypatch.setattr(chat_format, "MAX_RENDER_SECONDS", 0.3)
    assert refused(template, "MAX_RENDER_SECONDS") < 0.3 + 2.0


def test_the_size_limit_counts_beyond_the_input():
    # a conversation much longer than MAX_TEXT still renders: the limit is on what the template adds
    messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": "word " * 5000} for i in range(400)]
    assert render_template(CHAT_TEMPLATE, messages) == format_prompt(messages)
    assert len(format_prompt(messages)) > chat_format.MAX_TEXT


@pytest.mark.parametrize("template, expected", [
    ("{{ range(%d) | list | length }}" % MAX_RANGE, str(MAX_RANGE)),
    ("{{ 'ab' ~ 1 ~ messages[0].content }}{{ [1, 'x'] }}{{ {'k': 2} }}", "ab1hi[1, 'x']{'k': 2}"),
    ("{{ '%-4s|%03d' % ('ab', 7) }}{{ '{:*^7}'.format('x') }}{{ '%s!' | format(3) }}", "ab  |007***x***3!"),
    ("{{ ','.join(['a', 'b']) }}{{ ['a', 'b'] | join('-') }}{{ 'abc'.replace('b', 'xx') }}{{ 'a'.ljust(3) }}|",
     "a,ba-baxxca  |"),
    ("{{ messages | map(attribute='role') | join }}{{ [1, 2, 3] | sum }}{{ [[1], [2]] | sum(start=[]) }}",
     "user6[1, 2]"),
    ("{{ {'a': [1]} | tojson(indent=2) }}", '{\n  "a": [\n    1\n  ]\n}'),
    ("{% set ns = namespace(n=0) %}{% for x in 'abc' %}{% set ns.n = ns.n + loop.length %}{% endfor %}{{ ns.n }}",
     "9"),
    ("{% for x in [[1, [2]], 3] recursive %}{% if x is iterable %}{{ loop(x) }}{% else %}{{ x }}{% endif %}"
     "{% endfor %}", "123"),
    ("{{ 2 ** 100 }} {{ 'a' * 3 }} {{ [0] * 2 }}", f"{2**100} aaa [0, 0]"),
    ("{% autoescape true %}{{ '<' ~ 'b' }}{% endautoescape %}", "&lt;b"),
])
def test_the_same_features_within_the_limits_render_as_before(template, expected):
    assert render_template(template, HI) == expected
