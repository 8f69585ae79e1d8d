"""The one place that makes the PyPI ``robustbench`` package importable next to the PyPI AutoAttack.

``pip install robustbench`` (1.1.1) gives a package that fails to import twice:

* ``robustbench/loaders.py`` does ``import pkg_resources`` for one call,
  ``pkg_resources.resource_filename(package, path)``; setuptools 82 removed ``pkg_resources`` and
  setuptools 80-81 print a deprecation warning on import. When the real module is missing we put a
  small stand-in in ``sys.modules`` that answers that one call through :mod:`importlib.resources`, so
  no setuptools pin is needed.
* ``robustbench/eval.py`` does ``from autoattack import AutoAttack`` and
  ``from autoattack.state import EvaluationState``. AutoAttack's PyPI distribution, ``pyautoattack``,
  installs the module ``pyautoattack``. When no ``autoattack`` module is installed (the GitHub
  version would provide one) we alias ``autoattack`` and its submodules to ``pyautoattack``'s.
  ``robustbench.eval.benchmark`` still does not fit pyautoattack's keyword-only API; robustft never
  calls it (the ``autoattack`` suite calls pyautoattack directly).

Both stand-ins are installed only for the duration of the import and removed again, so nothing else in
the process sees them; robustbench keeps the references it took. This module does nothing when
robustft is imported: the zoo calls :func:`import_robustbench` when it first needs the registry.
"""

from __future__ import annotations

import importlib
import importlib.resources
import importlib.util
import sys
import types
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

from robustft.plugin import UserError

INSTALL_HINT = "pip install 'robustft[zoos]'"

#: pyautoattack's submodules that robustbench (or code it imports) reaches as ``autoattack.<name>``.
_AUTOATTACK_SUBMODULES = ("state", "autopgd_base", "fab_pt", "square", "checks", "other_utils")


def _resource_filename(package: str, resource: str) -> str:
    """``pkg_resources.resource_filename`` for a file inside an installed (unzipped) package."""
    return str(importlib.resources.files(package).joinpath(resource))


def _pkg_resources_stand_in() -> types.ModuleType:
    module = types.ModuleType("pkg_resources")
    module.__doc__ = "robustft's stand-in for the one pkg_resources function robustbench calls."
    module.resource_filename = _resource_filename  # type: ignore[attr-defined]
    return module


def _missing(name: str) -> bool:
    if name in sys.modules:
        return False
    try:
        return importlib.util.find_spec(name) is None
    except (ImportError, ValueError):
        return True


@contextmanager
def _stand_ins() -> Iterator[None]:
    """Put the stand-ins in ``sys.modules`` while the body runs; remove exactly those afterwards."""
    added: list[str] = []
    if _missing("pkg_resources"):
        sys.modules["pkg_resources"] = _pkg_resources_stand_in()
        added.append("pkg_resources")
    if _missing("autoattack"):
        try:
            pyautoattack = importlib.import_module("pyautoattack")
        except ImportError:
            raise UserError(f"RobustBench needs AutoAttack, which is not installed: {INSTALL_HINT}.") from None
        sys.modules["autoattack"] = pyautoattack
        added.append("autoattack")
        for sub in _AUTOATTACK_SUBMODULES:
            sys.modules[f"autoattack.{sub}"] = importlib.import_module(f"pyautoattack.{sub}")
            added.append(f"autoattack.{sub}")
    try:
        yield
    finally:
        for name in added:
            sys.modules.pop(name, None)


@cache
def import_robustbench() -> types.ModuleType:
    """``robustbench`` imported with the fixes above (once per process); one sentence if it is missing."""
    if _missing("robustbench"):
        raise UserError(f"The robustbench zoo needs the robustbench package: {INSTALL_HINT}.")
    with _stand_ins(), warnings.catch_warnings():
        # robustbench's import chain warns about deprecated torch.jit and pkg_resources APIs it uses;
        # those are its maintainers' business, not the user's.
        warnings.simplefilter("ignore")
        try:
            module = importlib.import_module("robustbench")
            importlib.import_module("robustbench.utils")
            importlib.import_module("robustbench.model_zoo")
        except ImportError as exc:
            raise UserError(f"robustbench failed to import ({exc}); reinstall it with {INSTALL_HINT}.") from None
    return module
