"""Import contracts of the code base, checked on every module's syntax tree (an import-linter in a test):

1. plugins (``plugins/`` and the example packages) import robustft through its public plugin API only,
   ``robustft.plugin`` (and ``robustft_plugins`` modules, their own package);
2. the core (``robustft/``) never imports a built-in plugin: plugins are found through entry points, as a
   third party's would be;
3. the library never imports the command line (``robustft.cli*``), which is a thin layer over it;
4. the training package's modules stay small (one job each, the loop in one screen).

Each contract is also shown failing on a module written to break it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import REPO

CLI_MODULES = {"robustft/__main__.py", "robustft/testing.py"}  # the console entry point, and run_cli for plugin tests


def imported_modules(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """(line, module) for every import in ``tree``, nested ones (inside functions) included."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module
            if node.module == "robustft":  # from robustft import cli
                for alias in node.names:
                    yield node.lineno, f"robustft.{alias.name}"


def plugin_violations(source: str, where: str) -> list[str]:
    return [
        f"{where}:{line} imports {module}; plugins import robustft.plugin only"
        for line, module in imported_modules(ast.parse(source))
        if (module == "robustft" or module.startswith("robustft.")) and module != "robustft.plugin"
    ]


def core_violations(source: str, where: str) -> list[str]:
    found = []
    for line, module in imported_modules(ast.parse(source)):
        if module.split(".")[0] == "robustft_plugins":
            found.append(f"{where}:{line} imports the built-in plugin {module}")
        if (module.startswith("robustft.cli") or module == "robustft.cli") and not Path(where).name.startswith("cli"):
            found.append(f"{where}:{line} imports the command line ({module})")
    return found


def sources(*folders: str) -> Iterator[tuple[str, str]]:
    for folder in folders:
        for path in sorted((REPO / folder).rglob("*.py")):
            yield str(path.relative_to(REPO)), path.read_text(encoding="utf-8")


#: Lines per module of the training package, so that each keeps one job and the loop reads in one screen
#: (docs/algorithms.md, "How the training package is organised").
TRAINING_MODULE_LINES, TRAINING_LOOP_LINES = 300, 200


def test_the_training_package_keeps_its_modules_small():
    sizes = {where: text.count("\n") for where, text in sources("robustft/training")}
    assert "robustft/training/loop.py" in sizes
    limits = {where: TRAINING_LOOP_LINES if where.endswith("/loop.py") else TRAINING_MODULE_LINES for where in sizes}
    assert {where: n for where, n in sizes.items() if n > limits[where]} == {}


def test_plugins_import_only_the_public_plugin_api():
    found = [v for where, text in sources("plugins", "examples") if "/tests/" not in where for v in plugin_violations(text, where)]
    assert found == []


def test_the_core_never_imports_plugins_and_the_library_never_imports_the_cli():
    found = [v for where, text in sources("robustft") if where not in CLI_MODULES for v in core_violations(text, where)]
    assert found == []  # no exception: export asks a zoo to describe its architecture (ModelZoo.describe_architecture)


@pytest.mark.parametrize(
    "check,source,expected",
    [
        (plugin_violations, "from robustft.training import PassCounter\n", "imports robustft.training"),
        (plugin_violations, "def f():\n    import robustft.contracts\n", "imports robustft.contracts"),
        (core_violations, "from robustft_plugins.zoos.file_zoo import X\n", "imports the built-in plugin"),
        (core_violations, "def f():\n    from robustft.cli import app\n", "imports the command line"),
        (core_violations, "from robustft import cli\n", "imports the command line"),
    ],
)
def test_each_contract_fails_on_a_module_that_breaks_it(check, source, expected):
    (found,) = check(source, "robustft/synthetic.py")
    assert expected in found and found.startswith("robustft/synthetic.py:")
    assert check("from robustft.plugin import Scheme\nimport torch\n", "robustft/fine.py") == []


def test_the_plugin_api_names_what_it_exports():
    import robustft.plugin as api

    missing = [name for name in api.__all__ if not hasattr(api, name)]
    assert missing == [] and api.API_VERSION.startswith("1.")
    api.require_api("1.0", "acme")
    with pytest.raises(api.UserError, match="needs robustft's plugin API 2.0"):
        api.require_api("2.0", "acme")
    with pytest.raises(api.BadInputError, match="not a version"):
        api.require_api("one", "acme")


#: The most lines a module may have, so that each keeps one job: the core's, and the built-in plugins' (APGD, one
#: algorithm with its three norms' steps and projections, is the longest).
CORE_MODULE_LINES, PLUGIN_MODULE_LINES = 500, 550


def test_no_module_of_the_core_or_the_built_in_plugins_is_large():
    sizes = {where: text.count("\n") for where, text in sources("robustft", "plugins")}
    limit = {where: CORE_MODULE_LINES if where.startswith("robustft/") else PLUGIN_MODULE_LINES for where in sizes}
    assert {where: n for where, n in sizes.items() if n > limit[where]} == {}


#: Each top-level package and its folder.
PACKAGE_FOLDERS = (("robustft", "robustft"), ("robustft_plugins", "plugins/robustft_plugins"))


def test_folder_names_are_import_names():
    """robustft/ is the package robustft and plugins/robustft_plugins/ the package robustft_plugins: a path in a
    traceback or a docstring is where the module is."""
    import importlib

    for name, folder in PACKAGE_FOLDERS:
        assert Path(importlib.import_module(name).__file__).resolve() == (REPO / folder / "__init__.py").resolve()


def test_docstrings_and_docs_cite_only_what_is_in_the_repository():
    """Papers and files of the repository, never a planning document, an issue number or a path on one machine."""
    import re

    outside = re.compile("|".join((r"DESIGN\.md", r"\.\./shared", r"\bissue \d", r"/work/", r"/tmp/h\d")))
    cited = [
        f"{where}: {match.group(0)}"
        for where, text in (*sources("robustft", "plugins", "benchmarks", "examples"), *markdown("docs", "README.md"))
        for match in outside.finditer(text)
    ]
    assert cited == []


def markdown(*places: str) -> Iterator[tuple[str, str]]:
    for place in places:
        for path in [REPO / place] if place.endswith(".md") else sorted((REPO / place).rglob("*.md")):
            yield str(path.relative_to(REPO)), path.read_text(encoding="utf-8")


def test_every_package_folder_is_installed():
    """pyproject.toml lists the packages a non-editable install copies: a new sub-package must be among them."""
    import tomllib

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join((package, *init.parent.relative_to(REPO / folder).parts))
        for package, folder in PACKAGE_FOLDERS
        for init in (REPO / folder).rglob("__init__.py")
    }
    assert found - listed == set()
