"""The README's Python examples run as written.

The rule: every ```python block of README.md runs, in the order the README shows them, in one
namespace (a later block may use what an earlier one made, as a reader typing them in would), on
this repository's own files (the embedded model). A block that needs more than that, a GPU or a
checkpoint folder or token ids of the reader's own, says so in its first line, a comment that starts
`# needs:`; such a block is only compiled (so its syntax is still checked), never run.
"""

import os
import re

import pytest

from helpers import ROOT

README = os.path.join(ROOT, "README.md")
NEEDS = "# needs:"


def python_blocks(text):
    """The ```python blocks of a Markdown text, in order: [(line number of the fence, source)]."""
    return [(text.count("\n", 0, m.start()) + 1, m.group(1))
            for m in re.finditer(r"^```python\n(.*?)^```$", text, re.M | re.S)]


def runs(source):
    """Whether the rule runs a block: all but those whose first line is a `# needs:` comment."""
    return not source.lstrip("\n").startswith(NEEDS)


BLOCKS = python_blocks(open(README, encoding="utf-8").read())


def test_blocks_are_found_and_the_rule_picks_them():
    assert python_blocks("a\n```python\nx = 1\n```\n```bash\nls\n```\n```python\n# needs: a GPU\ny\n```\n") == \
        [(2, "x = 1\n"), (8, "# needs: a GPU\ny\n")]
    assert runs("x = 1\n") and not runs("# needs: a GPU\ny\n")
    assert sum(runs(source) for _, source in BLOCKS) >= 2  # the text API's examples
    assert any(not runs(source) for _, source in BLOCKS)


def test_every_block_compiles():
    for line, source in BLOCKS:
        compile(source, f"README.md, the block at line {line}", "exec")


def test_the_runnable_blocks_run_in_order(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    namespace = {"__name__": "__readme__"}
    for line, source in BLOCKS:
        if runs(source):
            try:
                exec(compile(source, f"README.md, the block at line {line}", "exec"), namespace)
            except Exception as e:
                pytest.fail(f"the README's block at line {line} fails: {type(e).__name__}: {e}")
    printed = capsys.readouterr().out
    assert printed.strip()
    assert namespace["session"].cache.length > 0  # the Chat example went through two turns
    assert "1 2 3\n3 2 1\n" in printed  # the printed lines of the seeded examples are what their comments say
    assert "0020100101 -> 2 2 4 7 9\n" in printed
