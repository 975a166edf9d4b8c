"""The package layout: the runtime (every module of tinydg outside tinydg/tools/) needs neither the
tooling in tinydg.tools nor torch or transformers.

tinydg.tools holds the transformers reference recorders, the safetensors writer, the demo and the
embedded model's task, training and evaluation; they may import the runtime, never the reverse.
"""

import ast
import os
import pkgutil
import subprocess
import sys

from helpers import ROOT

PACKAGE = os.path.join(ROOT, "tinydg")
TOOLS = "tinydg.tools"


def runtime_modules():
    """{module name: file} for every runtime module, found on disk (nothing is imported)."""
    found, todo = {}, [("tinydg", PACKAGE)]
    while todo:
        package, folder = todo.pop()
        found[package] = os.path.join(folder, "__init__.py")
        for info in pkgutil.iter_modules([folder]):
            name = f"{package}.{info.name}"
            if name == TOOLS:
                continue
            if info.ispkg:
                todo.append((name, os.path.join(folder, info.name)))
            else:
                found[name] = os.path.join(folder, info.name + ".py")
    return found


def imported_names(module, source, is_package=False):
    """The absolute names that a module's import statements mention, wherever they stand (inside
    functions too): `import a.b` gives a.b; `from a import b` gives a and a.b; relative imports are
    resolved against the module's package."""
    package = module if is_package else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            parts = package.split(".")
            base = parts[:len(parts) - node.level + 1] if node.level else []
            source_name = ".".join(base + ([node.module] if node.module else []))
            names.add(source_name)
            names.update(f"{source_name}.{alias.name}" for alias in node.names)
    return names


def is_under(name, package):
    return name == package or name.startswith(package + ".")


def test_the_runtime_modules_are_found():
    modules = runtime_modules()
    assert {"tinydg", "tinydg.model", "tinydg.checkpoint", "tinydg.gpu"} <= set(modules)
    assert any(name.startswith("tinydg.gpu.") for name in modules)  # subpackages are walked
    assert not any(is_under(name, TOOLS) for name in modules)


def test_every_runtime_module_imports_without_torch_or_transformers():
    """A fresh interpreter where `import torch` and `import transformers` fail imports each runtime
    module (the GPU modules import CuPy only when called, so they are in too), and none of them
    loads tinydg.tools. Not tinydg.__main__: importing it runs the command line."""
    names = sorted(name for name in runtime_modules() if not name.endswith(".__main__"))
    code = ("import importlib, sys\n"
            "sys.modules['torch'] = sys.modules['transformers'] = None\n"
            f"for name in {names!r}:\n"
            "    importlib.import_module(name)\n"
            f"assert not [m for m in sys.modules if m == {TOOLS!r} or m.startswith({TOOLS + '.'!r})]\n"
            "print('imported all')\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "imported all\n"


def test_no_runtime_module_imports_the_tools_or_torch():
    """Checked on the source, so an import inside a function that no test calls is caught too."""
    forbidden = (TOOLS, "torch", "transformers")
    bad = {}
    for module, path in runtime_modules().items():
        with open(path, encoding="utf-8") as f:
            names = imported_names(module, f.read(), path.endswith("__init__.py"))
        wrong = sorted(n for n in names if any(is_under(n, top) for top in forbidden))
        if wrong:
            bad[module] = wrong
    assert not bad


def test_relative_imports_of_the_tools_are_recognized():
    def tools_named(module, source, is_package=False):
        return any(is_under(n, TOOLS) for n in imported_names(module, source, is_package))

    assert tools_named("tinydg.model", "from .tools import reference\n")
    assert tools_named("tinydg", "from . import tools\n", is_package=True)
    assert tools_named("tinydg.gpu.ops", "def f():\n    from .. import tools\n")
    assert tools_named("tinydg.gpu", "from ..tools.reference import record\n", is_package=True)
    assert tools_named("tinydg.cli", "import tinydg.tools.demo\n")
    assert not tools_named("tinydg.gpu.ops", "from .tools import x\n")  # that is tinydg.gpu.tools
    assert not tools_named("tinydg.model", "from .toolsmith import x\n")


def test_import_tinydg_is_light_and_names_arrive_on_first_use():
    """`import tinydg` loads no NumPy (so the command line can answer Ctrl-C while it starts); the
    public names and the submodules are there when asked for, and an unknown name is an AttributeError."""
    code = ("import sys, tinydg\n"
            "assert 'numpy' not in sys.modules, 'import tinydg loaded numpy'\n"
            "assert callable(tinydg.generate) and tinydg.sampler.propose and tinydg.InputError\n"
            "assert set(tinydg.__all__) <= set(dir(tinydg))\n"
            "try:\n    tinydg.no_such_name\nexcept AttributeError:\n    pass\nelse:\n    raise SystemExit(1)\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=60)
