"""robustft: fine-tune adversarially robust classifiers into multiple-norm robust ones.

The library behind the ``robustft`` command::

    import robustft
    run = robustft.finetune(scheme="e-at", epochs=3)          # the embedded default: digits, offline
    report = robustft.evaluate(run=run.run_dir, norms="1,2,inf")
    for row in report.results:
        print(row.name, row.clean, row.robust, row.union)

Heavy modules (torch) load on first use of these names, not on ``import robustft``.
"""

from __future__ import annotations

from typing import Any

from robustft.hookspecs import hookimpl

__version__ = "0.1.0"

_LAZY = {
    "finetune": ("robustft.training", "finetune"),
    "evaluate": ("robustft.evaluation", "evaluate"),
    "compare": ("robustft.compare", "compare"),
    "geometry": ("robustft.geometry", "geometry"),
    "get_host": ("robustft.pluginmanager", "get_host"),
    "Norm": ("robustft.norms", "Norm"),
    "UserError": ("robustft.errors", "UserError"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'robustft' has no attribute {name!r}")


__all__ = ["hookimpl", "__version__", *_LAZY]
