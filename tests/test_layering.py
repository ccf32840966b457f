"""The import rules of the source tree (README, Layout), checked on the AST of every module.

- nothing under forensics/ except forensics/cli/ imports workers or trainer;
- nothing in workers/ imports trainer;
- nothing outside trainer/ and forensics/cli/ imports torch, torchvision or sklearn at module level;
- no import cycles among the project's modules.

Imports inside functions count for the first two rules and for cycles; ``if TYPE_CHECKING:``
blocks count for nothing (they never run). Each failure names the file, the line and the import.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

PACKAGES = ("forensics", "workers", "trainer")
HEAVY = ("torch", "torchvision", "sklearn")


def _modules(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the project's packages under ``root``."""
    out = {}
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _imports(path: Path, module: str, is_package: bool) -> list[tuple[int, str, bool]]:
    """(line, imported module, at module level) of every import outside ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str, bool]] = []

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for sub in child.orelse:
                    visit_stmt(sub, top)
                continue
            visit_stmt(child, top)

    def visit_stmt(child: ast.AST, top: bool) -> None:
        if isinstance(child, ast.Import):
            found.extend((child.lineno, a.name, top) for a in child.names)
        elif isinstance(child, ast.ImportFrom):
            base = child.module or ""
            if child.level:  # relative: resolve against this module's package
                pkg = module.split(".") if is_package else module.split(".")[:-1]
                base = ".".join(pkg[: len(pkg) - child.level + 1] + ([base] if base else []))
            found.append((child.lineno, base, top))
            found.extend((child.lineno, f"{base}.{a.name}", top) for a in child.names)
        nested = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        visit(child, top and not nested)

    visit(tree, True)
    return found


def _under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def violations(root: Path) -> list[str]:
    """Every broken rule under ``root``, one line each: 'file:line: imports X: why'."""
    mods = _modules(root)
    problems: list[str] = []
    graph: dict[str, dict[str, int]] = {m: {} for m in mods}
    for mod, path in mods.items():
        rel = path.relative_to(root)
        for line, name, top in _imports(path, mod, path.name == "__init__.py"):
            where = f"{rel}:{line}: imports {name}"
            if _under(mod, "forensics") and not _under(mod, "forensics.cli"):
                if _under(name, "workers") or _under(name, "trainer"):
                    problems.append(f"{where}: only forensics/cli/ may import workers/ or trainer/")
            if _under(mod, "workers") and _under(name, "trainer"):
                problems.append(f"{where}: workers/ never imports trainer/")
            if top and not (_under(mod, "trainer") or _under(mod, "forensics.cli")):
                if any(_under(name, h) for h in HEAVY):
                    problems.append(f"{where}: torch/torchvision/sklearn at module level only in trainer/ "
                                    "and forensics/cli/ (import it inside the function that needs it)")  # fmt: skip
            if name in mods and name != mod:
                graph[mod].setdefault(name, line)
    problems += [f"import cycle: {c}" for c in _cycles(graph, mods, root)]
    return problems


def _cycles(graph: dict[str, dict[str, int]], mods: dict[str, Path], root: Path) -> list[str]:
    """One line per strongly connected component with more than one module (Tarjan), as a path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    comps: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
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
                comps.append(comp)

    for v in sorted(graph):
        if v not in index:
            strong(v)
    out = []
    for comp in comps:
        members, start = set(comp), min(comp)
        path, seen, v = [start], {start}, start  # walk edges inside the component back to the start
        while True:
            nxt = min((w for w in graph[v] if w in members), key=lambda w: (w != start, w in seen, w))
            path.append(nxt)
            if nxt == start or nxt in seen:
                break
            seen.add(nxt)
            v = nxt
        out.append(" -> ".join(f"{mods[a].relative_to(root)}:{graph[a][b]}" for a, b in zip(path, path[1:]))
                   + f" -> {mods[path[-1]].relative_to(root)}")  # fmt: skip
    return out


def test_the_source_tree_keeps_the_layering_rules():
    problems = violations(ROOT)
    assert not problems, "\n".join(problems)


def test_each_rule_is_caught_and_names_the_file_and_the_import(tmp_path):
    files = {
        "forensics/__init__.py": "",
        "forensics/bad.py": "def f():\n    from workers.w import x\n",
        "forensics/heavy.py": "import numpy\nimport torch\n",
        "forensics/lazy.py": "def f():\n    import torch\n",
        "forensics/typed.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from trainer.t import T\n",
        "forensics/cli/__init__.py": "import torch\nfrom workers import w\nfrom trainer import t\n",
        "workers/__init__.py": "",
        "workers/w.py": "from trainer.t import y\nx = 1\n",
        "trainer/__init__.py": "",
        "trainer/t.py": "import torch\nfrom trainer import u\ny = 1\n",
        "trainer/u.py": "from trainer.t import y\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert sorted(violations(tmp_path)) == sorted([
        "forensics/bad.py:2: imports workers.w: only forensics/cli/ may import workers/ or trainer/",
        "forensics/bad.py:2: imports workers.w.x: only forensics/cli/ may import workers/ or trainer/",
        "forensics/heavy.py:2: imports torch: torch/torchvision/sklearn at module level only in trainer/ and "
        "forensics/cli/ (import it inside the function that needs it)",
        "workers/w.py:1: imports trainer.t: workers/ never imports trainer/",
        "workers/w.py:1: imports trainer.t.y: workers/ never imports trainer/",
        "import cycle: trainer/t.py:2 -> trainer/u.py:1 -> trainer/t.py",
    ])  # fmt: skip
