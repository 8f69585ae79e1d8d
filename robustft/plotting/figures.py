"""``robustft plot``'s sub-commands as library calls: read the sources, draw, save PNG and SVG files.

Each function returns the :class:`~robustft.plotting.style.Plot` objects it saved (their ``files`` set). ``out``
is a folder or a file stem (see :func:`~robustft.plotting.style.output_stem`); by default the files go beside
their source: ``<run>/plots/`` for a run or a comparison folder, ``<file>-<kind>`` for a JSON file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from robustft.errors import BadInputError, UserError
from robustft.plotting.style import Plot, output_stem, require_matplotlib

PLOTS_FOLDER = "plots"


def _one_source(run: str | Path | None, json_file: str | Path | None, what: str) -> tuple[Path | None, Path | None]:
    if run is not None and json_file is not None:
        raise BadInputError(f"Give --{what} or --json, not both.")
    return (Path(run) if run is not None else None), (Path(json_file) if json_file is not None else None)


def _default(source: Path, kind: str, *, folder: bool) -> tuple[Path, str]:
    return (source / PLOTS_FOLDER, kind) if folder else (source.parent, f"{source.stem}-{kind}")


def plot_bars(run: str | Path | None = None, json_file: str | Path | None = None, out: str | Path | None = None) -> list[Plot]:
    """Grouped bars of a run's stored evaluation (without ``run`` and ``json_file``: the latest run's), or of an
    evaluation file from ``robustft eval --json``."""
    require_matplotlib()  # before any reading: a missing package is the first thing to fix
    from robustft.plotting.bars import accuracy_bars
    from robustft.plotting.sources import load_evaluation_file, load_run_evaluation
    from robustft.rundir import latest_run

    run_dir, path = _one_source(run, json_file, "run")
    if path is not None:
        data, where = load_evaluation_file(path), _default(path, "bars", folder=False)
    else:
        run_dir = run_dir or latest_run()
        data, where = load_run_evaluation(run_dir), _default(run_dir, "bars", folder=True)
    plot = accuracy_bars(data["results"])
    plot.save(output_stem(out, *where))
    return [plot]


def plot_curves(runs: Sequence[str | Path] = (), json_files: Sequence[str | Path] = (), out: str | Path | None = None) -> list[Plot]:
    """Robust accuracy against the radius for every model of the given runs' stored evaluations and evaluation
    files that has a radius sweep (``robustft eval --radii``)."""
    require_matplotlib()  # before any reading: a missing package is the first thing to fix
    from robustft.plotting.curves import radius_curves
    from robustft.plotting.sources import load_evaluation_file, load_run_evaluation

    sources: list[tuple[Path, dict[str, Any], tuple[Path, str]]] = []
    for run in runs:
        sources.append((Path(run), load_run_evaluation(run), _default(Path(run), "curves", folder=True)))
    for path in json_files:
        sources.append((Path(path), load_evaluation_file(path), _default(Path(path), "curves", folder=False)))
    if not sources:
        raise BadInputError("Give the evaluations to draw with --run RUN or --json FILE (made with robustft eval --radii).")
    models = []
    for source, data, _ in sources:
        swept = [row for row in data["results"] if row.get("curves")]
        if not swept:
            raise UserError(
                f"The evaluation of {str(source)!r} has no radius sweep: evaluate with robustft eval --radii NORM=START:STOP:COUNT."
            )
        models.extend(swept)
    names = [m.get("name") for m in models]
    if len(set(names)) < len(names):  # the same model from two sources: say which is which
        models = [
            {**m, "label": f"{m.get('name')} ({source.name})"} for source, data, _ in sources for m in data["results"] if m.get("curves")
        ]
    plot = radius_curves(models)
    plot.save(output_stem(out, *sources[0][2]))
    return [plot]


def plot_compare(
    folder: str | Path | None = None, json_file: str | Path | None = None, out: str | Path | None = None, cost: str | None = None
) -> list[Plot]:
    """Union accuracy per scheme (mean ± std over seeds) and union accuracy against the training cost per epoch, from
    a ``robustft compare`` folder or its ``--json`` output; two figures, ``<stem>-union`` and ``<stem>-cost``."""
    require_matplotlib()  # before any reading: a missing package is the first thing to fix
    from robustft.plotting.sources import load_comparison, load_comparison_file
    from robustft.plotting.tradeoff import COSTS, DEFAULT_COST, cost_tradeoff, union_bars

    cost = cost or DEFAULT_COST
    if cost not in COSTS:
        from robustft.errors import UnknownNameError

        raise UnknownNameError("cost", cost, COSTS)
    folder_path, path = _one_source(folder, json_file, "dir")
    if path is not None:
        data, where = load_comparison_file(path), _default(path, "compare", folder=False)
    elif folder_path is not None:
        data, where = load_comparison(folder_path), _default(folder_path, "compare", folder=True)
    else:
        raise BadInputError("Give the comparison to draw with --dir FOLDER (robustft compare's --out) or --json FILE.")
    stem = output_stem(out, *where)
    plots = [union_bars(data["schemes"], base=data.get("base")), cost_tradeoff(data["schemes"], base=data.get("base"), cost=cost)]
    for plot in plots:
        plot.save(stem.with_name(f"{stem.name}-{plot.name}"))
    return plots


def plot_training(run: str | Path | None = None, out: str | Path | None = None) -> list[Plot]:
    """Loss, robust training error per norm and (E-AT) sampling probabilities of a run (default: the latest)."""
    require_matplotlib()  # before any reading: a missing package is the first thing to fix
    from robustft.plotting.sources import load_training
    from robustft.plotting.training import training_curves
    from robustft.rundir import latest_run

    run_dir = Path(run) if run is not None else latest_run()
    info, records = load_training(run_dir)
    plot = training_curves(
        records, title=f"{info.get('scheme', 'fine-tuning')} on {info.get('base_model', 'the base model')} ({run_dir.name})"
    )
    plot.save(output_stem(out, *_default(run_dir, "training", folder=True)))
    return [plot]
