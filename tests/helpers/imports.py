"""The project's import graph, read from the source with :mod:`ast` (nothing is imported).

Every ``import``/``from ... import`` at any depth of a file counts (a lazy import inside a function is
still an arrow between layers, and still a cycle).
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.helpers import REPO

#: the package folders of the project (DESIGN.md's layers; ``evaluation`` where it exists)
PACKAGES = ("runtime", "export", "models", "benchmarks", "reference", "avs", "evaluation")


def module_name(path: Path, repo: Path = REPO) -> str:
    """``runtime/bundle/__init__.py`` -> ``runtime.bundle``; ``runtime/pipeline.py`` -> ``runtime.pipeline``."""
    parts = list(path.relative_to(repo).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules(repo: Path = REPO, packages=PACKAGES) -> dict[str, Path]:
    """Every module of the package folders that exist: dotted name -> file."""
    mods: dict[str, Path] = {}
    for pkg in packages:
        base = repo / pkg
        if base.is_dir():
            for p in sorted(base.rglob("*.py")):
                if "__pycache__" not in p.parts:
                    mods[module_name(p, repo)] = p
    return mods


def imports_of(path: Path, name: str, known: set[str]) -> set[str]:
    """Every module ``path`` (module ``name``) imports, as absolute dotted names. ``from a import b``
    gives ``a.b`` where that is a known module, else ``a``; relative imports are resolved."""
    tree = ast.parse(path.read_text(), str(path))
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                base = ".".join([*anchor, base]) if base else ".".join(anchor)
            for a in node.names:
                sub = f"{base}.{a.name}"
                out.add(sub if sub in known else base)
    return out


def all_imports(repo: Path = REPO, packages=PACKAGES) -> dict[str, set[str]]:
    """module -> every module it imports (project, third-party and standard library)."""
    mods = project_modules(repo, packages)
    known = set(mods)
    return {m: imports_of(p, m, known) for m, p in mods.items()}


def project_graph(repo: Path = REPO, packages=PACKAGES) -> dict[str, set[str]]:
    """module -> the project modules it imports (itself excluded)."""
    imps = all_imports(repo, packages)
    return {m: {i for i in deps if i in imps and i != m} for m, deps in imps.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                return stack[stack.index(n) :] + [n]
            if n not in state and (c := visit(n)):
                return c
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (c := visit(m)):
            return c
    return None
