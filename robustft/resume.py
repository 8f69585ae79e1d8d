"""Resuming a run: the configuration it continues with, and the settings edited since its last checkpoint.

``finetune(resume=run_dir)`` continues with the run's own ``config.toml``; options given with ``--resume``
must agree with it, except the operational ones (``robustft.config.OPERATIONAL_FIELDS``) and the length of
the run, which may change (docs/reliability.md).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from robustft.config import NOT_SETTINGS, OPERATIONAL_FIELDS, FinetuneConfig, build_config, option_flags
from robustft.errors import BadInputError, UserError

#: Settings ``--resume`` may change on purpose: the length of the run.
RESUME_OVERRIDES = frozenset({"epochs"})
RESUME_OVERRIDE_SOURCE = "option (--resume)"


def resume_config(run_dir: Path, options: Mapping[str, Any]) -> FinetuneConfig:
    """The configuration a resumed run continues with: the run's ``config.toml``.

    Options given with ``--resume`` must agree with it, except the operational ones (device, workers,
    checkpoint interval, NaN tolerance), which may change, and ``--epochs``, which extends (or shortens) the
    run on purpose; such an override is recorded in the provenance as ``option (--resume)``.
    """
    if not (run_dir / "config.toml").is_file():
        raise UserError(f"Run folder {str(run_dir)!r} has no config.toml, so it cannot be resumed.")
    saved = build_config(run_dir / "config.toml")
    given = {k: v for k, v in options.items() if v is not None}
    overrides: dict[str, Any] = {}
    for key, value in given.items():
        name = key.replace("-", "_")
        if name in OPERATIONAL_FIELDS:
            continue
        if name in RESUME_OVERRIDES:
            overrides[name] = getattr(build_config(**{name: value}), name)
            continue
        wanted = getattr(build_config(**{name: value}), name, None)
        have = getattr(saved, name, None)
        if name in {"eps", "options"} and isinstance(wanted, Mapping):
            conflict = any((have or {}).get(k) != v for k, v in wanted.items())
        elif name == "out":
            conflict = Path(str(value)).resolve() != run_dir.resolve()
        else:
            conflict = wanted != have
        if conflict:
            flag = option_flags(name)[0].split("/")[0]  # the spelling the user typed: --option, --attack-option
            raise BadInputError(
                f"Option {flag} conflicts with the configuration of the run being resumed "
                f"({run_dir / 'config.toml'}); --resume continues that configuration unchanged."
            )
    operational = {n: given[n] for n in given if n in OPERATIONAL_FIELDS}
    converted = build_config(**operational)
    provenance = {**saved.provenance, **{n: RESUME_OVERRIDE_SOURCE for n in overrides if overrides[n] != getattr(saved, n)}}
    return dataclasses.replace(saved, **{n: getattr(converted, n) for n in operational}, **overrides, provenance=provenance)


def edited_settings(saved: Mapping[str, Any], config: FinetuneConfig) -> list[str]:
    """The settings in which ``config`` (the run's config.toml, with any ``--resume`` override) differs from the
    configuration a checkpoint was written with, other than operational ones and deliberate overrides."""
    current = config.to_toml_dict()
    skip = OPERATIONAL_FIELDS | NOT_SETTINGS | {k for k, v in config.provenance.items() if v == RESUME_OVERRIDE_SOURCE}
    return sorted(k for k in set(saved) | set(current) if k not in skip and saved.get(k) != current.get(k))
