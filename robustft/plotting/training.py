"""A run's training curves from its ``metrics.jsonl``: loss, robust training error per norm, and, for schemes that
record them (E-AT, Croce & Hein, Eq. 5), the norms' sampling probabilities."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from robustft.errors import BadInputError
from robustft.norms import DISPLAY_ORDER, Norm
from robustft.plotting.style import NORM_COLOURS, PANEL_HEIGHT, Plot, new_figure, styled

RERR_PREFIX = "rerr_"
#: Series with at most this many points get markers: a line through a few points hides where they are.
MARKERS_UP_TO = 24


def _label(key: str) -> str:
    return "union" if key == "union" else Norm.parse(key).label


def _series_key(text: str) -> str | None:
    """``inf``, ``2``, ``1`` or ``union`` for a logged norm; None for anything else (``rerr_batch``, a plugin's own)."""
    if text == "union":
        return text
    try:
        return Norm.parse(text).value
    except BadInputError:
        return None


def _marker(series: Mapping[str, list[float]]) -> str:
    return "o" if len(series["x"]) <= MARKERS_UP_TO else ""


def _ordered(keys: set[str]) -> list[str]:
    return [n.value for n in DISPLAY_ORDER if n.value in keys] + (["union"] if "union" in keys else [])


def training_series(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The series :func:`training_curves` draws, from metrics records (one dict per line of ``metrics.jsonl``).

    Batches sit at ``epoch - 1 + batch / batches``, ``batches`` being the epoch's largest batch number, so that
    epoch ``e`` ends at ``x = e``. A skipped batch (a non-finite loss, recorded as ``loss: null``) has no loss
    point. A batch recorded twice (by a resumed run) counts once, the later record winning. Robust training
    errors are the schemes' ``rerr_<norm>`` logs (running averages over the epoch); probabilities are the
    epoch records' ``probabilities``, drawn at the epoch's end.
    """
    batches: dict[tuple[int, int], Mapping[str, Any]] = {}
    epochs: dict[int, Mapping[str, Any]] = {}
    for record in records:
        try:
            if record.get("kind") == "batch":
                batches[(int(record["epoch"]), int(record["batch"]))] = record
            elif record.get("kind") == "epoch":
                epochs[int(record["epoch"])] = record
        except (KeyError, TypeError, ValueError):
            continue  # a record without its position cannot be placed
    per_epoch: dict[int, int] = {}
    for epoch, batch in batches:
        per_epoch[epoch] = max(per_epoch.get(epoch, 0), batch)
    loss = {"x": [], "y": []}
    rerr: dict[str, dict[str, list[float]]] = {}
    for (epoch, batch), record in sorted(batches.items()):
        x = epoch - 1 + batch / per_epoch[epoch]
        if isinstance(record.get("loss"), (int, float)):
            loss["x"].append(x)
            loss["y"].append(float(record["loss"]))
        for key, value in record.items():
            name = _series_key(key[len(RERR_PREFIX) :]) if key.startswith(RERR_PREFIX) else None
            if name is not None and isinstance(value, (int, float)):
                series = rerr.setdefault(name, {"x": [], "y": []})
                series["x"].append(x)
                series["y"].append(100 * float(value))
    probabilities: dict[str, dict[str, list[float]]] = {}
    for epoch, record in sorted(epochs.items()):
        for key, value in (record.get("probabilities") or {}).items():
            name = _series_key(key)
            if name is not None and name != "union" and isinstance(value, (int, float)):
                series = probabilities.setdefault(name, {"x": [], "y": []})
                series["x"].append(float(epoch))
                series["y"].append(float(value))
    return {
        "loss": loss,
        "rerr": {k: rerr[k] for k in _ordered(set(rerr))},
        "probabilities": {k: probabilities[k] for k in _ordered(set(probabilities))},
        "epochs": sorted(set(per_epoch) | set(epochs)),
    }


def training_curves(records: Sequence[Mapping[str, Any]], *, title: str | None = None) -> Plot:
    """Loss, robust training error (%) per norm, and sampling probabilities (where recorded) against the epoch.

    ``records`` are the lines of a run's ``metrics.jsonl`` (read them with :func:`robustft.io.read_jsonl`, which
    skips a line cut by a crash); see :func:`training_series` for what is drawn. ``data`` holds those series.
    """
    data = training_series(records)
    if not data["loss"]["x"] and not data["rerr"]:
        raise ValueError("training_curves needs at least one batch record with a loss or a robust training error")
    panels = ["loss", *(["rerr"] if data["rerr"] else []), *(["probabilities"] if data["probabilities"] else [])]
    figure = new_figure(len(panels), height=PANEL_HEIGHT * 0.8 * len(panels) + 0.4)
    with styled():
        for ax, panel in zip(figure.axes, panels):
            if panel == "loss":
                ax.plot(data["loss"]["x"], data["loss"]["y"], color=NORM_COLOURS["union"], linewidth=0.8, marker=_marker(data["loss"]))
                ax.set_ylabel("training loss")
            elif panel == "rerr":
                for key, series in data["rerr"].items():
                    ax.plot(series["x"], series["y"], color=NORM_COLOURS[key], linewidth=1.0, label=_label(key), marker=_marker(series))
                ax.set_ylim(-3, 103)  # room for the markers at the limits
                ax.set_ylabel("robust training error (%)")
                ax.legend(loc="best", ncols=len(data["rerr"]))
            else:
                for key, series in data["probabilities"].items():
                    ax.plot(series["x"], series["y"], color=NORM_COLOURS[key], marker="o", label=_label(key))
                ax.set_ylim(-0.03, 1.03)
                ax.set_ylabel("sampling probability")
                ax.legend(loc="best", ncols=len(data["probabilities"]))
            ax.set_xlim(left=0)
            ax.xaxis.get_major_locator().set_params(integer=True)
        figure.axes[-1].set_xlabel("epoch")
        figure.suptitle(title or "Training")
    return Plot(figure, {"kind": "training", **data}, "training")
