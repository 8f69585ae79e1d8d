"""The public API for plugins: everything a scheme, attack, suite, zoo, data set or logger plugin may import.

A plugin imports from here only (``from robustft.plugin import Scheme, hookimpl, Norm``); the modules behind
these names may move between releases, this module's names do not within a major ``API_VERSION``. The built-in
plugins in ``plugins/`` are held to the same rule by ``tests/test_architecture.py``. A plugin that needs a newer
API says so with :func:`require_api`.

Names, by purpose:

* registering: :data:`hookimpl` (the hooks are documented in ``robustft.hookspecs`` and docs/plugins.md);
* contracts: :class:`Scheme` (its options: :class:`SchemeOptions`, :func:`option`, :class:`SchemeOption`),
  :class:`TrainContext`, :class:`Attack`,
  :class:`AttackFactory`, :class:`AttackResult`, :class:`EvalSuite`, :class:`ModelZoo`, :class:`ModelInfo`,
  :class:`DatasetPlugin`, :class:`RunLogger`;
* attack helpers: :func:`counted_passes` and :class:`Passes` (the passes through a model, measured, for an
  attack wrapping code that does not count them);
* norms and geometry: :class:`Norm`, :data:`DISPLAY_ORDER`, :func:`format_radius`, :func:`project`,
  :func:`step_for`, :class:`L1Step`, :func:`l0_norms`, :func:`l2_radius_hull`;
* errors: :class:`UserError`, :class:`BadInputError`, :class:`UnknownNameError`, :class:`UnsafeFileError`;
* files and data: :func:`load_torch`, :func:`save_torch`, :func:`sha256_file`, :func:`atomic_write_text`,
  :func:`append_jsonl`, :func:`pickle_culprit`, :func:`cache_dir`, :func:`data_root`, :class:`ImageArrayDataset`,
  :func:`load_extra_data`, :func:`safe_unpickle`, :func:`get_key`; loggers' :data:`METRICS_FILE`,
  :func:`flatten`, :func:`scalars`; the folder format of ``robustft export``, which the file zoo reads:
  :data:`EXPORT_WEIGHTS`, :data:`EXPORT_CONFIG`, :data:`EXPORT_FORMAT`, :data:`EXPORT_FORMAT_VERSION`;
* the installed plugins, for plugins that build on others (loaded on first use): :func:`registries`,
  :func:`resolve_dataset`, and :class:`PassCounter` (the engine's account of forward and backward passes,
  for schemes that run their own attack).
"""

from __future__ import annotations

from typing import Any

from robustft.attack_passes import Passes, counted_passes
from robustft.contracts import (
    Attack,
    AttackFactory,
    AttackResult,
    DatasetPlugin,
    EvalSuite,
    ModelInfo,
    ModelZoo,
    Scheme,
    SchemeOption,
    SchemeOptions,
    TrainContext,
    option,
)
from robustft.data import ImageArrayDataset, data_root, get_key, load_extra_data, safe_unpickle
from robustft.errors import BadInputError, UnknownNameError, UserError
from robustft.export_format import EXPORT_CONFIG, EXPORT_FORMAT, EXPORT_FORMAT_VERSION, EXPORT_WEIGHTS
from robustft.geometry import l2_radius_hull
from robustft.hookspecs import hookimpl
from robustft.io import UnsafeFileError, append_jsonl, atomic_write_text, load_torch, pickle_culprit, save_torch, sha256_file
from robustft.loggers import METRICS_FILE, RunLogger, flatten, scalars
from robustft.lp import L1Step, l0_norms, project, step_for
from robustft.norms import DISPLAY_ORDER, Norm, format_radius
from robustft.paths import cache_dir

#: The plugin API's version: a plugin written for 1.x works with every robustft whose API_VERSION is 1.y, y >= x.
API_VERSION = "1.0"

# Names that import the engine or the plugin manager, which themselves load plugins: resolved on first use.
_LAZY = {
    "registries": ("robustft.pluginmanager", "registries"),
    "resolve_dataset": ("robustft.models", "resolve_dataset"),
    "PassCounter": ("robustft.training", "PassCounter"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'robustft.plugin' has no attribute {name!r}")


def require_api(version: str, plugin: str) -> None:
    """Refuse, in one sentence, to run ``plugin`` when it needs plugin API ``version`` (``"1.0"``) and this robustft
    offers another major version or an older minor one."""
    try:
        major, minor = (int(part) for part in version.split(".")[:2])
    except ValueError:
        raise BadInputError(f"Plugin {plugin!r} asks for plugin API {version!r}, which is not a version like '1.0'.") from None
    have_major, have_minor = (int(part) for part in API_VERSION.split(".")[:2])
    if major != have_major or minor > have_minor:
        raise UserError(
            f"Plugin {plugin!r} needs robustft's plugin API {version}; this robustft offers {API_VERSION}: upgrade robustft or the plugin."
        )


__all__ = [  # noqa: F822 - the lazy names resolve through __getattr__
    "API_VERSION",
    "DISPLAY_ORDER",
    "EXPORT_CONFIG",
    "EXPORT_FORMAT",
    "EXPORT_FORMAT_VERSION",
    "EXPORT_WEIGHTS",
    "METRICS_FILE",
    "Attack",
    "AttackFactory",
    "AttackResult",
    "BadInputError",
    "DatasetPlugin",
    "EvalSuite",
    "ImageArrayDataset",
    "L1Step",
    "ModelInfo",
    "ModelZoo",
    "Norm",
    "Passes",
    "RunLogger",
    "Scheme",
    "SchemeOption",
    "SchemeOptions",
    "TrainContext",
    "UnknownNameError",
    "UnsafeFileError",
    "UserError",
    "append_jsonl",
    "atomic_write_text",
    "cache_dir",
    "counted_passes",
    "data_root",
    "flatten",
    "format_radius",
    "get_key",
    "hookimpl",
    "l0_norms",
    "l2_radius_hull",
    "load_extra_data",
    "load_torch",
    "option",
    "pickle_culprit",
    "project",
    "require_api",
    "safe_unpickle",
    "save_torch",
    "scalars",
    "sha256_file",
    "step_for",
    *_LAZY,
]
