"""What an evaluation is of: a model by name, or a run folder with (or without) its base model.

``robustft eval`` (:func:`robustft.evaluation.evaluate`), ``eval --sanity`` (:func:`robustft.sanity.sanity`) and
``robustft compare``'s evaluation (robustft/compare.py) resolve "what to evaluate" here and nowhere else: the
model or the run's base model in its zoo, the data set (``--dataset``, else the model's or the run's; a run's
data and model options under the user's), the radii a run recorded, and per model how to load it.

Resolving reads names and files but loads no network. A :class:`Subject` loads its network on first use and
keeps it, so a command loads every model once however many evaluations it runs on it (``eval --sanity``: the
table, then the checks).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustft.contracts import DatasetPlugin, ModelInfo, ModelZoo
from robustft.errors import BadInputError, UserError
from robustft.io import checksum_path, load_torch
from robustft.models import resolve_dataset, resolve_model
from robustft.norms import Norm, normalise_eps
from robustft.registry import Registries, checked
from robustft.rundir import latest_run, read_run_info

log = logging.getLogger("robustft")


@dataclass(eq=False)
class Subject:
    """One model to evaluate: the label of its row and its network, loaded on first use and then kept."""

    label: str
    loader: Callable[[torch.device], nn.Module] = field(repr=False)
    #: the zoo's record of the model (of the base architecture, for a run's model)
    info: ModelInfo | None = None
    #: the run folder, for a run's fine-tuned model
    run_dir: Path | None = None
    _model: nn.Module | None = field(default=None, repr=False)

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def model(self, device: torch.device) -> nn.Module:
        """The network on ``device``: loaded by the first call, the same module afterwards."""
        if self._model is None:
            self._model = self.loader(device)
        return self._model.to(device)


@dataclass(eq=False)
class Subjects:
    """What one command evaluates: its models (a run's base model first), their data set, and the run's radii."""

    models: list[Subject]
    dataset: DatasetPlugin
    #: the run folder, when a run is evaluated
    run_dir: Path | None = None
    #: the radii the run trained with, which replace the data set's defaults (``--eps`` replaces both)
    run_eps: dict[Norm, Fraction] = field(default_factory=dict)
    #: the run's base model is the first of ``models``
    has_base: bool = False

    def radii(self, norms: Sequence[Norm], eps: Mapping[Any, Any] | None = None) -> dict[Norm, Fraction]:
        """The radius of every norm: the data set's defaults, under the run's, under ``eps`` (``--eps``)."""
        radii = {**self.dataset.default_eps, **self.run_eps, **normalise_eps(eps or {})}
        missing = [n for n in norms if n not in radii]
        if missing:
            raise BadInputError(
                f"Data set {self.dataset.name!r} has no default radius for norm {missing[0]}: give --eps {missing[0]}=RADIUS."
            )
        return radii


def load_from_zoo(
    zoo: ModelZoo, info: ModelInfo, registries: Registries, device: torch.device, dataset: DatasetPlugin | None, options: Mapping[str, Any]
) -> nn.Module:
    """``zoo.load``, checked to return a network (a faulty zoo is named), on ``device``."""
    model = zoo.load(info, device=device, dataset=dataset, **options)
    return checked(model, nn.Module, what=f"model zoo {zoo.name!r} load()", plugin=registries.plugin_of("zoos", zoo)).to(device)


def check_run_weights(run_dir: Path, *, strict: bool = False) -> Path:
    """The run's ``model.pt``, refused when missing. robustft writes a SHA-256 sidecar with every ``model.pt``;
    weights without one cannot be checked, which is a warning (an error with ``strict``)."""
    weights = run_dir / "model.pt"
    if not weights.is_file():
        raise UserError(f"Run {str(run_dir)!r} has no final weights (model.pt): it did not finish.")
    if not checksum_path(weights).is_file():
        message = (
            f"The weights file {str(weights)!r} has no checksum file ({checksum_path(weights).name}), so it "
            "cannot be checked; robustft writes one with every model.pt"
        )
        if strict:
            raise UserError(message + " (--strict).")
        log.warning("%s.", message)
    return weights


def _load_tuned(
    weights: Path,
    base_model: str,
    zoo: ModelZoo,
    info: ModelInfo,
    registries: Registries,
    device: torch.device,
    dataset: DatasetPlugin | None,
    options: Mapping[str, Any],
) -> nn.Module:
    state = load_torch(weights, "weights file")  # refuse a damaged or unsafe file before any compute
    model = load_from_zoo(zoo, info, registries, device, dataset, options)
    try:
        model.load_state_dict(state["model"] if isinstance(state, dict) and "model" in state else state)
    except (RuntimeError, KeyError, TypeError) as exc:
        raise UserError(f"The weights in {str(weights)!r} do not fit model {base_model!r} ({str(exc).splitlines()[0]}).") from None
    return model


def _dataset(given: str | DatasetPlugin | None, default: str, registries: Registries, options: Mapping[str, Any]) -> DatasetPlugin:
    if isinstance(given, DatasetPlugin):
        return given
    return resolve_dataset(given or default, registries, **options)


def one_model_or_run(model: str | None, run: str | Path | None) -> None:
    """Refuse both ``--model`` and ``--run``."""
    if model is not None and run is not None:
        raise BadInputError("Give --model or --run, not both.")


def _given(options: Mapping[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (options or {}).items() if v is not None}


def resolve(
    *,
    registries: Registries,
    model: str | None = None,
    run: str | Path | None = None,
    dataset: str | DatasetPlugin | None = None,
    model_options: Mapping[str, Any] | None = None,
    data_options: Mapping[str, Any] | None = None,
    strict: bool = False,
    with_base: bool = True,
    label: str | None = None,
) -> Subjects:
    """``model`` (``NAME`` or ``ZOO:NAME``) alone, or the run folder ``run`` (neither: the latest run) with its base
    model first unless ``with_base`` is False.

    ``dataset`` is a name (``--dataset``) or a configured data set, None for the model's or the run's.
    ``model_options`` (``model_dir``, ``checkpoint``, ``arch``, ``download``) go to the zoo and ``data_options``
    to the data set; for a run they override what the run recorded. ``strict`` refuses a run's weights without
    their checksum file instead of warning. ``label`` replaces the row label of the model (the run's fine-tuned
    one), which defaults to the model's name and ``+ SCHEME`` for a run.
    """
    one_model_or_run(model, run)
    m_options, d_options = _given(model_options), _given(data_options)
    if model is not None:
        zoo, info = resolve_model(model, registries)
        data = _dataset(dataset, info.dataset, registries, d_options)
        load = lambda device: load_from_zoo(zoo, info, registries, device, data, m_options)  # noqa: E731
        return Subjects(models=[Subject(label or model, load, info=info)], dataset=data)
    run_dir = Path(run) if run is not None else latest_run()
    recorded = read_run_info(run_dir)
    base_name = recorded["base_model"]
    zoo, info = resolve_model(base_name, registries)
    data = _dataset(dataset, recorded["dataset"], registries, {**recorded.get("data_options", {}), **d_options})
    options = {**recorded.get("model_options", {}), **m_options}
    weights = check_run_weights(run_dir, strict=strict)
    tuned = Subject(
        label or f"+ {recorded['scheme']}",
        info=info,
        run_dir=run_dir,
        loader=lambda device: _load_tuned(weights, base_name, zoo, info, registries, device, data, options),
    )
    models = [tuned]
    if with_base:
        models.insert(0, Subject(base_name, lambda device: load_from_zoo(zoo, info, registries, device, data, options), info=info))
    return Subjects(models=models, dataset=data, run_dir=run_dir, run_eps=normalise_eps(recorded.get("eps", {})), has_base=with_base)


def load_run_model(
    run_dir: str | Path,
    registries: Registries,
    device: torch.device,
    dataset: DatasetPlugin | None = None,
    *,
    strict: bool = False,
    **model_options: Any,
) -> tuple[nn.Module, dict[str, Any]]:
    """The fine-tuned model of a run, its base architecture with the run's final weights, and the run's
    ``run.json`` (see :func:`check_run_weights` for the checksum)."""
    run_dir = Path(run_dir)
    recorded = read_run_info(run_dir)
    weights = check_run_weights(run_dir, strict=strict)
    zoo, info = resolve_model(recorded["base_model"], registries)
    options = {**recorded.get("model_options", {}), **model_options}
    return _load_tuned(weights, recorded["base_model"], zoo, info, registries, device, dataset, options), recorded
