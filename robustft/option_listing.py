"""``robustft list schemes --options``: every installed scheme's options, from their ``Options`` declarations."""

from __future__ import annotations

from typing import Any

from robustft.errors import BadInputError


def scheme_option_rows(registries: Any) -> list[dict[str, Any]]:
    """Per installed scheme: name, plugin, aliases, description and its options (see ``SchemeOption.describe``)."""
    return [
        {
            "name": e.name,
            "plugin": e.plugin,
            "aliases": list(e.aliases),
            "description": e.description,
            "options": [spec.describe() for spec in e.obj.Options.specs()],
        }
        for e in registries.schemes
    ]


def allowed(option: dict[str, Any]) -> str:
    """The allowed values of one described option, as the table shows them."""
    if option["choices"]:
        return " | ".join(str(c) for c in option["choices"])
    if option["range"]:
        return option["range"]
    return "on | off" if option["type"] == "bool" else "-"


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"{value:g}" if isinstance(value, float) else str(value)


def print_scheme_options(registries: Any, kind: str, json_output: bool) -> None:
    """The table (or ``{"schemes": [...]}`` JSON) of every scheme's options on stdout."""
    from robustft.report import listing_table, print_json, stdout_console

    if kind != "schemes":
        raise BadInputError(f"--options lists the options of schemes, not of {kind}: run robustft list schemes --options.")
    rows = scheme_option_rows(registries)
    if json_output:
        print_json({"schemes": rows})
        return
    cells = [[row["name"], o["name"], o["type"], _shown(o["default"]), allowed(o), o["help"]] for row in rows for o in row["options"]]
    table = listing_table(
        "Options of installed schemes (--option NAME=VALUE)", ["scheme", "option", "type", "default", "allowed", "help"], cells
    )
    without = [row["name"] for row in rows if not row["options"]]
    if without:
        table.caption = "No options: " + ", ".join(without) + "."
    stdout_console().print(table)
