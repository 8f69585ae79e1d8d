"""The hooks a robustft plugin can implement.

A plugin is a module (or object) listed under the ``robustft`` entry-point group of its package::

    [project.entry-points.robustft]
    my-scheme = "robustft_myscheme"

It implements some of the hooks below with the :data:`hookimpl` marker. Each ``register_*`` hook
receives a ``register`` callable and calls it once per thing it contributes, passing an object (for
schemes and attack families, usually a class or an instance) that has ``name``, ``description`` and
``aliases`` attributes and follows the matching contract in :mod:`robustft.contracts`::

    from robustft import hookimpl

    @hookimpl
    def register_schemes(register):
        register(MyScheme)

Hooks are called lazily, the first time a command needs that kind of thing. A plugin that fails to
import, raises inside a hook or registers a malformed or duplicate object is named in a warning and
skipped; ``ROBUSTFT_STRICT_PLUGINS=1`` turns that into an error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

PROJECT_NAME = "robustft"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

Register = Callable[[Any], None]


@hookspec
def register_schemes(register: Register) -> None:
    """Register training schemes.

    Call ``register(cls)`` with a subclass of :class:`robustft.contracts.Scheme`. The class is
    instantiated per run with the training norms and the ``--option NAME=VALUE`` values it declares in
    ``options``.
    """


@hookspec
def register_attacks(register: Register) -> None:
    """Register attack families.

    Call ``register(factory)`` with an instance of :class:`robustft.contracts.AttackFactory`; its
    ``build(norm, eps, steps=..., purpose="train"|"eval", **options)`` returns an
    :class:`robustft.contracts.Attack`. The training attack of a run is chosen with ``--attack NAME``.
    """


@hookspec
def register_suites(register: Register) -> None:
    """Register evaluation suites (protocols).

    Call ``register(suite)`` with an instance of :class:`robustft.contracts.EvalSuite`. It lists, per
    norm, the attacks ``robustft eval --suite NAME`` runs; the evaluator does the bookkeeping and the
    checks.
    """


@hookspec
def register_zoos(register: Register) -> None:
    """Register model zoos.

    Call ``register(zoo)`` with an instance of :class:`robustft.contracts.ModelZoo`. Users select a
    zoo's model with ``--model NAME`` (looked up in every zoo) or ``--model ZOO:NAME``.
    """


@hookspec
def register_datasets(register: Register) -> None:
    """Register data sets.

    Call ``register(dataset)`` with an instance of :class:`robustft.contracts.DatasetPlugin`.
    """


@hookspec
def register_loggers(register: Register) -> None:
    """Register experiment trackers (loggers).

    Call ``register(cls)`` with a subclass of :class:`robustft.loggers.RunLogger`. A run instantiates the
    loggers named with ``robustft finetune --log NAME`` (and ``compare --log``), plus ``jsonl`` (metrics.jsonl),
    which is always on. Each opens with the run folder and configuration, receives every record the engine
    writes (per batch, per epoch, on resume) and a summary at the end (the union table of an evaluated run,
    else the final epoch's statistics). A logger that raises is switched off with one warning; the run goes
    on. See docs/loggers.md.
    """


@hookspec
def register_commands(app: Any) -> None:
    """Add sub-commands to the ``robustft`` command line.

    ``app`` is the root :class:`typer.Typer`; decorate functions with ``@app.command()``. Called when the
    command line names a command the core does not have, and when the root help is shown without an up-to-date
    manifest (``robustft.plugin_commands``): built-in commands and ``--version`` start without loading any
    plugin. A command's first docstring line is what the root help lists.
    """
