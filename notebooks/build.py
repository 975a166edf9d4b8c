"""Build the notebooks (notebooks/*.ipynb) from their sources (notebooks/src/*.py).

The sources are plain Python in the "percent" format, easy to review and diff: a line `# %%`
starts a code cell, `# %% [markdown]` a markdown cell whose lines start with `# `. The .ipynb
files, with no outputs, are what Jupyter opens.

    python notebooks/build.py           write every .ipynb
    python notebooks/build.py --check   exit 1 when an .ipynb differs from its source
"""

import glob
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def cells(text):
    """[(kind, source)] of a percent-format file; kind is "code" or "markdown"."""
    out, kind, lines = [], None, []
    for line in text.splitlines() + ["# %%"]:
        if line.startswith("# %%"):
            if kind is not None:
                body = "\n".join(lines).strip("\n")
                if body:
                    out.append((kind, body))
            kind, lines = ("markdown" if "[markdown]" in line else "code"), []
        elif kind == "markdown":
            lines.append(line[2:] if line.startswith("# ") else line.lstrip("#"))
        elif kind is not None:
            lines.append(line)
    return out


def notebook(text):
    """The .ipynb (nbformat 4, as a dict) for one source."""
    def cell(i, kind, source):
        c = {"cell_type": kind, "id": f"cell-{i}", "metadata": {}, "source": source.splitlines(keepends=True)}
        if kind == "code":
            c.update(execution_count=None, outputs=[])
        return c
    return {"cells": [cell(i, k, s) for i, (k, s) in enumerate(cells(text))],
            "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                         "language_info": {"name": "python"}},
            "nbformat": 4, "nbformat_minor": 5}


def render(text):
    return json.dumps(notebook(text), indent=1, ensure_ascii=False) + "\n"


def pairs():
    """[(source path, notebook path)] in order."""
    return [(src, os.path.join(HERE, os.path.basename(src)[:-3] + ".ipynb"))
            for src in sorted(glob.glob(os.path.join(HERE, "src", "*.py")))]


def main(check=False):
    stale = []
    for src, ipynb in pairs():
        with open(src, encoding="utf-8") as f:
            wanted = render(f.read())
        current = open(ipynb, encoding="utf-8").read() if os.path.exists(ipynb) else None
        if current != wanted:
            stale.append(os.path.basename(ipynb))
            if not check:
                with open(ipynb, "w", encoding="utf-8") as f:
                    f.write(wanted)
    if check and stale:
        print("out of date (run python notebooks/build.py):", ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(check="--check" in sys.argv))
