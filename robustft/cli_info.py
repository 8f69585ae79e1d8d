"""The informational commands: ``robustft geometry``, ``plugins``, ``recipes`` and ``list``.

Registered on the root app by robustft/cli.py. Cheap to import: the plugins (and torch) load when a command runs.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any, Optional

import typer

from robustft.cli_settings import EpsOption, JsonOption
from robustft.cli_settings import parse_eps as _eps
from robustft.errors import BadInputError

# ------------------------------------------------------------------------------------------ geometry


def geometry(
    eps: EpsOption = None,
    dim: Annotated[Optional[int], typer.Option(help="Input dimension d (e.g. 3072 for CIFAR-10).")] = None,
    dataset: Annotated[Optional[str], typer.Option(help="Take d and default radii from this data set.")] = None,
    json_output: JsonOption = False,
) -> None:
    """The l2 radius inside the union of the l1 and l-inf balls and inside their convex hull (E-AT Sec. 3.1)."""
    from robustft.geometry import geometry as compute
    from robustft.norms import Norm
    from robustft.report import geometry_table, print_json, stdout_console

    radii = _eps(eps) or {}
    if dataset is not None:
        from robustft.models import resolve_dataset
        from robustft.pluginmanager import registries

        data = resolve_dataset(dataset, registries())
        radii = {**data.default_eps, **radii}
        dim = dim or data.dim
    if dim is None:
        raise BadInputError("Give the input dimension with --dim (3072 for CIFAR-10) or a data set with --dataset.")
    for norm in (Norm.L1, Norm.LINF):
        if norm not in radii:
            raise BadInputError(f"Give the {norm.label} radius with --eps {norm}=RADIUS.")
    geo = compute(radii[Norm.L1], radii[Norm.LINF], dim, radii.get(Norm.L2))
    if json_output:
        print_json(geo.as_dict())
    else:
        stdout_console().print(geometry_table(geo))


# ------------------------------------------------------------------------------------------- plugins


def plugins(json_output: JsonOption = False) -> None:
    """The installed plugins: name, distribution, version, hooks and status (ok, disabled, failed)."""
    from robustft.pluginmanager import STRICT_ENV, PluginError, inspection_host, strict_from_env
    from robustft.report import listing_table, print_json, stdout_console

    host = inspection_host()  # reports every fault, even under ROBUSTFT_STRICT_PLUGINS
    rows = [p.as_dict() for p in host.plugins.values()]
    if json_output:
        print_json({"plugins": rows, "problems": host.problems})
    else:

        def status(r: dict[str, Any]) -> str:
            detail = r["error"] or "; ".join(r["refused"])
            return f"{r['status']}: {detail}" if detail else r["status"]

        table = listing_table(
            "Installed robustft plugins",
            ["plugin", "distribution", "version", "hooks", "status"],
            [[r["name"], r["distribution"] or "-", r["version"] or "-", ", ".join(r["hooks"]) or "-", status(r)] for r in rows],
        )
        stdout_console().print(table)
    if host.problems and strict_from_env():
        raise PluginError(f"{STRICT_ENV} is set and {len(host.problems)} plugin problem(s) were found; the first: {host.problems[0]}")


# ------------------------------------------------------------------------------------------- recipes


def recipes(json_output: JsonOption = False) -> None:
    """Each data set's fine-tuning recipe: the settings it brings in place of robustft's defaults."""
    from robustft import per_norm
    from robustft.config import FinetuneConfig
    from robustft.pluginmanager import registries
    from robustft.report import listing_table, print_json, stdout_console

    defaults = FinetuneConfig().to_toml_dict()
    rows = [
        {
            "dataset": entry.name,
            "setting": key,
            "value": per_norm.to_toml(value) if isinstance(value, dict) and key.startswith("attack") else value,
            "default": defaults.get(key),
            "source": entry.obj.recipe_source,
        }
        for entry in registries().datasets
        for key, value in entry.obj.recipe.items()
    ]
    if json_output:
        print_json({"recipes": rows})
        return
    cells = [[r["dataset"], r["setting"], _shown(r["value"]), _shown(r["default"]), r["source"]] for r in rows]
    stdout_console().print(
        listing_table(
            "Fine-tuning recipes of the installed data sets", ["data set", "setting", "recipe", "robustft default", "source"], cells
        )
    )


def _shown(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_shown(v)}" if isinstance(v, dict) else f"{k}={v}" for k, v in value.items())
    return "-" if value is None else str(value)


# ---------------------------------------------------------------------------------------------- list


class Kind(str, Enum):
    schemes = "schemes"
    attacks = "attacks"
    suites = "suites"
    zoos = "zoos"
    datasets = "datasets"
    loggers = "loggers"
    models = "models"


def list_command(
    kind: Annotated[Kind, typer.Argument(help="What to list.", case_sensitive=False)],
    zoo: Annotated[Optional[str], typer.Option(help="Models: only this zoo's.")] = None,
    dataset: Annotated[Optional[str], typer.Option(help="Models: only those for this data set.")] = None,
    threat: Annotated[
        Optional[str], typer.Option(help="Models: only those robust in this threat model (Linf, L2, L1, or inf, 2, 1).")
    ] = None,
    json_output: JsonOption = False,
    options: Annotated[bool, typer.Option("--options", help="Schemes: each scheme's options (type, default, range, help).")] = False,
) -> None:
    """List installed schemes, attacks, suites, zoos, data sets, loggers or models."""
    from robustft.pluginmanager import registries
    from robustft.report import listing_table, print_json, stdout_console

    reg = registries()
    if options:
        from robustft.option_listing import print_scheme_options

        return print_scheme_options(reg, kind.value, json_output)
    if kind is Kind.models:
        from robustft.norms import Norm

        wanted = Norm.parse(threat) if threat else None
        zoos = [reg.zoos.entry(zoo)] if zoo else list(reg.zoos)
        rows = [
            {
                "name": m.name,
                "zoo": e.name,
                "dataset": m.dataset,
                "threat": m.threat.value if m.threat else None,
                "aliases": list(m.aliases),
                "description": m.description,
            }
            for e in zoos
            for m in e.obj.models()
            if (dataset is None or m.dataset.lower() == dataset.lower()) and (wanted is None or m.threat is wanted)
        ]
        columns = ["name", "zoo", "dataset", "threat", "aliases", "description"]
    else:
        rows = [
            {"name": e.name, "plugin": e.plugin, "aliases": list(e.aliases), "description": e.description} for e in reg.by_kind(kind.value)
        ]
        columns = ["name", "plugin", "aliases", "description"]
    if json_output:
        print_json({kind.value: rows})
        return
    cells = [[", ".join(r[c]) if isinstance(r[c], list) else str(r[c] if r[c] is not None else "-") for c in columns] for r in rows]
    stdout_console().print(listing_table(f"Installed {kind.value}", columns, cells))
