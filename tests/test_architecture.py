"""The house rules of DESIGN.md section 1 and CONTRIBUTING.md, checked on the source.

* imports inside ``hyptree`` only go down the layers (``LAYERS``), whether at module
  level or inside a function;
* no import circle between ``hyptree`` modules (a package ``__init__`` counts as a module,
  so a submodule importing its own package's ``__init__`` is a circle);
* only ``hyptree/run`` reads a yacs config;
* no module over ``MAX_MODULE_LINES`` lines, no function with more than ``MAX_FUNCTION_LINES`` lines of code (after its docstring) unless
  it says why in a ``# long:`` comment.
"""

from __future__ import annotations

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG = os.path.join(ROOT, "hyptree")

# subpackage -> the subpackages it may import (itself always allowed)
LAYERS = {
    "utils": set(),
    "geometry": {"utils"},
    "tree": {"utils"},
    "loss": {"utils", "geometry", "tree"},
    "model": {"utils", "geometry", "tree", "loss"},
    "data": {"utils", "tree"},
    "eval": {"utils", "geometry", "tree", "loss", "model", "data"},
    "run": {"utils", "geometry", "tree", "loss", "model", "data", "eval"},
}
TOP_LEVEL = {"__init__", "__main__"}  # hyptree/__init__.py, hyptree/__main__.py (the CLI: may import all)
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80


def _modules() -> dict[str, str]:
    """Dotted module name -> file path, for every .py file under hyptree/."""
    out = {}
    for folder, _, files in os.walk(PKG):
        for f in files:
            if not f.endswith(".py"):
                continue
            rel = os.path.relpath(os.path.join(folder, f), ROOT)[:-3].split(os.sep)
            if rel[-1] == "__init__":
                rel = rel[:-1]
            out[".".join(rel)] = os.path.join(folder, f)
    return out


MODULES = _modules()


def _resolve(module: str, node: ast.ImportFrom | ast.Import) -> list[str]:
    """The hyptree modules whose code an import statement needs to have run.

    ``import a.b.c`` and ``from a.b import c`` (``c`` a submodule) need ``a.b.c``;
    ``from a.b import name`` needs ``a.b`` (its ``__init__``) to have finished. Parent packages
    that Python initialises on the way are not edges: importing ``a.b.c`` from inside ``a.b``'s
    own ``__init__`` is the normal way a package re-exports its modules.
    """
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name in MODULES and a.name != "hyptree"]
    base = node.module or ""
    if node.level:  # relative: resolve against this module's package
        is_pkg = MODULES.get(module, "").endswith("__init__.py")
        pkg = module.split(".") if is_pkg else module.split(".")[:-1]
        pkg = pkg[: len(pkg) - node.level + 1]
        base = ".".join(pkg + ([base] if base else []))
    if not base.startswith("hyptree"):
        return []
    targets = []
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        if sub in MODULES:
            targets.append(sub)
        elif base in MODULES and base != "hyptree":
            targets.append(base)
    return targets


def _imports() -> dict[str, set[str]]:
    graph = {}
    for module, path in MODULES.items():
        tree = ast.parse(open(path, encoding="utf-8").read(), path)
        deps = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                deps.update(t for t in _resolve(module, node) if t != module)
        graph[module] = deps
    return graph


GRAPH = _imports()


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_subpackage_has_a_layer():
    for module in MODULES:
        layer = _layer(module)
        assert layer in LAYERS or layer in TOP_LEVEL, f"{module}: no layer in LAYERS for {layer!r}"


def test_imports_only_go_down():
    bad = []
    for module, deps in GRAPH.items():
        layer = _layer(module)
        if layer in TOP_LEVEL:
            continue
        for dep in deps:
            to = _layer(dep)
            if to == "__init__" and dep == "hyptree":
                continue
            if to != layer and to not in LAYERS[layer]:
                bad.append(f"{module} imports {dep} ({layer} -> {to})")
    assert not bad, "imports that go up or sideways:\n" + "\n".join(sorted(bad))


def test_no_import_circles():
    # Tarjan's strongly connected components; any component of 2+ modules is a circle
    index, low, stack, on, comps, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in GRAPH.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    assert not comps, f"import circles: {comps}"


def test_the_circle_check_catches_a_circle(monkeypatch):
    """The checker itself: a planted a -> b -> a circle is found."""
    monkeypatch.setitem(GRAPH, "hyptree.tree.a", {"hyptree.tree.b"})
    monkeypatch.setitem(GRAPH, "hyptree.tree.b", {"hyptree.tree.a"})
    with pytest.raises(AssertionError, match="hyptree.tree.a"):
        test_no_import_circles()


def test_only_run_reads_yacs():
    bad = []
    for module, path in MODULES.items():
        if _layer(module) in ("run", "__main__"):
            continue
        tree = ast.parse(open(path, encoding="utf-8").read(), path)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("yacs"):
                bad.append(f"{module}:{node.lineno} imports yacs")
            if isinstance(node, ast.Import) and any(a.name.startswith("yacs") for a in node.names):
                bad.append(f"{module}:{node.lineno} imports yacs")
            if (
                isinstance(node, ast.Attribute)
                and node.attr in ("TRAINER", "DATASET", "OPTIM")
                and isinstance(node.value, ast.Name)
            ):
                bad.append(f"{module}:{node.lineno} reads {node.value.id}.{node.attr}")
    assert not bad, "yacs config read outside hyptree/run:\n" + "\n".join(bad)


def test_module_sizes():
    big = {m: n for m, p in MODULES.items() if (n := sum(1 for _ in open(p, encoding="utf-8"))) > MAX_MODULE_LINES}
    assert not big, f"modules over {MAX_MODULE_LINES} lines (split by idea): {big}"


def test_function_sizes():
    long_ = []
    for module, path in MODULES.items():
        text = open(path, encoding="utf-8").read()
        lines = text.splitlines()
        for node in ast.walk(ast.parse(text, path)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                body = node.body
                if len(body) > 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                    body = body[1:]  # the docstring does not count
                n = node.end_lineno - body[0].lineno + 1
                body = lines[node.lineno - 1 : node.end_lineno]
                if n > MAX_FUNCTION_LINES and not any("# long:" in line for line in body):
                    long_.append(f"{module}.{node.name} ({n} lines, line {node.lineno})")
    assert not long_, f"functions over {MAX_FUNCTION_LINES} lines without a '# long:' reason:\n" + "\n".join(long_)


def test_the_light_preset_list_matches_its_owner():
    from hyptree.loss.objective import PRESETS
    from hyptree.run import runlist

    assert runlist._PRESETS == PRESETS
