"""The package imports only what pyproject.toml declares, and optional packages only lazily.

A module-level import of a package that ``pip install robustft`` does not bring fails on a fresh machine at
the first command; a lazy import (inside a function) of an extra's package is fine when the function says
which extra to install. This test walks every module of ``robustft/`` and ``plugins/`` with :mod:`ast`.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OWN = {"robustft", "robustft_plugins"}


@dataclass(frozen=True)
class Import:
    module: str  # top-level name, e.g. "torch"
    file: str
    line: int
    lazy: bool  # inside a function or under TYPE_CHECKING


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    return canonical(re.split(r"[\s<>=!~;\[(]", requirement.strip(), maxsplit=1)[0])


def declared(pyproject: Path) -> tuple[set[str], dict[str, set[str]]]:
    project = tomllib.loads(pyproject.read_text())["project"]
    core = {requirement_name(r) for r in project["dependencies"]}
    extras = {extra: {requirement_name(r) for r in reqs} for extra, reqs in project["optional-dependencies"].items()}
    return core, extras


def imports_of(source: str, file: str) -> list[Import]:
    """Absolute imports of ``source``, each marked lazy when it sits in a function or a TYPE_CHECKING block."""
    found: list[Import] = []

    def visit(node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                inner = True
            if isinstance(child, ast.Import):
                found.extend(Import(a.name.split(".")[0], file, child.lineno, lazy) for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                found.append(Import(child.module.split(".")[0], file, child.lineno, lazy))
            visit(child, inner)

    visit(ast.parse(source), False)
    return found


def third_party(imports: list[Import]) -> list[Import]:
    return [i for i in imports if i.module not in sys.stdlib_module_names and i.module not in OWN and i.module != "__future__"]


def problems(imports: list[Import], core: set[str], extras: dict[str, set[str]]) -> list[str]:
    """One line per import that a fresh ``pip install robustft`` would not satisfy."""
    owners = metadata.packages_distributions()
    optional = set().union(*extras.values()) if extras else set()
    found = []
    for imp in third_party(imports):
        dists = {canonical(d) for d in owners.get(imp.module, [imp.module])}
        where = f"{imp.file}:{imp.line} imports {imp.module!r}"
        if dists & core:
            continue
        if dists & optional:
            if not imp.lazy:
                extra = next(e for e, names in extras.items() if dists & names)
                found.append(f"{where} at module level, but it comes only with the extra [{extra}]")
            continue
        found.append(f"{where}, which no dependency or extra in pyproject.toml declares")
    return found


def package_imports() -> list[Import]:
    files = sorted([*(ROOT / "robustft").rglob("*.py"), *(ROOT / "plugins").rglob("*.py")])
    return [i for f in files for i in imports_of(f.read_text(), str(f.relative_to(ROOT)))]


def test_every_import_of_the_package_is_declared():
    core, extras = declared(ROOT / "pyproject.toml")
    assert problems(package_imports(), core, extras) == []


def test_the_check_catches_an_undeclared_and_an_eager_optional_import():
    core, extras = declared(ROOT / "pyproject.toml")
    source = "import yaml\nimport timm\n\ndef f():\n    import timm\n    from safetensors.torch import load_file\n"
    found = problems(imports_of(source, "mod.py"), core, extras)
    assert len(found) == 2
    assert "mod.py:1 imports 'yaml'" in found[0] and "no dependency" in found[0]
    assert "mod.py:2 imports 'timm' at module level" in found[1] and "[zoos]" in found[1]


def test_type_checking_imports_count_as_lazy():
    source = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import timm\n"
    assert [i.lazy for i in third_party(imports_of(source, "m.py"))] == [True]


@pytest.mark.parametrize("name", ["click", "tomli"])
def test_no_undeclared_runtime_fallbacks(name):
    """typer >= 0.29 vendors click; Python >= 3.11 has tomllib: neither may be imported."""
    assert not [i for i in package_imports() if i.module == name]
