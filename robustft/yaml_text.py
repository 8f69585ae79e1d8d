"""Block-style YAML out of plain values, for the model card's front matter (robustft/model_card.py); no YAML
library needed to write it."""

from __future__ import annotations

import json
import math
from typing import Any


def to_yaml(value: Any, indent: int = 0) -> str:
    """Block-style YAML for dicts, lists, strings, numbers, booleans and None (what a model card needs).

    Strings are written as JSON strings, which YAML reads as double-quoted scalars, so no value can be
    mistaken for a number, a boolean or YAML syntax.
    """
    pad = " " * indent
    if isinstance(value, dict):
        if not value:
            return pad + "{}\n"
        out = []
        for key, item in value.items():
            if isinstance(item, (dict, list)) and item:
                out.append(f"{pad}{_scalar(str(key), key=True)}:\n" + to_yaml(item, indent + 2))
            else:
                out.append(f"{pad}{_scalar(str(key), key=True)}: {_scalar(item)}\n")
        return "".join(out)
    if isinstance(value, list):
        if not value:
            return pad + "[]\n"
        out = []
        for item in value:
            if isinstance(item, (dict, list)) and item:
                nested = to_yaml(item, indent + 2)
                out.append(f"{pad}- " + nested[indent + 2 :])  # the first line continues after "- "
            else:
                out.append(f"{pad}- {_scalar(item)}\n")
        return "".join(out)
    return pad + _scalar(value) + "\n"


def _scalar(value: Any, *, key: bool = False) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            return ".nan" if math.isnan(value) else (".inf" if value > 0 else "-.inf")
        return repr(value)
    if isinstance(value, dict):
        return "{}"
    if isinstance(value, list):
        return "[]"
    text = str(value)
    if key and text.replace("-", "").replace("_", "").isalnum() and not text[0].isdigit():
        return text
    return json.dumps(text, ensure_ascii=False)
