"""The notebooks: each .ipynb matches its source in notebooks/src/ and runs top to bottom without
an error (executed with nbclient in a fresh kernel, from the notebooks folder)."""

import os

import pytest

from helpers import ROOT

NOTEBOOKS = os.path.join(ROOT, "notebooks")


def build():
    import importlib.util
    spec = importlib.util.spec_from_file_location("build", os.path.join(NOTEBOOKS, "build.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PAIRS = build().pairs()


def test_there_are_notebooks():
    assert len(PAIRS) >= 3


def test_every_notebook_matches_its_source():
    assert build().main(check=True) == 0, "run: python notebooks/build.py"


def test_sources_split_into_cells():
    cells = build().cells("# %% [markdown]\n# # Title\n# text\n\n# %%\nx = 1\n\n# %%\nprint(x)\n")
    assert cells == [("markdown", "# Title\ntext"), ("code", "x = 1"), ("code", "print(x)")]


@pytest.mark.parametrize("ipynb", [p for _, p in PAIRS], ids=[os.path.basename(p) for _, p in PAIRS])
def test_notebook_runs(ipynb):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("matplotlib")
    os.environ.setdefault("MPLBACKEND", "Agg")
    nb = nbformat.read(ipynb, as_version=4)
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": NOTEBOOKS}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
